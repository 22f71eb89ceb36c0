"""CI's smoke run of the fuzz targets (fuzz/targets.py), without sanitizers or a fuzzing engine:
every seed and every past finding in fuzz/corpus, then random mutations of them for a fixed
time. Anything but the exceptions a hostile input may raise fails the test."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from fuzz import targets

CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus"
SECONDS = 20  # per target


def mutate(rng: np.random.Generator, data: bytes, other: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.integers(5)
    if kind == 0 and b:  # truncation
        return bytes(b[: rng.integers(len(b))])
    if kind == 1 and b:  # flipped bits
        for pos in rng.integers(0, len(b), rng.integers(1, 6)):
            b[pos] ^= 1 << rng.integers(8)
    elif kind == 2 and b:  # overwritten bytes
        start = rng.integers(len(b))
        b[start : start + 4] = rng.bytes(4)
    elif kind == 3:  # a span of another input spliced in
        start, length = rng.integers(len(b) + 1), rng.integers(1, 64)
        b[start:start] = other[: length]
    else:  # a copied span of itself
        start, length = rng.integers(len(b) + 1), rng.integers(1, 64)
        b[start:start] = b[start : start + length]
    return bytes(b)


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # mutated sizes: Pillow's own warning, as meant
def test_seeds_and_mutations_raise_only_clear_errors(target: str) -> None:
    seeds = [p.read_bytes() for p in sorted((CORPUS / target).iterdir())]
    assert len(seeds) >= 7
    run = targets.TARGETS[target]
    for seed in seeds:
        run(seed)
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        run(mutate(rng, seeds[rng.integers(len(seeds))], seeds[rng.integers(len(seeds))]))
