"""8-bit planes whose values have gaps (stretched or cut levels) are coded as palette indices,
decode exactly, and broken palettes raise."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pillow_unz import format as fmt, samples

from .conftest import with_alpha
from .test_corrupt import _rewrite_chunk
from .test_repeats import coded, decoded


def stretched(img: Image.Image) -> Image.Image:
    """img with its levels stretched 1.6x around the middle, as a levels tool does."""
    a = np.asarray(img).astype(np.float64)
    return Image.fromarray(np.clip((a - 128) * 1.6 + 128, 0, 255).round().astype(np.uint8), img.mode)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_stretched_levels_code_as_indices(sample: Image.Image, mode: str, monkeypatch) -> None:
    img = stretched(with_alpha(sample) if mode == "RGBA" else sample.convert(mode))
    data = coded(img)
    assert np.array_equal(decoded(data), np.asarray(img))
    transforms = [g.samples for g in fmt.read(io.BytesIO(data)).groups]
    assert isinstance(transforms[0], samples.Palette)
    colours = np.asarray(img)[..., None] if mode == "L" else np.asarray(img)[..., :3]
    order = [0] if mode == "L" else [1, 0, 2]  # the coding order
    assert [list(v) for v in transforms[0].values] == [list(np.unique(colours[..., c])) for c in order]
    monkeypatch.setattr(samples, "MIN_GAP_SHARE", 2.0)  # never a palette
    assert len(data) < 0.9 * len(coded(img))


def test_photos_code_as_they_are(small: Image.Image) -> None:
    assert [type(t) for t in samples.candidates(np.asarray(small).transpose(2, 0, 1))] == [samples.Unchanged]
    assert fmt.read(io.BytesIO(coded(small))).groups[0].samples == samples.Unchanged()


def test_hostile_palettes_raise(sample: Image.Image) -> None:
    img = stretched(sample.convert("L"))
    data = coded(img)
    palette = fmt.read(io.BytesIO(data)).groups[0].samples.to_bytes()
    hostile = {
        "a range, for 8-bit samples": lambda p: samples.SampleRange().to_bytes() + p[len(palette):],
        "unknown transform": lambda p: bytes([9]) + p[1:],
        "palette cut short": lambda p: p[:20],
        "palette of no values": lambda p: bytes([samples.PALETTE]) + bytes(32) + p[len(palette):],
        "indices past the palette": lambda p: bytes([samples.PALETTE, 0x80]) + bytes(31) + p[len(palette):],
        "nothing": lambda p: b"",
    }
    for name, edit in hostile.items():
        with pytest.raises(ValueError):  # UnzFormatError
            decoded(_rewrite_chunk(data, b"PIXL", edit))
