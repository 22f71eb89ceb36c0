"""An upper bound on what per-image tuning of the network can save, measured.

The network reaches the pixel model only through its parameter planes: per pixel and channel, a
scale offset and an error-feedback coefficient. This tunes those planes directly, as free values
constant over blocks of BLOCK x BLOCK pixels, on the image itself and without paying for them,
then codes the image with them. An adapter of the network (a few hundred bytes, and z fixed)
cannot shape the planes more freely than that, so it cannot save more.

    python -m pillow_unz.finetune.bound ../shared/eval --block 16 --steps 200
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from pillow_unz import UnzImagePlugin, _coder, api, codec, pixelmodel
from pillow_unz.weights import load_models


def pixel_bytes(photo: codec.PhotoModel, ordered: np.ndarray, params: torch.Tensor) -> int:
    """Coded size of the samples (planes in coding order) with the given parameter planes."""
    planes = np.ascontiguousarray(params.round().numpy().astype(np.int32))
    return len(codec.join_streams(_coder.encode_pixels(ordered, planes, photo.scale_table, 2)))


def bound(photo: codec.PhotoModel, planes: np.ndarray, block: int, steps: int, lr: float = 0.5) -> tuple[int, int]:
    """For planes (C, H, W) uint8: (pixel bytes with the model's constant parameters, pixel
    bytes with free parameter planes constant over blocks, tuned on them)."""
    c, h, w = planes.shape
    ordered = np.ascontiguousarray(planes[codec.coding_order(c)])
    x = torch.from_numpy(ordered).long()[None]
    base = torch.from_numpy(photo.constants).double().view(1, -1, 1, 1).expand(1, -1, h, w)
    classical = pixelmodel.classical_prediction(x)
    table = torch.from_numpy(photo.scale_table).double()
    delta = torch.zeros(1, base.shape[1], -(-h // block), -(-w // block), dtype=torch.float64, requires_grad=True)

    def tuned_planes() -> torch.Tensor:
        params = base + delta.repeat_interleave(block, 2).repeat_interleave(block, 3)[..., :h, :w]
        return params + (params.round() - params).detach()  # the coder takes integers

    optimizer = torch.optim.Adam([delta], lr=lr)
    for _ in range(steps):
        loss = pixelmodel.pixel_bits(x, tuned_planes(), table, classical).sum() / x.numel()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return pixel_bytes(photo, ordered, base[0]), pixel_bytes(photo, ordered, tuned_planes()[0])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pillow_unz.finetune.bound", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a folder of .png images")
    p.add_argument("--block", type=int, default=16, help="side of the blocks the free planes are constant over")
    p.add_argument("--steps", type=int, default=200, help="Adam steps per image")
    args = p.parse_args(argv)
    if args.block < 1 or args.steps < 0:
        p.error("--block must be at least 1 and --steps not negative")
    models = load_models()
    total_base = total_tuned = 0
    print(f"free parameter planes in {args.block}x{args.block} blocks, {args.steps} steps, pixel bytes only")
    for path in sorted(Path(args.folder).glob("*.png")):
        stored = UnzImagePlugin.open_storable(path)
        _, groups = api.prepare(np.asarray(stored), stored.mode, models)
        for group in groups:
            base, tuned = bound(models.for_channels(len(group)), group, args.block, args.steps)
            total_base, total_tuned = total_base + base, total_tuned + tuned
            print(f"{path.name:28} {len(group)} planes {base:9d} -> {tuned:9d} bytes {100 * (tuned / base - 1):+.2f}%", flush=True)
    print(f"{'total':28} {total_base:18d} -> {total_tuned:9d} bytes {100 * (total_tuned / total_base - 1):+.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
