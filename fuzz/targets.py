"""The fuzz targets: arbitrary bytes in; out, a clear Python exception, or pixels that the
decoder's own checks accept (and, where the target encoded them itself, the same pixels).

- `decode_file`: the bytes as a .unz file, its CRCs and model id repaired so that the damage
  reaches the decoders, through the public API and Pillow.
- `decode_parts`: the C++ coder and pixel models fed directly: band streams, parameter planes,
  scale tables, PNG filters, CDF tables and adapters, built from the bytes by `Case`.

No code here knows a sanitizer or a fuzzing engine: `fuzz/run.py` runs these under atheris
(libFuzzer) with ASan and UBSan, and `tests/test_fuzz.py` runs them plainly on the seed corpus
and random mutations of it, as CI's smoke run.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageFile

from pillow_unz import _coder, adapter, api, codec, format as fmt
from pillow_unz.weights import load_models

# Whatever a hostile input may raise; anything else (or a crash) is a finding.
EXPECTED = (ValueError, OSError, SyntaxError, EOFError, Image.DecompressionBombError)
MAX_PIXELS = 1 << 16  # inputs declaring more are refused (by Pillow's own limit), for speed


def repair(data: bytes) -> bytes:
    """data with the header's model id made this decoder's, and every CRC made valid."""
    if len(data) < fmt.HEADER_SIZE:
        return data
    out = bytearray(data)
    out[16:24] = load_models().model_id
    out[32:36] = struct.pack("<I", zlib.crc32(out[:32]))
    pos = fmt.HEADER_SIZE
    while pos + 8 <= len(out):
        (length,) = struct.unpack_from("<I", out, pos + 4)
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        out[end : end + 4] = struct.pack("<I", zlib.crc32(out[pos : pos + 4] + out[pos + 8 : end]))
        pos = end + 4
    return bytes(out)


def decode_file(data: bytes) -> None:
    limit, truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2  # Pillow refuses twice this
    ImageFile.LOAD_TRUNCATED_IMAGES = bool(len(data) % 2)
    data = repair(data)
    try:
        try:
            api.decompress_frames(data, threads=1 + len(data) % 3)
        except EXPECTED:
            pass
        try:
            with Image.open(io.BytesIO(data)) as img:
                for frame in range(min(getattr(img, "n_frames", 1), 4)):
                    img.seek(frame)
                    img.load()
        except EXPECTED:
            pass
    finally:  # the settings are Pillow's globals: the smoke test runs among other tests
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = limit, truncated


class Case:
    """Reads the parts of a call from bytes: small numbers, arrays and byte strings, zeros once
    the bytes run out (so every input is a case)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk.ljust(n, b"\0")

    def number(self, low: int, high: int) -> int:
        return low + int.from_bytes(self.take(2), "little") % (high - low + 1)

    def array(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        return np.frombuffer(self.take(int(np.prod(shape)) * dtype.itemsize), dtype).reshape(shape).copy()

    def streams(self, count: int) -> list[bytes]:
        return [self.take(self.number(0, 4096)) for _ in range(count)]


def _decode_photo(case: Case, channels: int, height: int, width: int, threads: int) -> None:
    """Into `out` as a window of rows (any top row) of an image up to twice as tall, some of its
    bands, under parameter planes or constants."""
    image_height = height + case.number(0, height)
    first, top = case.number(0, _coder.num_bands(image_height) - 1), case.number(0, image_height)
    count = case.number(0, _coder.num_bands(image_height) - first)
    planes = _coder.num_param_planes(channels)
    params = case.array((planes,) if case.number(0, 1) else (planes, height, width), np.int32)
    table = case.array((channels, 16, 4, 6), np.int32)
    out = np.zeros((channels, height, width), np.uint8)
    _coder.decode_pixels(case.streams(count), params, table, threads, out, first, 8, 0, image_height, top)


def _decode_screen(case: Case, channels: int, height: int, width: int, threads: int) -> None:
    out = np.zeros((min(channels, 3), height, width), np.uint8)
    streams = [s if s else None for s in case.streams(_coder.num_bands(height))]
    _coder.decode_screen(streams, threads, out)


def _round_trip(case: Case, channels: int, height: int, width: int, threads: int) -> None:
    """Pixels and parameters from the bytes, encoded and decoded by both models and the PNG row
    filters: exactly back."""
    planes = case.array((channels, height, width), np.uint8)
    params = case.array((_coder.num_param_planes(channels), height, width), np.int8).astype(np.int32)
    table = case.array((channels, 16, 4, 6), np.uint8).astype(np.int32) % 80
    out = np.zeros_like(planes)
    _coder.decode_pixels(_coder.encode_pixels(planes, params, table, threads), params, table, threads, out)
    assert np.array_equal(out, planes), "photo model did not round-trip"
    screen = planes[: min(channels, 3)].copy()
    out = np.zeros_like(screen)
    _coder.decode_screen(_coder.encode_screen(screen, threads), threads, out)
    assert np.array_equal(out, screen), "screen model did not round-trip"
    rows = np.ascontiguousarray(planes.transpose(1, 2, 0)).reshape(height, width * channels)
    filtered = _coder.png_filter(rows, channels).tobytes()
    assert np.array_equal(_coder.png_unfilter(filtered, height, width * channels, channels), rows), "PNG filters"


def _unfilter(case: Case, channels: int, height: int, width: int, threads: int) -> None:
    _coder.png_unfilter(case.take(case.number(0, 8192)), height, width * channels, channels)


def _tables(case: Case, channels: int, height: int, width: int, threads: int) -> None:
    symbols = case.number(2, 300)
    counts = case.array((channels, symbols), np.uint8).astype(np.int64)
    counts[:, 0] += counts.sum(axis=1) == 0  # some symbol must have a frequency
    cumulative = np.concatenate([np.zeros((channels, 1), np.int64), np.cumsum(counts, axis=1)], axis=1)
    cdf = (cumulative * 65536 // cumulative[:, -1:]).astype(np.int32)  # zero-frequency symbols included
    indexes = case.array((height,), np.uint8).astype(np.int32) % channels
    payload = case.take(case.number(0, 2048))
    try:
        _coder.decode_cdf(cdf, payload, indexes)
    except ValueError:
        pass
    mean8, scale = case.array((width,), np.int32), case.array((width,), np.int32)
    _coder.decode_logistic(payload, mean8, scale, symbols)


def _adapters(case: Case, channels: int, height: int, width: int, threads: int) -> None:
    models = load_models()
    group = [models.network(3), models.network(1)][: 1 + channels % 2]
    for network, layers in zip(group, adapter.decode(case.take(case.number(0, 4096)), group)):
        if layers:
            adapter.apply(network, layers)


def _planes(case: Case, channels: int, height: int, width: int, threads: int) -> None:
    """A plane group's PIXL chunk as the container holds it, through the codec."""
    photo = load_models().for_channels(3 if channels >= 3 else 1)
    coded = codec.CodedPlanes(codec.join_streams(case.streams(_coder.num_bands(height))))
    with codec.coding_threads(threads):
        codec.decode_planes(photo, coded, height, width)


def _wide(case: Case, channels: int, height: int, width: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Bits, context shift, parameter planes and scale table of the wide photo tool."""
    bits = case.number(9, 16)
    context_shift = case.number(0, bits - 8)
    params = case.array((_coder.num_param_planes(channels), height, width), np.int8).astype(np.int32)
    table = case.array((channels, 16, 4, 6), np.uint8).astype(np.int32) % 80
    return bits, context_shift, params, table


def _decode_wide(case: Case, channels: int, height: int, width: int, threads: int) -> None:
    bits, context_shift, params, table = _wide(case, channels, height, width)
    out = np.zeros((channels, height, width), np.uint16)
    _coder.decode_pixels(case.streams(_coder.num_bands(height)), params, table, threads, out, 0, bits, context_shift)


def _round_trip_wide(case: Case, channels: int, height: int, width: int, threads: int) -> None:
    """Samples of 9 to 16 bits from the bytes, through the wide photo tool: exactly back."""
    bits, context_shift, params, table = _wide(case, channels, height, width)
    planes = case.array((channels, height, width), np.uint16) >> np.uint16(16 - bits)
    out = np.zeros_like(planes)
    streams = _coder.encode_pixels(planes, params, table, threads, 0, -1, bits, context_shift)
    _coder.decode_pixels(streams, params, table, threads, out, 0, bits, context_shift)
    assert np.array_equal(out, planes), "wide photo model did not round-trip"


def _network(case: Case, channels: int) -> list:
    """A context network from the bytes: 1 to 4 layers of any widths, weights, biases and shifts
    (the coder refuses those beyond its bounds)."""
    layers, inputs = [], _coder.CONTEXT_SIZE
    count = case.number(1, _coder.NET_MAX_LAYERS)
    for i in range(count):
        outputs = 2 if i + 1 == count else case.number(1, _coder.NET_MAX_WIDTH)
        weights = case.array((channels, outputs, inputs), np.int16) >> case.number(0, 3)
        layers.append((weights, case.array((channels, outputs), np.int32) >> case.number(0, 8), case.number(0, 31)))
        inputs = outputs
    return layers


def _learned(case: Case, channels: int, height: int, width: int, threads: int) -> None:
    """The pixel model with a context network: arbitrary streams decoded, and pixels encoded
    and decoded exactly back."""
    network, params = _network(case, channels), np.zeros(_coder.num_param_planes(channels), np.int32)
    table = case.array((channels, 16, 4, 6), np.uint8).astype(np.int32) % 80
    out = np.zeros((channels, height, width), np.uint8)
    _coder.decode_pixels(case.streams(_coder.num_bands(height)), params, table, threads, out, network=network)
    planes = case.array((channels, height, width), np.uint8)
    streams = _coder.encode_pixels(planes, params, table, threads, network=network)
    _coder.decode_pixels(streams, params, table, threads, out, network=network)
    assert np.array_equal(out, planes), "the learned photo tool did not round-trip"


# (new operations go last: the seeds name theirs by index)
_OPS = [_decode_photo, _decode_screen, _round_trip, _unfilter, _tables, _adapters, _planes, _decode_wide, _round_trip_wide,
        _learned]


def decode_parts(data: bytes) -> None:
    case = Case(data)
    op = _OPS[case.number(0, len(_OPS) - 1)]
    channels, height, width, threads = case.number(1, 4), case.number(1, 600), case.number(1, 48), case.number(1, 3)
    if height * width > MAX_PIXELS:
        return
    try:
        op(case, channels, height, width, threads)
    except EXPECTED:
        pass


TARGETS = {"decode_file": decode_file, "decode_parts": decode_parts}
