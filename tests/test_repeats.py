"""Frames whose rows and columns repeat are coded without the repeats (RPTS), decode exactly,
and broken RPTS chunks raise."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

import pillow_unz
from pillow_unz import api, format as fmt, samples
from pillow_unz.repeats import Repeats

from .conftest import DATA, with_alpha
from .test_corrupt import _rewrite_chunk


def enlarged(img: Image.Image, rows: list[int], columns: list[int]) -> Image.Image:
    """img with its row i repeated rows[i % len(rows)] times, and its columns likewise."""
    a = np.asarray(img)
    a = np.repeat(a, np.resize(rows, a.shape[0]), axis=0)
    return Image.fromarray(np.repeat(a, np.resize(columns, a.shape[1]), axis=1))


def coded(img: Image.Image, **params) -> bytes:
    """img saved as .unz, checked to decode to the same pixels."""
    buf = io.BytesIO()
    img.save(buf, format="UNZ", **params)
    assert np.array_equal(decoded(buf.getvalue()), np.asarray(img))
    return buf.getvalue()


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_enlargements_code_their_picture(small: Image.Image, mode: str) -> None:
    """A 2x enlargement costs about what its picture does: the file codes the picture once."""
    picture = {"L": small.convert("L"), "RGBA": with_alpha(small), "I;16": Image.fromarray(
        np.asarray(small.convert("L")).astype(np.uint16) * 64 + 7)}[mode]
    big = enlarged(picture, [2], [2])
    data = coded(big)
    assert np.array_equal(decoded(data), np.asarray(big))
    unz = fmt.read(io.BytesIO(data))
    assert unz.header.version == fmt.VERSION and unz.repeats.shape == (picture.height, picture.width)
    assert len(data) == fmt.HEADER_SIZE + fmt.coded_size(fmt.UnzFrame(unz.header, unz.groups, unz.repeats)) + 12  # UEND
    assert len(data) < len(coded(picture)) + 40


def test_irregular_repeats_across_bands_and_frames(sample: Image.Image) -> None:
    """Repeats of uneven lengths in a frame of several bands, as a later frame after one
    without repeats; every frame decodes alone."""
    photo = sample.convert("RGB").crop((0, 0, 90, 70))
    tall = enlarged(sample.convert("RGB").crop((0, 0, 120, 200)), [1, 3, 1, 2], [2, 1, 1])  # 350 rows: two bands
    frames = [photo, tall]
    data = api.compress_frames([(np.asarray(f), "RGB") for f in frames])
    unz = fmt.read(io.BytesIO(data))
    assert unz.repeats is None and unz.frames[0].repeats.shape == (200, 120)
    for frame, back in zip(frames, api.decompress_frames(data)):
        assert np.array_equal(back.pixels, np.asarray(frame))
    with Image.open(io.BytesIO(data)) as img:
        img.seek(1)
        assert np.array_equal(np.asarray(img), np.asarray(tall))


def test_photos_and_screens_keep_the_smaller(small: Image.Image) -> None:
    """A photo repeats nothing (no RPTS); where the repeats are too few to try, neither; a
    frame of one colour repeats every row and column, but its flat bands cost less than RPTS."""
    assert Repeats.of([np.asarray(small).transpose(2, 0, 1)]) is None
    assert fmt.read(io.BytesIO(coded(small))).repeats is None
    few = enlarged(small, [1] * 11 + [2], [1])  # 4 of 52 rows repeat: under MIN_SHARE
    assert Repeats.of([np.asarray(few).transpose(2, 0, 1)]) is None
    flat = Image.new("RGB", (300, 200), (10, 20, 30))
    assert Repeats.of([np.asarray(flat).transpose(2, 0, 1)]).shape == (1, 1)
    assert fmt.read(io.BytesIO(data := coded(flat))).repeats is None
    assert np.array_equal(decoded(data), np.asarray(flat))


def version_6_file() -> bytes:
    """`small` as pillow-unz wrote it before version 7 (at effort 7, one band of the learned
    photo tool): its photo bands name no statistics key."""
    return (DATA / "version6.unz").read_bytes()


def as_version_5(data: bytes) -> bytes:
    """A version 6 file of one 8-bit group as version 5 wrote it: no sample transform."""
    assert fmt.read(io.BytesIO(data)).groups[0].samples == samples.Unchanged()
    data = bytearray(_rewrite_chunk(data, b"PIXL", lambda p: p[1:]))
    data[4] = 5
    data[32:36] = struct.pack("<I", zlib.crc32(bytes(data[:32])))
    return bytes(data)


def test_version_6_files_still_decode(small: Image.Image) -> None:
    assert fmt.read(io.BytesIO(version_6_file())).header.version == 6
    assert np.array_equal(decoded(version_6_file()), np.asarray(small))


def test_version_5_files_still_decode(small: Image.Image) -> None:
    """A version 5 file is a version 6 file without RPTS chunks and 8-bit sample transforms."""
    assert np.array_equal(decoded(as_version_5(version_6_file())), np.asarray(small))


def test_broken_repeats_raise(small: Image.Image) -> None:
    picture = small.convert("L")
    big = enlarged(picture, [2], [2])
    data = coded(big)
    rows, columns = np.tile([False, True], 48), np.tile([False, True], 64)

    def bits(r: np.ndarray, c: np.ndarray, extra: bytes = b"") -> bytes:
        return zlib.compress(np.packbits(r).tobytes() + np.packbits(c).tobytes() + extra)

    hostile = {
        "a first row that repeats": bits(~rows, columns),
        "a first column that repeats": bits(rows, ~columns),
        "too many bits": bits(rows, columns, b"\0"),
        "too few bits": bits(rows[:-8], columns),
        "not zlib": b"\1\2\3",
        "other repeats than coded": bits(rows & (np.arange(96) > 10), columns),
    }
    for name, payload in hostile.items():
        with pytest.raises(ValueError):  # UnzFormatError, ChecksumError
            decoded(_rewrite_chunk(data, b"RPTS", lambda p: payload))
    with pytest.raises(pillow_unz.UnzFormatError, match="expected a PIXL chunk"):
        decoded(as_version_5(data))  # which had no RPTS chunk


def test_truncated_inside_repeats(small: Image.Image, monkeypatch) -> None:
    """Cut inside its RPTS chunk, a file is an error, or all zeros where truncated files load."""
    big = enlarged(small.convert("L"), [2], [2])
    data = coded(big)
    cut = data[: data.index(b"RPTS") + 10]
    with pytest.raises(OSError):
        decoded(cut)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert np.array_equal(decoded(cut), np.zeros_like(np.asarray(big)))
