"""The Pillow plugin: every supported mode round-trips exactly, metadata survives, others refuse."""
from __future__ import annotations

import io
import struct
import threading

import numpy as np
import pytest
from PIL import Image, ImageCms

import pillow_unz
from pillow_unz import _coder, api, codec, format as fmt, tools

from .conftest import DATA, with_alpha


def round_trip(img: Image.Image, **options) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="UNZ", **options)
    buf.seek(0)
    back = Image.open(buf)
    back.load()
    return back


def assert_same(a: Image.Image, b: Image.Image) -> None:
    assert a.mode == b.mode and a.size == b.size
    assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_modes_round_trip(small: Image.Image, mode: str) -> None:
    base = small.convert("L" if mode.startswith("L") else "RGB")
    img = with_alpha(base) if mode.endswith("A") else base
    assert_same(img, round_trip(img))


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (9, 1), (17, 3), (33, 65)])
def test_odd_sizes(small: Image.Image, size: tuple[int, int]) -> None:
    img = small.crop((0, 0, *size))
    assert_same(img, round_trip(img))


def test_extreme_content() -> None:
    rng = np.random.default_rng(0)
    for pixels in (np.zeros((20, 30, 3), np.uint8), np.full((20, 30, 3), 255, np.uint8),
                   rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)):
        img = Image.fromarray(pixels)
        assert_same(img, round_trip(img))


def test_lossless_conversions(small: Image.Image) -> None:
    bilevel = small.convert("1")
    back = round_trip(bilevel)
    assert back.mode == "L" and np.array_equal(np.asarray(back), np.asarray(bilevel.convert("L")))
    palette = small.quantize(50)
    assert_same(palette.convert("RGB"), round_trip(palette))
    palette.info["transparency"] = 3
    assert_same(palette.convert("RGBA"), round_trip(palette))


@pytest.mark.parametrize("mode", ["F", "CMYK", "YCbCr", "RGBa", "HSV"])
def test_unsupported_modes_refused(small: Image.Image, mode: str) -> None:
    img = small.convert("RGB").convert(mode) if mode not in ("HSV", "RGBa") else Image.new(mode, (8, 8))
    with pytest.raises(OSError, match="cannot write mode"):
        img.save(io.BytesIO(), format="UNZ")


def test_save_by_extension_and_open_reads_only_header(small: Image.Image, tmp_path, monkeypatch) -> None:
    path = tmp_path / "x.unz"
    small.save(path)
    assert Image.registered_extensions()[".unz"] == "UNZ"
    assert Image.MIME["UNZ"] == "image/x-unz"

    def no_decoding(*args, **kwargs):
        raise AssertionError("Image.open must not decode pixels")

    monkeypatch.setattr(api, "decode_rows", no_decoding)
    with Image.open(path) as img:
        assert (img.format, img.mode, img.size) == ("UNZ", "RGB", small.size)
    monkeypatch.undo()
    with Image.open(path) as img:
        assert_same(small, img)


def test_verify(small: Image.Image, tmp_path) -> None:
    path = tmp_path / "x.unz"
    small.save(path)
    with Image.open(path) as img:
        img.verify()
    data = bytearray(path.read_bytes())
    data[-30] ^= 0x10
    path.write_bytes(bytes(data))
    with Image.open(path) as img, pytest.raises(pillow_unz.UnzFormatError):
        img.verify()


XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"/></rdf:RDF></x:xmpmeta>')


def metadata_storage(data: bytes) -> dict[bytes, int]:
    """How each metadata chunk of a file holds its block (the payload's first byte)."""
    storage, pos = {}, fmt.HEADER_SIZE
    while (tag := data[pos : pos + 4]) in fmt.METADATA_TAGS:
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        storage[tag] = data[pos + 8]
        pos += 12 + length
    return storage


def test_icc_profile_exif_and_xmp_round_trip(small: Image.Image) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "pillow-unz test camera"
    img = small.copy()
    img.info["icc_profile"] = icc
    back = round_trip(img, exif=exif.tobytes(), xmp=XMP)
    assert back.info["icc_profile"] == icc and back.info["xmp"] == XMP
    assert back.getexif()[0x010F] == "pillow-unz test camera"
    assert_same(img, back)
    # metadata already in img.info is kept without being asked for
    again = round_trip(back)
    assert again.info["exif"] == back.info["exif"] and again.info["icc_profile"] == icc and again.info["xmp"] == XMP
    assert_same(img, again)
    # XMP given as text is stored as UTF-8
    as_text = round_trip(small, xmp=XMP.decode())
    assert as_text.info["xmp"] == XMP
    assert_same(small, as_text)


def test_metadata_is_deflated_where_that_is_smaller(small: Image.Image) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    noise = b"Exif\0\0" + np.random.default_rng(0).bytes(500)
    buf = io.BytesIO()
    small.save(buf, format="UNZ", icc_profile=icc, exif=noise, xmp=XMP)
    assert metadata_storage(buf.getvalue()) == {b"ICCP": fmt.DEFLATED, b"EXIF": fmt.STORED, b"XMP ": fmt.DEFLATED}
    buf.seek(0)
    back = Image.open(buf)
    assert (back.info["icc_profile"], back.info["exif"], back.info["xmp"]) == (icc, noise, XMP)
    assert_same(small, back)


def test_version_7_files_still_decode_with_their_metadata(small: Image.Image) -> None:
    """tests/data/version7.unz: `small` with an ICC profile and Exif, as version 7 stored them
    (verbatim, no storage byte)."""
    data = (DATA / "version7.unz").read_bytes()
    assert fmt.read_header(io.BytesIO(data))[0].version == 7
    with Image.open(io.BytesIO(data)) as old:
        assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(old.info["icc_profile"]))).startswith("sRGB")
        assert old.getexif()[0x010F] == "pillow-unz test camera"
        assert_same(small, old)


@pytest.mark.parametrize("version", [8, 9, 11, 12])
def test_earlier_codings_of_samples_still_decode(small: Image.Image, version: int) -> None:
    """tests/data/versionN.unz: `small` as version N coded it (effort 7): version 8 before the
    coder refined the shape of photo samples' distributions, version 9 before the context
    network's online readout, version 11 before photo bands named their fit memory, version 12
    before photo bands coded each row channel by channel (pixel by pixel instead). Their bands
    decode with the coding and the headers of their version, which the newest format's are not
    (version 10: the next test)."""
    assert _coder.LATEST_REVISION == fmt.VERSION > version
    data = (DATA / f"version{version}.unz").read_bytes()
    assert fmt.read_header(io.BytesIO(data))[0].version == version
    with Image.open(io.BytesIO(data)) as old:
        assert_same(small, old)


def test_version_10_files_decode_in_their_bands(sample: Image.Image) -> None:
    """tests/data/version10.unz: a 24x520 gray strip as version 10 coded it (effort 7): in bands
    of 256 rows at most (three, where version 11 makes two) and without the maps' mixer."""
    gray = np.asarray(sample.convert("L"))
    strip = Image.fromarray(np.ascontiguousarray(np.vstack([gray, gray[::-1], gray])[:520, 100:124]), "L")
    data = (DATA / "version10.unz").read_bytes()
    unz = fmt.read(io.BytesIO(data))
    assert unz.header.version == 10 and unz.groups[0].band_height == _coder.BAND_ROWS
    assert len(codec.split_streams(unz.groups[0].pixels, _coder.num_bands(520))) == 3 > _coder.num_bands(520, tools.band_height(520))
    with Image.open(io.BytesIO(data)) as old:
        assert_same(strip, old)


def test_threads_save_and_open_at_once(small: Image.Image) -> None:
    images = [small.rotate(90 * i, expand=True) for i in range(4)]
    results: dict[int, bool] = {}

    def work(i: int) -> None:
        for _ in range(2):
            results[i] = np.array_equal(np.asarray(round_trip(images[i])), np.asarray(images[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: True for i in range(4)}


def test_numpy_api(small: Image.Image) -> None:
    pixels = np.asarray(small)
    decoded = pillow_unz.decompress(pillow_unz.compress(pixels, "RGB"))
    assert decoded.mode == "RGB" and np.array_equal(decoded.pixels, pixels)
    for dtype in (np.float32, np.int16, np.uint32):
        with pytest.raises(ValueError, match="uint8 or uint16"):
            pillow_unz.compress(pixels.astype(dtype), "RGB")
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        pillow_unz.compress(pixels[..., :2].astype(np.uint16), "RGB")
    with pytest.raises(ValueError, match="mode"):
        pillow_unz.compress(pixels, "CMYK")
