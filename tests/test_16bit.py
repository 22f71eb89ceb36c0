"""16-bit samples: Pillow's I;16 (and I;16B, I), numpy arrays of every mode, imageio, frames
mixing 8 and 16 bits, the sample transforms (range, palette), other processes and thread counts,
and hostile or truncated 16-bit files."""
from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageSequence, PngImagePlugin

import pillow_unz
from pillow_unz import _coder, codec, format as fmt, samples

from .conftest import with_alpha
from .test_corrupt import _rewrite_chunk, open_and_load


def widen(img: Image.Image, bits: int, seed: int = 0) -> np.ndarray:
    """An 8-bit image as `bits`-bit samples: its values shifted up, the new low bits a smooth
    function of position plus noise, so that they carry information as a finer sensor's would."""
    a = np.asarray(img).astype(np.uint32)
    extra = bits - 8
    h, w = a.shape[:2]
    ramp = (np.add.outer(np.arange(h), np.arange(w)) * 3) % (1 << extra)
    noise = np.random.default_rng(seed).integers(0, 1 << max(extra - 2, 0), a.shape)
    low = ((ramp if a.ndim == 2 else ramp[..., None]) + noise) % (1 << extra)
    return ((a << extra) | low).astype(np.uint16)


@pytest.fixture(scope="module")
def gray12(sample: Image.Image) -> np.ndarray:
    """12-bit content, 300 rows: two bands."""
    return widen(sample.convert("L").crop((0, 0, 150, 300)), 12)


def round_trip(pixels: np.ndarray, mode: str) -> bytes:
    data = pillow_unz.compress(pixels, mode)
    decoded = pillow_unz.decompress(data)
    assert decoded.pixels.dtype == np.uint16 and np.array_equal(decoded.pixels, pixels)
    return data


def test_pillow_i16_round_trips(gray12: np.ndarray, tmp_path) -> None:
    for source in (Image.fromarray(gray12), Image.fromarray(gray12.astype(">u2")), Image.fromarray(gray12.astype(np.int32))):
        path = tmp_path / "a.unz"
        source.save(path)
        with Image.open(path) as img:
            assert img.mode == "I;16" and img.size == (150, 300)
            assert np.array_equal(np.asarray(img), gray12)
    with pytest.raises(OSError, match="0..65535"):
        Image.fromarray(np.array([[-1, 5]], np.int32)).save(io.BytesIO(), format="UNZ")
    with pytest.raises(OSError, match="0..65535"):
        Image.fromarray(np.array([[1 << 16, 5]], np.int32)).save(io.BytesIO(), format="UNZ")


def test_numpy_modes_round_trip(sample: Image.Image) -> None:
    photo = sample.crop((0, 0, 96, 80))
    rgba = np.asarray(with_alpha(photo)).astype(np.uint16)
    cases = {
        "RGB": widen(photo, 16),
        "RGBA": np.dstack([widen(photo, 14), rgba[..., 3] * 257]),
        "LA": np.dstack([widen(photo.convert("L"), 10), widen(photo.convert("L"), 16, seed=1)]),
        "L": widen(photo.convert("L"), 16),
    }
    for mode, pixels in cases.items():
        data = round_trip(pixels, mode)
        assert pillow_unz.decompress(data).mode == {"L": "I;16"}.get(mode, f"{mode};16")
        assert fmt.read(io.BytesIO(data)).header.version == fmt.VERSION
    round_trip(cases["RGB"].astype(">u2"), "RGB;16")  # big-endian arrays, and the stored mode's own name


def test_16_bit_colour_opens_in_pillow_as_its_top_bytes(sample: Image.Image) -> None:
    pixels = widen(sample.crop((0, 0, 64, 48)), 16)
    with Image.open(io.BytesIO(round_trip(pixels, "RGB"))) as img:
        assert img.mode == "RGB"
        assert np.array_equal(np.asarray(img), (pixels >> 8).astype(np.uint8))


def test_unused_bits_cost_nothing(gray12: np.ndarray) -> None:
    """12-bit content costs the same whether it sits in the low or the high bits of its 16, or
    around an offset; 8-bit content in 16 bits costs what it does in 8."""
    size = len(round_trip(gray12, "L"))
    assert len(round_trip(gray12 << 4, "L")) == size
    assert len(round_trip(gray12 + 20000, "L")) == size
    eight = (gray12 >> 4).astype(np.uint8)
    eight[0, 0] = 0  # (the range starts at the smallest sample)
    eight_bytes = pillow_unz.compress(eight, "L")
    assert np.array_equal(pillow_unz.decompress(eight_bytes).pixels, eight)
    transforms = len(samples.SampleRange().to_bytes()) - len(samples.Unchanged().to_bytes())  # the only difference
    assert len(round_trip(eight.astype(np.uint16) << 8, "L")) == len(eight_bytes) + transforms


def test_sample_transforms(gray12: np.ndarray) -> None:
    r = samples.measure_range(np.stack([gray12 << 2]))
    assert (r.offset, r.shift, r.bits) == (int(gray12.min()) << 2, 2, 12)
    few = np.array([[0, 1000, 65535], [1000, 7, 0]], np.uint16)
    transforms = samples.candidates(few[None])
    assert isinstance(transforms[1], samples.Palette) and list(transforms[1].values[0]) == [0, 7, 1000, 65535]
    for t in transforms:
        assert np.array_equal(t.inverse(t.forward(few[None])), few[None])
        assert samples.from_bytes(t.to_bytes() + b"rest", 1, wide=True)[1] == len(t.to_bytes())
    widened = (np.asarray(gray12 >> 4, np.uint16) * 257)[None]  # 8-bit content widened as image tools do
    assert samples.candidates(widened)[0].bits == 16
    round_trip(widened[0], "I;16")


def test_wide_photo_tool_alone(gray12: np.ndarray) -> None:
    """The wide pixel model, without the other tools: exact at every bit depth and context shift."""
    table = pillow_unz.api.load_models().for_channels(1).scale_table
    for bits in (9, 12, 16):
        planes = np.ascontiguousarray((gray12.astype(np.uint32) << 4 >> (16 - bits)).astype(np.uint16)[None])
        params = np.zeros((2, *planes.shape[1:]), np.int32)
        for shift in (0, bits - 8):
            streams = _coder.encode_pixels(planes, params, table, 2, 0, -1, bits, shift)
            out = np.zeros_like(planes)
            _coder.decode_pixels(streams, params, table, 2, out, 0, bits, shift)
            assert np.array_equal(out, planes)
    with pytest.raises(ValueError, match="bits"):
        _coder.encode_pixels(planes, params, table, 1, 0, -1, 12, 0)  # 16-bit samples declared 12-bit


def test_frames_mix_8_and_16_bits(sample: Image.Image, gray12: np.ndarray) -> None:
    import imageio.v3 as iio

    frames = [Image.fromarray(gray12), sample.crop((0, 0, 50, 40)), Image.fromarray(gray12[::-1])]
    buf = io.BytesIO()
    frames[0].save(buf, format="UNZ", save_all=True, append_images=frames[1:])
    with Image.open(io.BytesIO(buf.getvalue())) as img:
        assert img.n_frames == 3
        for frame, expected in zip(ImageSequence.Iterator(img), frames):
            assert frame.mode == expected.mode and np.array_equal(np.asarray(frame), np.asarray(expected))
    stack = np.stack([gray12, gray12[::-1], gray12 * 3])
    data = iio.imwrite("<bytes>", stack, extension=".unz")
    assert np.array_equal(iio.imread(data, extension=".unz"), stack)
    assert np.array_equal(iio.imread(data, extension=".unz", index=2), stack[2])
    props = iio.improps(data, extension=".unz")  # what imread gives
    assert (props.shape, props.dtype, props.n_images, props.is_batch) == (stack.shape, np.uint16, 3, True)
    assert iio.improps(data, extension=".unz", index=1).shape == gray12.shape


def test_imageio_16_bit_colour(sample: Image.Image, tmp_path) -> None:
    import imageio.v3 as iio

    rgba = np.dstack([widen(sample.crop((0, 0, 64, 48)), 16), np.full((48, 64), 65535, np.uint16)])
    for pixels in (rgba, rgba[..., :3], rgba[..., :2]):
        iio.imwrite(tmp_path / "c.unz", pixels)
        back = iio.imread(tmp_path / "c.unz")
        assert back.dtype == np.uint16 and np.array_equal(back, pixels)


DECODE = """
import sys, hashlib
threads, path = int(sys.argv[1]), sys.argv[2]
import pillow_unz
decoded = pillow_unz.decompress(open(path, "rb").read(), threads=threads)
again = pillow_unz.compress(decoded.pixels, decoded.mode, threads=threads)
print(hashlib.sha256(decoded.pixels.tobytes()).hexdigest(), hashlib.sha256(again).hexdigest())
"""


@pytest.mark.parametrize("threads", [1, 3])
def test_decode_in_other_process(sample: Image.Image, gray12: np.ndarray, tmp_path, threads: int) -> None:
    rgb = widen(sample.crop((0, 0, 120, 300)), 14)  # two bands, the wide photo tool on each
    for name, pixels, mode in (("gray", gray12, "L"), ("rgb", rgb, "RGB")):
        data = pillow_unz.compress(pixels, mode)
        path = tmp_path / f"{name}.unz"
        path.write_bytes(data)
        result = subprocess.run([sys.executable, "-c", DECODE, str(threads), str(path)], capture_output=True, text=True, check=True)
        assert result.stdout.split() == [hashlib.sha256(pixels.tobytes()).hexdigest(), hashlib.sha256(data).hexdigest()]


def test_hostile_sample_transforms_raise(gray12: np.ndarray) -> None:
    data = round_trip(gray12, "L")
    assert fmt.read(io.BytesIO(data)).groups[0].samples.bits == 12
    prefix = len(samples.SampleRange().to_bytes())
    hostile = {
        "unknown transform": bytes([7]),
        "bits over 16": bytes([0, 0, 0, 0, 17, 0]),
        "bits under 8": bytes([0, 0, 0, 0, 7, 0]),
        "context shift over bits - 8": bytes([0, 0, 0, 0, 12, 5]),
        "shift of 16": bytes([0, 0, 0, 16, 12, 0]),
        "range past 65535": bytes([0, 0xF0, 0xFF, 0, 12, 0]),
        "empty palette": bytes([1, 0, 0]),
        "palette not increasing": bytes([1, 2, 0, 5, 0, 5, 0]),
        "palette of 257": bytes([1, 1, 1]) + np.arange(257, dtype="<u2").tobytes(),
        "palette cut short": bytes([1, 4, 0, 1, 0]),
        "palette too small for the indices": bytes([1, 1, 0, 9, 0]),
        "wide palette of 8 bits": wide_palette(8, 0, {0: range(300)}),
        "wide palette, context shift over bits - 8": wide_palette(10, 3, {0: range(300)}),
        "wide palette, its values past the chunk": bytes([3, 12, 0]) + struct.pack("<I", 1 << 31),
        "wide palette inflates short": bytes([3, 12, 0]) + struct.pack("<I", 11) + zlib.compress(bytes(100)),
        "wide palette of no values": wide_palette(12, 0, {}),
        "wide palette over what its indices reach": wide_palette(9, 0, {0: range(0, 2000, 3)}),
        "wide palette too small for the indices": wide_palette(12, 0, {0: range(0, 600, 2)}),
        "nothing": b"",
    }
    for name, transform in hostile.items():
        broken = _rewrite_chunk(data, b"PIXL", lambda p: transform + p[prefix:])
        t = time.perf_counter()
        with pytest.raises(ValueError):
            open_and_load(broken)
        assert time.perf_counter() - t < 1.0, name


def wide_palette(bits: int, context_shift: int, values: dict[int, range]) -> bytes:
    """The bytes of a wide palette (transform 3) of one plane with `values[0]` (none if absent)."""
    used = np.zeros(1 << 16, bool)
    used[list(values.get(0, []))] = True
    sets = zlib.compress(np.packbits(used).tobytes())
    return bytes([3, bits, context_shift]) + struct.pack("<I", len(sets)) + sets


def test_scaled_12_bit_samples_code_as_indices(gray12: np.ndarray) -> None:
    """12-bit samples scaled to 16 bits (x 65535 / 4095) use a sixteenth of the values, with no
    shift that takes them back: they code as 12-bit indices, at the 12 bits' cost and the
    palette's."""
    scaled = (gray12.astype(np.int64) * 65535 // 4095).astype(np.uint16)
    data = round_trip(scaled, "L")
    transform = fmt.read(io.BytesIO(data)).groups[0].samples
    assert isinstance(transform, samples.WidePalette) and transform.bits == 12
    assert len(data) <= len(round_trip(gray12, "L")) + len(transform.to_bytes())
    assert samples.from_bytes(transform.to_bytes() + b"rest", 1, wide=True)[1] == len(transform.to_bytes())


def test_broken_16_bit_and_multi_frame_files_raise(sample: Image.Image, gray12: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    wide = widen(sample.crop((0, 0, 60, 40)), 13)
    single = round_trip(wide, "RGB")
    originals = [(gray12[:60], "L"), (np.asarray(sample.crop((0, 0, 30, 20))), "RGB")]
    frames = pillow_unz.api.compress_frames(originals)
    decoded = pillow_unz.api.decompress_frames(frames)
    assert len(decoded) == 2 and all(np.array_equal(d.pixels, p) for d, (p, _) in zip(decoded, originals))
    for data in (single, frames):
        for i in range(150):
            broken = bytearray(data)
            if i % 2:
                broken = broken[: rng.integers(0, len(broken))]
            else:
                broken[rng.integers(0, len(broken))] ^= 1 << rng.integers(0, 8)
            with pytest.raises((OSError, ValueError)):
                with Image.open(io.BytesIO(bytes(broken))) as img:
                    for frame in ImageSequence.Iterator(img):
                        frame.load()


def test_load_truncated_16_bit(gray12: np.ndarray) -> None:
    from PIL import ImageFile

    data = round_trip(gray12, "L")
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with Image.open(io.BytesIO(data[: len(data) - 30])) as img:  # inside the second band
            got = np.asarray(img)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    first = _coder.band_start(300, 1)
    assert got.shape == gray12.shape and np.array_equal(got[:first], gray12[:first])


def test_png16_reads_and_writes_every_colour_type(sample: Image.Image) -> None:
    from pillow_unz import png16

    rgba = np.dstack([widen(sample.crop((0, 0, 40, 30)), 16), np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50])
    for pixels in (rgba[..., 0], rgba[..., :2], rgba[..., :3], rgba):
        data = png16.encode(pixels, icc_profile=b"profile", exif=b"Exif\0\0MM\0*", xmp=b"<x:xmpmeta/>")
        back, mode, metadata = png16.decode(data)
        assert np.array_equal(back, pixels) and mode == png16.MODES[1 if pixels.ndim == 2 else pixels.shape[2]]
        assert metadata == {"icc_profile": b"profile", "exif": b"Exif\0\0MM\0*", "xmp": b"<x:xmpmeta/>"}
    with Image.open(io.BytesIO(png16.encode(rgba[..., 0], xmp=b"<x:xmpmeta/>"))) as img:  # Pillow reads what it writes
        assert img.mode == "I;16" and np.array_equal(np.asarray(img), rgba[..., 0])
        assert img.info["xmp"] == b"<x:xmpmeta/>"
    # XMP that Pillow wrote compressed (iTXt with its compression flag)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta/>", zip=True)
    buf = io.BytesIO()
    Image.fromarray(rgba[..., 0]).save(buf, format="PNG", pnginfo=info)
    back, _, metadata = png16.decode(buf.getvalue())
    assert np.array_equal(back, rgba[..., 0]) and metadata == {"xmp": b"<x:xmpmeta/>"}
    with pytest.raises(ValueError, match="16-bit"):
        buf = io.BytesIO()
        sample.save(buf, format="PNG")
        png16.decode(buf.getvalue())
    data = png16.encode(rgba)
    idat = data.index(b"IDAT")
    with pytest.raises(ValueError, match="CRC"):
        png16.decode(data[: idat + 10] + bytes([data[idat + 10] ^ 1]) + data[idat + 11 :])
    (length,) = struct.unpack(">I", data[idat - 4 : idat])
    bad = b"IDAT" + zlib.compress(b"\0" * 100)  # a valid chunk of too little image data
    with pytest.raises(ValueError, match="PNG image data"):
        png16.decode(data[: idat - 4] + struct.pack(">I", len(bad) - 4) + bad + struct.pack(">I", zlib.crc32(bad)) + data[idat + 8 + length :])


def test_command_line_keeps_16_bit_colour(sample: Image.Image, tmp_path, capsys) -> None:
    from pillow_unz import cli, png16

    pixels = widen(sample.crop((0, 0, 64, 48)), 16)
    src = tmp_path / "scan.png"
    src.write_bytes(png16.encode(pixels))
    assert cli.main(["compress", str(src)]) == 0
    assert "bits/subpixel" in capsys.readouterr().out
    assert cli.main(["decompress", str(tmp_path / "scan.unz"), "-o", str(tmp_path / "back.png")]) == 0
    assert np.array_equal(png16.read(tmp_path / "back.png")[0], pixels)
    assert cli.main(["decompress", str(tmp_path / "scan.unz"), "-o", str(tmp_path / "back.tif")]) == 1
    assert "16-bit colour" in capsys.readouterr().err
    assert cli.main(["roundtrip", str(src)]) == 0
    assert "RGB;16" in capsys.readouterr().out and cli.main(["info", str(tmp_path / "scan.unz")]) == 0
    assert "in 16 bits" in capsys.readouterr().out
