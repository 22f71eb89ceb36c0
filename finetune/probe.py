"""Teacher-forced probes of learned context models: how many bits a network that reads the
decoded pixels could save on top of the classical pixel model, before any of it is built.

A candidate adds, per sample, a mean correction and a scale offset to the pixel model of
csrc/pixel_model.h (its online scale adaptation and bias cancellation stay on top), computed from
what a decoder has at that sample:
- the sample's classical context (csrc/predictor.h: ClassicalPredictor::context): the causal
  window's samples and blend residuals, each predictor's disagreement with the blend, the spread,
  the earlier channels' residuals at the pixel), through a per-channel MLP (--hidden, --layers);
- with --rows N, also an N-channel stack of convolutions that reads only the rows above the
  sample (samples and classical residuals): a network that a decoder could run once per row.

Training uses random crops of the training photographs reduced 2x to 4x; the figure is the
teacher-forced code length on --eval (never trained on) against the same pixel model without the
candidate, with the shipped scale table. It measures; it ships nothing.

    python -m pillow_unz.finetune.probe --channels 1 --data data/train --eval ../shared/eval --rows 16
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pillow_unz import _coder, pixelmodel
from pillow_unz.finetune.context import Sample, batch_of, random_crop, training_images
from pillow_unz.finetune.train import REDUCTIONS, image_files, planes_of
from pillow_unz.weights import load_models

CONTEXT_SIZE = _coder.CONTEXT_SIZE
CONTEXT_LIMIT = 2048  # eighths: contexts beyond +-256 samples say no more than that


class RowsAbove(nn.Module):
    """Features of row y from rows above y only: the input moves down one row, then every
    convolution looks at its own row and those above."""

    def __init__(self, inputs: int, width: int, layers: int = 3, kernel: tuple[int, int] = (3, 5)) -> None:
        super().__init__()
        self.kernel = kernel
        self.convs = nn.ModuleList(nn.Conv2d(inputs if i == 0 else width, width, kernel) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel
        x = F.pad(x, (0, 0, 1, 0))[..., :-1, :]
        for conv in self.convs:
            x = conv(F.pad(x, (kw // 2, kw // 2, kh - 1, 0))).relu()
        return x


class ContextModel(nn.Module):
    def __init__(self, channels: int, hidden: int, layers: int, rows: int, norm: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("norm", norm)
        self.rows = RowsAbove(2 * channels, rows) if rows else None
        self.mlps = nn.ModuleList()
        for _ in range(channels):
            stack, width = [], CONTEXT_SIZE + rows
            for _ in range(layers - 1):
                stack += [nn.Linear(width, hidden), nn.ReLU()]
                width = hidden
            last = nn.Linear(width, 2)  # mean correction (samples), scale offset (binary log)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.mlps.append(nn.Sequential(*stack, last))

    def forward(self, s: Sample) -> torch.Tensor:
        """(B, C, 2, H, W): per sample, the mean correction and the scale offset."""
        features = None
        if self.rows is not None:
            residual = ((8 * s.x - s.classical[0]).float() / 64).clamp(-8, 8)
            features = self.rows(torch.cat([(s.x.float() - 128) / 64, residual], 1))
        out = []
        for c, mlp in enumerate(self.mlps):
            v = s.context[:, :, c].float().clamp(-CONTEXT_LIMIT, CONTEXT_LIMIT) / self.norm.view(1, -1, 1, 1)
            if features is not None:
                v = torch.cat([v, features], 1)
            out.append(mlp(v.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        return torch.stack(out, 1)


def bits_per_subpixel(model: ContextModel | None, s: Sample, table: torch.Tensor) -> torch.Tensor:
    """Teacher-forced code length of s under the pixel model, with the candidate's corrections
    (rounded as a coder would take them: eighths of a sample, scale steps)."""
    mean8, spread, feedback = s.classical
    correction = offset = torch.zeros(s.x.shape)
    if model is not None:
        out = model(s)
        correction, offset = pixelmodel._floor(8 * out[:, :, 0]), pixelmodel._floor(8 * out[:, :, 1])
    params = torch.cat([offset, torch.zeros_like(offset)], 1)
    mean8 = (mean8.float() + correction).clamp(0, pixelmodel.MAX_PRED8)
    return pixelmodel.pixel_bits(s.x, params, table, (mean8, spread, feedback)).sum() / s.x.numel()


def evaluate(model: ContextModel | None, samples: list[Sample], table: torch.Tensor) -> float:
    with torch.no_grad():
        bits = sum(bits_per_subpixel(model, s, table).item() * s.x.numel() for s in samples)
    return bits / sum(s.x.numel() for s in samples)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pillow_unz.finetune.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", type=int, choices=(1, 3), default=1)
    p.add_argument("--data", default="data/train")
    p.add_argument("--eval", required=True, help="folder of evaluation photos (never trained on)")
    p.add_argument("--skip", default="ukui-", help="leave out training files whose names start so (graphics)")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=2, help="layers of the per-sample MLP")
    p.add_argument("--rows", type=int, default=0, help="channels of the stack over the rows above (0: none)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--crops-per-image", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    files = [f for f in image_files(args.data) if not (args.skip and f.name.startswith(args.skip))]
    images = training_images(files, args.channels, REDUCTIONS)
    crops = [random_crop(images, args.crop, rng) for _ in range(len(images) * args.crops_per_image)]
    evals = [Sample(planes_of(im)) for im in map(Image.open, image_files(args.eval)) if len(im.getbands()) == args.channels]
    if not crops or not evals:
        raise SystemExit("probe: no training crops or no evaluation images of that many channels")
    table = torch.from_numpy(load_models().for_channels(args.channels).scale_table).float()
    sample_contexts = torch.cat([c.context.transpose(0, 1).flatten(1) for c in crops[:64]], 1).float()
    norm = sample_contexts.clamp(-CONTEXT_LIMIT, CONTEXT_LIMIT).abs().mean(1).clamp(min=1)
    model = ContextModel(args.channels, args.hidden, args.layers, args.rows, norm)
    baseline = evaluate(None, evals, table)
    print(json.dumps({"crops": len(crops), "parameters": sum(q.numel() for q in model.parameters()),
                      "eval_bpsp_without": round(baseline, 4)}), flush=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.time()
    for step in range(1, args.steps + 1):
        for g in optimizer.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        loss = bits_per_subpixel(model, batch_of(rng.sample(crops, args.batch)), table)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            bpsp = evaluate(model, evals, table)
            print(json.dumps({"step": step, "minutes": round((time.time() - start) / 60, 1), "eval_bpsp": round(bpsp, 4),
                              "saving": round(1 - bpsp / baseline, 4)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
