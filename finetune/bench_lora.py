"""`unz-finetune --bench FOLDER`: what per-image adapters save on a folder of photographs, for
several training budgets, and proof that every adapted file decodes exactly elsewhere.

For each budget, every image is coded with and without an adapter, both at the effort that
adapters code at (lora.DEFAULT_EFFORT, 9), and the totals compared (adapter bytes included:
they are in the files). Every file is then decoded through
Image.open in a separate process, with a different thread count, and compared with its original.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pillow_unz import UnzImagePlugin, api

from . import lora

# Run in a fresh interpreter: open every .unz given, compare with the PNG beside its name.
_DECODE_CHECK = """
import sys, numpy as np, torch
from PIL import Image
import pillow_unz
torch.set_num_threads(int(sys.argv[1]))
for unz, png in zip(sys.argv[2::2], sys.argv[3::2]):
    with Image.open(unz) as a, Image.open(png) as b:
        same = a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))
    print(unz, "identical" if same else "DIFFERENT", flush=True)
    if not same:
        sys.exit(1)
"""


def run(folder: str, budgets: list[int], rank: int, targets: tuple[str, ...]) -> int:
    images = sorted(Path(folder).glob("*.png"))
    if not images:
        raise ValueError(f"no .png images in {folder}")
    loaded = []
    for path in images:
        stored = UnzImagePlugin.open_storable(path)
        loaded.append((path, np.asarray(stored), stored.mode))
    samples = sum(p.size for _, p, _ in loaded)
    base = sum(len(api.compress(p, m, effort=lora.DEFAULT_EFFORT)) for _, p, m in loaded)
    print(f"{len(loaded)} images, {samples} subpixels; without adapters (effort {lora.DEFAULT_EFFORT}) {base} bytes, "
          f"{8 * base / samples:.4f} bits/subpixel")
    print(f"threads {torch.get_num_threads()}, rank {rank}, targets {','.join(targets)}")
    print(f"{'steps':>6} {'bytes':>9} {'bpsp':>7} {'vs none':>8} {'adapters kept':>14} {'s/image':>8}")
    out = Path(tempfile.mkdtemp(prefix="unz-lora-"))
    for steps in budgets:
        settings = lora.LoraSettings(rank=rank, steps=steps, targets=targets)
        total = kept = 0
        start = time.monotonic()
        for path, pixels, mode in loaded:
            result = lora.compress(pixels, mode, settings=settings)
            (out / f"{path.stem}-{steps}.unz").write_bytes(result.data)
            total += len(result.data)
            kept += result.kept
        seconds = (time.monotonic() - start) / len(loaded)
        print(
            f"{steps:>6} {total:>9} {8 * total / samples:>7.4f} {100 * (total / base - 1):>+7.2f}% "
            f"{kept:>7}/{len(loaded):<6} {seconds:>8.1f}",
            flush=True,
        )
    threads = 1 if torch.get_num_threads() > 1 else 2
    pairs = [str(a) for steps in budgets for path, _, _ in loaded for a in (out / f"{path.stem}-{steps}.unz", path)]
    print(f"decoding every file through Image.open in a new process with {threads} thread(s):")
    check = subprocess.run([sys.executable, "-c", _DECODE_CHECK, str(threads), *pairs], text=True, capture_output=True)
    print(check.stdout + check.stderr, end="")
    return check.returncode
