"""Registration as Pillow plugins do it: register_unz_opener's defaults, threads, imageio."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import pillow_unz
from pillow_unz import UnzImagePlugin


@pytest.fixture
def restore_defaults():
    saved = dict(UnzImagePlugin._defaults)
    yield
    UnzImagePlugin._defaults.clear()
    UnzImagePlugin._defaults.update(saved)


def test_threads_never_change_the_bytes(small: Image.Image, tmp_path, restore_defaults) -> None:
    pixels = np.asarray(small)
    one = pillow_unz.compress(pixels, "RGB", threads=1)
    assert pillow_unz.compress(pixels, "RGB", threads=3) == one
    assert np.array_equal(pillow_unz.decompress(one, threads=2).pixels, pixels)
    small.save(tmp_path / "a.unz", threads=2)
    pillow_unz.register_unz_opener(threads=1)
    small.save(tmp_path / "b.unz")
    assert (tmp_path / "a.unz").read_bytes() == (tmp_path / "b.unz").read_bytes() == one
    with Image.open(tmp_path / "b.unz") as img:
        assert np.array_equal(np.asarray(img), pixels)


def test_register_refuses_unknown_options_and_bad_threads(restore_defaults, small: Image.Image, tmp_path) -> None:
    with pytest.raises(TypeError, match="quality"):
        pillow_unz.register_unz_opener(quality=90)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            pillow_unz.register_unz_opener(threads=bad)
    with pytest.raises(ValueError, match="threads"):
        small.save(tmp_path / "a.unz", threads=0)
    assert "threads" not in UnzImagePlugin._defaults


def test_imageio_knows_the_extension() -> None:
    """After `import pillow_unz`, imageio's table lists .unz with pillow-unz's plugin (imageio's
    Pillow plugin, reading stacks) first, then Pillow's."""
    pytest.importorskip("imageio")
    code = ("import pillow_unz, imageio.config as c; e = c.known_extensions['.unz'];"
            "print(*e[0].priority, len(e))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["unz", "pillow", "1"]
