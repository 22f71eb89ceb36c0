"""Every evaluation photograph, and a version with alpha, round-trips bit-exactly through Pillow
and through imageio."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from .conftest import EVAL, with_alpha

PHOTOS = sorted(EVAL.glob("*.png")) if EVAL.is_dir() else []


@pytest.mark.skipif(not PHOTOS, reason="../shared/eval is not beside this checkout")
@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_eval_photo_round_trips(path, tmp_path) -> None:
    iio = pytest.importorskip("imageio.v3")
    with Image.open(path) as img:
        img.load()
    for version in (img, with_alpha(img)):
        buf = io.BytesIO()
        version.save(buf, format="UNZ")
        buf.seek(0)
        back = Image.open(buf)
        assert back.mode == version.mode
        assert np.array_equal(np.asarray(back), np.asarray(version))
        target = tmp_path / f"{version.mode}.unz"
        iio.imwrite(target, np.asarray(version))
        assert np.array_equal(iio.imread(target), np.asarray(version))
