"""Truncated, corrupted and hostile files raise Python exceptions: no crash, hang or huge allocation."""
from __future__ import annotations

import io
import struct
import time
import zlib
from importlib import resources

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load, save

import pillow_unz
from pillow_unz import _coder, codec, format as fmt, samples, tools, weights

from .conftest import mixed, with_alpha


@pytest.fixture(scope="module")
def coded(small: Image.Image) -> bytes:
    buf = io.BytesIO()
    with_alpha(small.crop((0, 0, 40, 30))).save(buf, format="UNZ", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00")
    return buf.getvalue()


def open_and_load(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as img:
        img.load()


def test_a_thousand_broken_files_raise_quickly(coded: bytes) -> None:
    rng = np.random.default_rng(0)
    slowest = 0.0
    for i in range(1000):
        data = bytearray(coded)
        kind = i % 3
        if kind == 0:  # truncation
            data = data[: rng.integers(0, len(data))]
        elif kind == 1:  # flipped bits
            for pos in rng.integers(0, len(data), rng.integers(1, 4)):
                data[pos] ^= 1 << rng.integers(0, 8)
        else:  # overwritten bytes
            start = rng.integers(0, len(data))
            data[start : start + 8] = rng.bytes(8)
        t = time.perf_counter()
        with pytest.raises((OSError, ValueError, SyntaxError)):
            open_and_load(bytes(data))
        slowest = max(slowest, time.perf_counter() - t)
    assert slowest < 1.0


def _rewrite_chunk(data: bytes, tag: bytes, edit) -> bytes:
    """data with chunk `tag`'s payload replaced by edit(payload) and its CRC made valid again,
    so that the corruption reaches the decoder rather than the CRC check."""
    pos = fmt.HEADER_SIZE
    while True:
        t, n = struct.unpack("<4sI", data[pos : pos + 8])
        if t == tag:
            payload = edit(data[pos + 8 : pos + 8 + n])
            chunk = struct.pack("<4sI", t, len(payload)) + payload + struct.pack("<I", zlib.crc32(t + payload))
            return data[:pos] + chunk + data[pos + 12 + n :]
        pos += 12 + n


def test_corruption_behind_valid_crcs_reaches_decoder_and_raises(coded: bytes) -> None:
    """A damaged stream raises, or (when the damage hits only the range coder's slack in its
    final bytes) still decodes to exactly the original pixels: never to other pixels."""
    original = np.asarray(Image.open(io.BytesIO(coded)))
    rng = np.random.default_rng(1)
    raised = 0
    for i in range(100):
        def flip(p: bytes) -> bytes:
            b = bytearray(p)
            b[rng.integers(0, len(b))] ^= 1 << rng.integers(0, 8)
            return bytes(b)

        def cut(p: bytes) -> bytes:
            return p[: rng.integers(0, len(p))]

        broken = _rewrite_chunk(coded, b"PIXL", flip if i % 2 else cut)
        try:
            with Image.open(io.BytesIO(broken)) as img:
                pixels = np.asarray(img)
        except ValueError:
            raised += 1
            continue
        assert np.array_equal(pixels, original)
    assert raised >= 90


def test_damaged_band_table_raises(small: Image.Image) -> None:
    """An image taller than a band has a table of stream lengths in PIXL; lengths that do not fit
    the chunk, or that move the band boundaries, raise."""
    tall = small.convert("L").resize((24, 2 * pillow_unz._coder.BAND_ROWS + 20))
    buf = io.BytesIO()
    tall.save(buf, format="UNZ")
    coded = buf.getvalue()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(coded))), np.asarray(tall))
    for first_length in (0, 1, 2**32 - 1):
        broken = _rewrite_chunk(coded, b"PIXL", lambda p: struct.pack("<I", first_length) + p[4:])
        with pytest.raises(ValueError):
            open_and_load(broken)


def test_band_height_zero_raises(coded: bytes) -> None:
    """A PIXL chunk's band height (after its sample transform) is 1 to 255 times 256 rows."""
    transform = samples.from_bytes(fmt.read(io.BytesIO(coded)).groups[0].samples.to_bytes(), 3, False)[1]
    with pytest.raises(ValueError, match="band height 0"):
        open_and_load(_rewrite_chunk(coded, b"PIXL", lambda p: p[:transform] + b"\0" + p[transform + 1 :]))
    with pytest.raises(ValueError, match="no band height"):
        open_and_load(_rewrite_chunk(coded, b"PIXL", lambda p: p[:transform]))


def test_hostile_band_streams_raise(sample: Image.Image) -> None:
    """Band streams with valid CRCs but hostile contents (unknown tools, wrong sizes, inflation
    bombs, damaged screen streams) raise, quickly; never other pixels."""
    img = mixed(sample)  # band 0 screen, band 1 photo
    buf = io.BytesIO()
    img.save(buf, format="UNZ", effort=4)  # the photo band with the small context network
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as whole:  # unbroken, it decodes exactly
        assert np.array_equal(np.asarray(whole), np.asarray(img))
    screen, photo = codec.split_streams(fmt.read(io.BytesIO(data)).groups[0].pixels, 2)
    assert (screen[0], photo[0], photo[1]) == (tools.SCREEN, tools.LEARNED, 0)
    rows = 256 * (240 * 3 + 1)  # a band's filtered bytes
    hostile = {
        "unknown tool": [bytes([9]) + screen[1:], photo],
        "empty stream": [b"", photo],
        "flat of the wrong size": [bytes([tools.FLAT, 1, 2]), photo],
        "inflation bomb": [bytes([tools.DEFLATE]) + zlib.compress(b"\0" * 64 * rows, 9), photo],
        "inflates short": [bytes([tools.DEFLATE]) + zlib.compress(b"\0" * (rows - 1)), photo],
        "unknown row filter": [bytes([tools.DEFLATE]) + zlib.compress(b"\7" * rows), photo],
        "not zlib": [bytes([tools.DEFLATE]) + b"\1\2\3", photo],
        "screen cut short": [screen[: len(screen) // 2], photo],
        "screen with a flipped byte": [screen[:40] + bytes([screen[40] ^ 0x10]) + screen[41:], photo],
        "screen stream for the photo band": [screen, screen],
        "flat, other colour": [bytes([tools.FLAT, 1, 2, 3]), photo],
        "a context network the model lacks": [screen, bytes([tools.LEARNED, 200]) + photo[2:]],
        "the other context network": [screen, bytes([tools.LEARNED, 1]) + photo[2:]],
        "the classical model": [screen, bytes([tools.PHOTO]) + photo[2:]],
        "learned band without its network": [screen, bytes([tools.LEARNED])],
        "learned band without its statistics key": [screen, photo[:2]],
        "an unknown statistics key": [screen, photo[:2] + bytes([len(tools.KEY_NAMES)]) + photo[3:]],
        "the other statistics key": [screen, photo[:2] + bytes([photo[2] ^ 1]) + photo[3:]],
        "learned band without its fit memory": [screen, photo[:3]],
        "an unknown fit memory": [screen, photo[:3] + bytes([max(tools.FIT_MEMORIES) + 1]) + photo[4:]],
        "another fit memory": [screen, photo[:3] + bytes([photo[3] ^ 1]) + photo[4:]],
    }
    for name, streams in hostile.items():
        broken = _rewrite_chunk(data, b"PIXL", lambda p: codec.join_streams(streams))
        t = time.perf_counter()
        with pytest.raises(ValueError):  # ChecksumError and UnzFormatError included
            open_and_load(broken)
        assert time.perf_counter() - t < 1.0, name
    both_screen = _rewrite_chunk(data, b"PIXL", lambda p: codec.join_streams([screen, screen]))
    with pytest.raises(ValueError):
        open_and_load(both_screen)


def test_metadata_chunks_are_capped(coded: bytes, small: Image.Image) -> None:
    """A metadata chunk over 16 MiB is refused before its payload is read, and never written."""
    huge = fmt.MAX_METADATA_CHUNK + 1
    data = coded[: fmt.HEADER_SIZE] + struct.pack("<4sI", b"EXIF", huge) + bytes(huge) + b"\0" * 4
    with pytest.raises(pillow_unz.UnzFormatError, match="over its limit"):
        open_and_load(data)
    with pytest.raises(ValueError, match="more than"):
        small.save(io.BytesIO(), format="UNZ", exif=bytes(fmt.MAX_METADATA + 1))


def test_broken_metadata_storage_is_refused(coded: bytes) -> None:
    """Metadata chunks (version 8): an unknown storage byte, a deflated block over 16 MiB
    (refused before inflating), one of another size than it says, or a corrupt stream."""
    exif = b"Exif\x00\x00" + bytes(300)

    def deflated(size: int, stream: bytes) -> bytes:
        return bytes([fmt.DEFLATED]) + struct.pack("<I", size) + stream

    hostile = [
        ("unknown storage", bytes([7]) + exif),
        ("unknown storage", b""),
        ("unknown storage", bytes([fmt.DEFLATED, 1, 0])),
        ("over its limit", deflated(fmt.MAX_METADATA + 1, zlib.compress(bytes(fmt.MAX_METADATA + 1)))),
        ("wrong size", deflated(len(exif) + 1, zlib.compress(exif))),
        ("corrupt chunk", deflated(len(exif), zlib.compress(exif)[:-6] + b"\xff" * 6)),
    ]
    for message, payload in hostile:
        t = time.perf_counter()
        with pytest.raises(pillow_unz.UnzFormatError, match=message):
            open_and_load(_rewrite_chunk(coded, b"EXIF", lambda _: payload))
        assert time.perf_counter() - t < 1.0, message


HEADER = "<4sBBBBII8s8s"  # magic, version, mode, effort, flags, width, height, model id, pixel hash


def _header(width: int, height: int, mode: int = 3, version: int = fmt.VERSION, effort: int = 7, flags: int = 0) -> bytes:
    head = struct.pack(HEADER, fmt.MAGIC, version, mode, effort, flags, width, height, b"\0" * 8, b"\0" * 8)
    return head + struct.pack("<I", zlib.crc32(head))


def test_absurd_sizes_are_refused_before_allocation() -> None:
    with pytest.raises(Image.DecompressionBombError):
        open_and_load(_header(100_000, 100_000) + b"UEND")
    with pytest.raises(ValueError, match="out of range"):
        open_and_load(_header(0, 5))
    # a plausible size whose pixel stream could not hold that many pixels
    model_id = pillow_unz.weights.load_models().model_id
    head = struct.pack(HEADER, fmt.MAGIC, fmt.VERSION, 3, 7, 0, 8000, 8000, model_id, b"\0" * 8)
    body = io.BytesIO()
    fmt.write(body, fmt.UnzFile(fmt.Header("RGB", 8000, 8000, model_id, b"\0" * 8),
                                groups=[pillow_unz.codec.CodedPlanes(b"\0" * 100, samples=samples.Unchanged())]))
    data = head + struct.pack("<I", zlib.crc32(head)) + body.getvalue()[fmt.HEADER_SIZE:]
    t = time.perf_counter()
    with pytest.raises(ValueError, match="too short"):
        open_and_load(data)
    assert time.perf_counter() - t < 1.0


def test_wrong_magic_version_and_model() -> None:
    with pytest.raises(Image.UnidentifiedImageError):
        open_and_load(b"GIF89a" + b"\0" * 50)
    with pytest.raises(pillow_unz.UnzFormatError, match="bad magic"):
        pillow_unz.decompress(b"\x89PNG" + b"\0" * 60)
    with pytest.raises(pillow_unz.UnzFormatError, match="version"):
        open_and_load(_header(4, 4, version=fmt.VERSION + 1))  # a later format
    for old in fmt.LATENT_VERSIONS:  # files of pillow-unz 0.1, whose groups carried z
        with pytest.raises(pillow_unz.UnzFormatError, match=f"version {old}: an earlier format .* pillow-unz 0.1"):
            open_and_load(_header(4, 4, version=old))
    # files of pillow-unz 0.2, before the context networks
    with pytest.raises(pillow_unz.UnzFormatError, match="version 4: an earlier format .* pillow-unz 0.2"):
        open_and_load(_header(4, 4, version=fmt.CLASSICAL_VERSION))
    with pytest.raises(pillow_unz.UnzFormatError, match="mode"):
        open_and_load(_header(4, 4, mode=len(fmt.MODES) + 1))
    for effort in (0, 10, 255):
        with pytest.raises(pillow_unz.UnzFormatError, match="effort"):
            open_and_load(_header(4, 4, effort=effort))
    with pytest.raises(pillow_unz.UnzFormatError, match="flags"):
        open_and_load(_header(4, 4, flags=1))


def test_other_model_is_refused(coded: bytes) -> None:
    head = bytearray(coded[: fmt.HEADER_SIZE - 4])
    head[16:24] = b"\xff" * 8  # model id
    data = bytes(head) + struct.pack("<I", zlib.crc32(bytes(head))) + coded[fmt.HEADER_SIZE :]
    with pytest.raises(pillow_unz.UnzFormatError, match="model"):
        open_and_load(data)


def test_earlier_releases_weights_decode_their_files(small: Image.Image, tmp_path, monkeypatch) -> None:
    """A file coded with another release's weights is refused, unless the package keeps that
    release's weights file under its model id: then it decodes with them."""
    current = weights.load_models()
    other = weights.canonical(save(load(current.data), metadata={**current.metadata, "release": "earlier"}))
    earlier = weights.parse_models(other)
    data = pillow_unz.compress(np.asarray(small), small.mode, models=earlier)
    with pytest.raises(pillow_unz.UnzFormatError, match="another release"):
        pillow_unz.decompress(data)
    # a weights folder of the package that keeps the earlier file beside the current one
    (tmp_path / weights.DEFAULT_WEIGHTS).write_bytes(current.data)
    (tmp_path / weights.earlier_weights_name(earlier.model_id)).write_bytes(other)
    monkeypatch.setattr(weights, "_shipped", lambda name: tmp_path / name)
    with Image.open(io.BytesIO(data)) as img:
        assert np.array_equal(np.asarray(img), np.asarray(small))
    (tmp_path / weights.earlier_weights_name(earlier.model_id)).write_bytes(current.data)  # another id than its name
    weights._loaded.clear()  # as a new process would find it
    with pytest.raises(pillow_unz.UnzFormatError, match="another release"):
        pillow_unz.decompress(data)


def test_kept_weights_are_their_difference_to_the_next_release(small: Image.Image, tmp_path, monkeypatch) -> None:
    """The package keeps an earlier weights file as the tensors that differ from the file that
    replaced it: rebuilt byte for byte through a chain of releases, it decodes its files; with a
    link of the chain gone, they are refused."""
    current = weights.load_models()

    def before(data: bytes, release: str) -> bytes:  # the release before `data`: one network's biases differ
        tensors = load(data)
        tensors["gray.net1.b2"] = tensors["gray.net1.b2"] + 1
        return weights.canonical(save(tensors, metadata={**weights.file_metadata(data), "release": release}))

    second = before(current.data, "second")
    first = before(second, "first")
    kept = {weights.model_id_of(first): weights.kept_difference(first, second),
            weights.model_id_of(second): weights.kept_difference(second, current.data)}
    assert all(len(k) < len(current.data) / 20 for k in kept.values())
    (tmp_path / weights.DEFAULT_WEIGHTS).write_bytes(current.data)
    for model_id, k in kept.items():
        (tmp_path / weights.earlier_weights_name(model_id)).write_bytes(k)
    monkeypatch.setattr(weights, "_shipped", lambda name: tmp_path / name)
    monkeypatch.setattr(weights, "_loaded", {})
    gray = small.convert("L")
    data = pillow_unz.compress(np.asarray(gray), "L", models=weights.parse_models(first))
    assert weights.models_for(weights.model_id_of(first)).data == first
    with Image.open(io.BytesIO(data)) as img:
        assert np.array_equal(np.asarray(img), np.asarray(gray))
    (tmp_path / weights.earlier_weights_name(weights.model_id_of(second))).unlink()
    monkeypatch.setattr(weights, "_loaded", {})  # as a new process would find it
    with pytest.raises(pillow_unz.UnzFormatError, match="another release"):
        pillow_unz.decompress(data)
    # a file that names itself as its successor: a loop, refused rather than followed
    (tmp_path / weights.earlier_weights_name(weights.model_id_of(first))).write_bytes(weights.kept_difference(first, first))
    monkeypatch.setattr(weights, "_loaded", {})
    with pytest.raises(pillow_unz.UnzFormatError, match="another release"):
        pillow_unz.decompress(data)


def test_kept_weights_files_are_named_by_their_model_ids() -> None:
    """An earlier release's weights file is kept only while it decodes that release's files: its
    bytes give its name's model id (a new pixel model revision changes every id: remove them)."""
    for entry in resources.files("pillow_unz._weights").iterdir():
        if entry.name.endswith(".safetensors") and entry.name != weights.DEFAULT_WEIGHTS:
            model_id = bytes.fromhex(entry.name.removeprefix("unz-").removesuffix(".safetensors"))
            assert weights.earlier_weights_name(model_id) == entry.name
            assert weights.models_for(model_id) is not None, f"{entry.name} is not the weights of model {model_id.hex()}"


def test_wrong_checksum_is_reported(coded: bytes) -> None:
    head = bytearray(coded[: fmt.HEADER_SIZE - 4])
    head[24] ^= 1  # pixel hash
    data = bytes(head) + struct.pack("<I", zlib.crc32(bytes(head))) + coded[fmt.HEADER_SIZE :]
    with pytest.raises(pillow_unz.ChecksumError):
        open_and_load(data)


@pytest.fixture
def load_truncated():
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = True
    yield
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_load_truncated_images_gives_the_intact_bands(sample: Image.Image, load_truncated) -> None:
    """With ImageFile.LOAD_TRUNCATED_IMAGES, a file cut anywhere loads: the bands whose streams
    are whole decode exactly, everything after them is black; whole files still check."""
    gray = np.asarray(sample.convert("L"))
    img = Image.fromarray(np.vstack([gray, gray[::-1], gray])[:700, :90], "L")
    rgba = with_alpha(img.convert("RGB"))
    band_height = tools.band_height(700)
    bands = [_coder.band_start(700, i, band_height) for i in range(_coder.num_bands(700, band_height) + 1)]
    assert len(bands) > 2
    for picture in (img, rgba):
        buf = io.BytesIO()
        picture.save(buf, format="UNZ")
        data = buf.getvalue()
        pixels = np.asarray(picture)
        seen_rows = set()
        for cut in range(fmt.HEADER_SIZE, len(data), max(1, len(data) // 60)):
            with Image.open(io.BytesIO(data[:cut])) as opened:
                opened.load()
                got = np.asarray(opened)
            assert got.shape == pixels.shape
            good = next(r for r in bands[::-1] if np.array_equal(got[:r], pixels[:r]))
            assert not got[good:].any() or picture.mode == "RGBA"  # RGBA: colour whole, alpha cut
            seen_rows.add(good)
        if picture.mode == "L":  # (RGBA's alpha streams are too small for these steps to cut inside each)
            assert set(bands[:-1]) <= seen_rows  # a cut inside every band (and maybe one past them all)
        with Image.open(io.BytesIO(data)) as whole:
            assert np.array_equal(np.asarray(whole), pixels)
    corrupt = bytearray(data)
    corrupt[-20] ^= 1  # inside the last whole chunk: still a CRC error
    with pytest.raises(OSError):
        open_and_load(bytes(corrupt))


def test_truncated_files_raise_without_the_flag(coded: bytes) -> None:
    for cut in (len(coded) - 1, len(coded) // 2):
        with pytest.raises(OSError, match="truncated"):
            open_and_load(coded[:cut])
