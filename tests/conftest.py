from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pillow_unz  # noqa: F401  (registers .unz)

DATA = Path(__file__).parent / "data"
EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval"


@pytest.fixture(scope="session")
def sample() -> Image.Image:
    img = Image.open(DATA / "sample.png")
    img.load()
    return img


@pytest.fixture(scope="session")
def small(sample: Image.Image) -> Image.Image:
    """A 64x48 RGB photo crop: big enough for every code path, fast to code."""
    return sample.crop((100, 90, 164, 138))


def with_alpha(img: Image.Image) -> Image.Image:
    """img plus a non-trivial alpha plane (a gradient with a hole), as LA or RGBA."""
    a = np.asarray(img)
    h, w = a.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    alpha = ((xx * 255) // max(w - 1, 1)).astype(np.uint8)
    alpha[(yy - h // 2) ** 2 + (xx - w // 2) ** 2 < (min(h, w) // 4) ** 2] = 0
    planes = a[..., None] if a.ndim == 2 else a
    return Image.fromarray(np.dstack([planes, alpha]), "LA" if a.ndim == 2 else "RGBA")


def mixed(sample: Image.Image, width: int = 240) -> Image.Image:
    """Two bands of rows: drawn text and shapes above (screen content), a photograph below."""
    from .drawn import text_and_shapes

    rows = 2 * 256  # num_bands(512) == 2, split at row 256
    top = np.asarray(text_and_shapes())[: rows // 2, :width]
    bottom = np.asarray(sample.convert("RGB").resize((width, rows // 2)))
    return Image.fromarray(np.vstack([top, bottom]), "RGB")
