"""The `unz-finetune` command: `unz-finetune --lora IMG` codes IMG with an adapter tuned on it.

(The shipped models are trained with `python -m pillow_unz.finetune.train`; see the README.)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pillow_unz import UnzImagePlugin


def build_parser() -> argparse.ArgumentParser:
    from .lora import DEFAULT_RANK, DEFAULT_STEPS, DEFAULT_TARGETS

    p = argparse.ArgumentParser(
        prog="unz-finetune",
        description="Code an image with a LoRA adapter of the model tuned on it; the adapter is stored in the "
        ".unz file if it saves more bytes than it costs.",
    )
    job = p.add_mutually_exclusive_group(required=True)
    job.add_argument("--lora", metavar="IMG", help="the image to tune on and code")
    job.add_argument(
        "--bench", metavar="FOLDER", help="table of total size against steps (--steps N,N,...) on FOLDER's .png images"
    )
    p.add_argument("-o", "--output", help="the .unz file to write (default: IMG with .unz)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--rank", type=int, default=DEFAULT_RANK, help=f"adapter rank (default {DEFAULT_RANK})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", help=f"training steps (default {DEFAULT_STEPS}; with --bench, a comma-separated list)")
    budget.add_argument("--seconds", type=float, help="train for this long instead of a number of steps")
    p.add_argument("--device", default="cpu", help="where to train: cpu, cuda, ... (files decode anywhere)")
    p.add_argument("-e", "--effort", type=int, default=9, choices=range(1, 10), metavar="1-9",
                   help="coding effort, as unz compress -e (default 9)")
    p.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated decoder layers to adapt (default {','.join(DEFAULT_TARGETS)}; `unz info` of an adapted file names them)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from . import lora

    args = build_parser().parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    if args.bench:
        from . import bench_lora

        budgets = [int(s) for s in (args.steps or f"50,{lora.DEFAULT_STEPS},300").split(",")]
        return bench_lora.run(args.bench, budgets, args.rank, targets)
    src = Path(args.lora)
    dst = Path(args.output) if args.output else src.with_suffix(".unz")
    try:
        if dst.exists() and not args.force:
            raise ValueError(f"{dst} exists (use -f to overwrite)")
        settings = lora.LoraSettings(
            rank=args.rank,
            steps=int(args.steps) if args.steps else None,
            seconds=args.seconds,
            device=args.device,
            targets=targets,
        )
        stored = UnzImagePlugin.open_storable(src)
        bar = tqdm(total=settings.steps, desc="tuning", unit="step", file=sys.stderr)

        def progress(step: int, bpsp: float) -> None:
            bar.update(1)
            bar.set_postfix_str(f"{bpsp:.4f} bits/subpixel")

        result = lora.compress(np.asarray(stored), stored.mode, **UnzImagePlugin.metadata_to_store(stored),
                               settings=settings, progress=progress, effort=args.effort)
        bar.close()
        dst.write_bytes(result.data)
    except (OSError, ValueError) as e:
        print(f"unz-finetune: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    samples = stored.width * stored.height * len(stored.mode)
    print(f"{src} -> {dst}: {len(result.data)} bytes, {8 * len(result.data) / samples:.3f} bits/subpixel")
    for g in result.groups:
        planes = f"{g.channels}-channel planes: {g.steps} steps in {g.seconds:.0f} s"
        saved = g.base_bytes - g.adapted_bytes
        if g.kept:
            print(f"  {planes}; adapter {g.adapter_bytes} bytes saves {saved} ({100 * (saved - g.adapter_bytes) / g.base_bytes:.2f}% net)")
        else:
            print(f"  {planes}; the adapter ({g.adapter_bytes} bytes) saved {saved}: not worth storing, coded without it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
