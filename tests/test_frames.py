"""Multi-frame files: save_all/append_images, seek/tell/n_frames, ImageSequence, imageio stacks;
each frame decodes on its own, and broken multi-frame files raise."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageSequence

from pillow_unz import format as fmt

from .conftest import with_alpha


@pytest.fixture(scope="module")
def frames(small: Image.Image) -> list[Image.Image]:
    """Three frames of different modes and sizes."""
    return [small, small.convert("L").crop((0, 0, 40, 30)), with_alpha(small.rotate(90, expand=True))]


@pytest.fixture(scope="module")
def coded(frames: list[Image.Image]) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, format="UNZ", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(tag, offset, length) of every chunk."""
    out, pos = [], fmt.HEADER_SIZE
    while pos < len(data):
        tag, n = struct.unpack("<4sI", data[pos : pos + 8])
        out.append((tag, pos, n))
        pos += 12 + n
    return out


def test_three_frames_round_trip_through_pillow(frames: list[Image.Image], coded: bytes) -> None:
    with Image.open(io.BytesIO(coded)) as img:
        assert (img.n_frames, img.is_animated, img.tell()) == (3, True, 0)
        for i, frame in enumerate(ImageSequence.Iterator(img)):
            assert img.tell() == i
            assert (frame.mode, frame.size) == (frames[i].mode, frames[i].size)
            assert np.array_equal(np.asarray(frame), np.asarray(frames[i]))
        img.seek(1)  # back again
        assert np.array_equal(np.asarray(img), np.asarray(frames[1]))
        with pytest.raises(EOFError):
            img.seek(3)
    assert fmt.read(io.BytesIO(coded)).header.version == fmt.VERSION


def test_single_frames_are_single(small: Image.Image) -> None:
    for save_all in (False, True):
        buf = io.BytesIO()
        small.save(buf, format="UNZ", save_all=save_all)
        with Image.open(buf) as img:
            assert (img.n_frames, img.is_animated) == (1, False)
            assert np.array_equal(np.asarray(img), np.asarray(small))


def test_each_frame_decodes_without_the_others(frames: list[Image.Image], coded: bytes) -> None:
    """Damage frame 1's pixels (CRC made valid): frames 0 and 2 still load, frame 1 raises."""
    pixl = [(pos, n) for tag, pos, n in _chunks(coded) if tag == b"PIXL"]
    pos, n = pixl[1]  # frame 0 has 1 group (RGB), frame 1 the next (L)
    payload = bytearray(coded[pos + 8 : pos + 8 + n])
    payload[len(payload) // 2] ^= 0xFF
    chunk = b"PIXL" + struct.pack("<I", n) + payload + struct.pack("<I", zlib.crc32(b"PIXL" + payload))
    damaged = coded[:pos] + chunk + coded[pos + 12 + n :]
    with Image.open(io.BytesIO(damaged)) as img:
        img.seek(2)
        assert np.array_equal(np.asarray(img), np.asarray(frames[2]))
        img.seek(0)
        assert np.array_equal(np.asarray(img), np.asarray(frames[0]))
        img.seek(1)
        with pytest.raises((OSError, ValueError)):
            img.load()


def test_imageio_reads_and_writes_stacks(small: Image.Image, tmp_path) -> None:
    iio = pytest.importorskip("imageio.v3")
    stack = np.stack([np.asarray(small), 255 - np.asarray(small), np.asarray(small)[::-1]])
    path = tmp_path / "stack.unz"
    iio.imwrite(path, stack)
    assert np.array_equal(iio.imread(path, index=None), stack)
    assert np.array_equal(iio.imread(path, index=1), stack[1])
    assert np.array_equal(iio.imread(path, index=...), stack)
    gray = tmp_path / "gray.unz"  # a single frame still reads as an image
    iio.imwrite(gray, stack[0, ..., 0])
    assert np.array_equal(iio.imread(gray), stack[0, ..., 0])
    # and in another process, with one thread
    code = ("import sys, numpy as np, imageio.v3 as iio, pillow_unz; pillow_unz.register_unz_opener(threads=1);"
            "print(iio.imread(sys.argv[1], index=None).sum())")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert int(out.stdout) == int(stack.sum(dtype=np.int64))


def test_broken_multi_frame_files_raise(coded: bytes) -> None:
    rng = np.random.default_rng(3)
    for cut in rng.integers(fmt.HEADER_SIZE, len(coded), 40):
        with pytest.raises((OSError, ValueError)):
            with Image.open(io.BytesIO(coded[:cut])) as img:
                for frame in ImageSequence.Iterator(img):
                    frame.load()
    fram = next(pos for tag, pos, _ in _chunks(coded) if tag == b"FRAM")
    for payload in (b"\x01" + struct.pack("<II", 0, 5) + bytes(8), b"\x09" + struct.pack("<II", 4, 5) + bytes(8),
                    b"\x01" + struct.pack("<II", 1 << 21, 5) + bytes(8), b"\x01\x02"):
        chunk = b"FRAM" + struct.pack("<I", len(payload)) + payload + struct.pack("<I", zlib.crc32(b"FRAM" + payload))
        with pytest.raises(fmt.UnzFormatError):
            Image.open(io.BytesIO(coded[:fram] + chunk + coded[fram + 12 + 17 :]))


def test_lora_refuses_several_frames(frames: list[Image.Image]) -> None:
    with pytest.raises(ValueError, match="lora"):
        frames[0].save(io.BytesIO(), format="UNZ", save_all=True, append_images=frames[1:], lora=True)
