"""Writes the seed corpus of the fuzz targets: small valid files of every mode and feature
(alpha, metadata, an adapter, several bands, frames, every band tool) for `decode_file`, and
valid calls of every operation for `decode_parts`. `python -m fuzz.corpus` rewrites
fuzz/corpus/; the files are kept in the repository."""
from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from pillow_unz import _coder, adapter as adapters, api, codec, format as fmt
from pillow_unz.weights import load_models

from . import targets

CORPUS = Path(__file__).parent / "corpus"
SAMPLE = Path(__file__).parents[1] / "tests" / "data" / "sample.png"


class Pack:
    """The inverse of targets.Case: writes the values a Case will read back."""

    def __init__(self) -> None:
        self.out = bytearray()

    def number(self, value: int, low: int) -> Pack:
        self.out += (value - low).to_bytes(2, "little")
        return self

    def raw(self, data: bytes) -> Pack:
        self.out += data
        return self

    def streams(self, streams: list[bytes]) -> Pack:
        for s in streams:
            self.number(len(s), 0).raw(s)
        return self

    def call(self, op, channels: int, height: int, width: int, threads: int = 2) -> Pack:
        self.number(targets._OPS.index(op), 0).number(channels, 1).number(height, 1).number(width, 1)
        return self.number(threads, 1)


def _learned_seed(planes: np.ndarray, table: np.ndarray) -> Pack:
    """A _learned case: a two-layer network (16 hidden units), coded streams of the planes under
    it, then the planes."""
    rng = np.random.default_rng(1)
    c, h, w = planes.shape
    pack = Pack().call(targets._learned, c, h, w).number(2, 1)
    layers = []
    for outputs, inputs in ((16, _coder.CONTEXT_SIZE), (2, 16)):
        weights = rng.integers(-2000, 2000, (c, outputs, inputs)).astype(np.int16)
        bias = rng.integers(-4000, 4000, (c, outputs)).astype(np.int32)
        layers.append((weights, bias, 14))
        if outputs != 2:
            pack.number(outputs, 1)
        pack.raw(weights.tobytes()).number(0, 0).raw(bias.tobytes()).number(0, 0).number(14, 0)
    table = (table % 80).astype(np.uint8)
    params = np.zeros(_coder.num_param_planes(c), np.int32)
    streams = _coder.encode_pixels(planes, params, table.astype(np.int32), 1, network=layers)
    return pack.raw(table.tobytes()).streams(streams).raw(planes.tobytes())


def _images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    sample = Image.open(SAMPLE).convert("RGB")
    photo = sample.crop((100, 90, 124, 110))
    drawn = Image.new("RGB", (40, 24), "white")
    from PIL import ImageDraw

    ImageDraw.Draw(drawn).text((2, 4), "unz 42", fill=(20, 60, 160))
    alpha = Image.fromarray((np.arange(24 * 20) % 255).astype(np.uint8).reshape(20, 24), "L")
    return {
        "photo-rgb": photo,
        "photo-l": photo.convert("L"),
        "photo-la": Image.merge("LA", (photo.convert("L"), alpha)),
        "photo-rgba": Image.merge("RGBA", (*photo.split(), alpha)),
        "screen-rgb": drawn,
        "flat-rgb": Image.new("RGB", (30, 20), (12, 200, 99)),
        "deflate-noise": Image.fromarray(rng.integers(0, 256, (12, 16, 3), np.uint8), "RGB"),
        "bands-l": sample.convert("L").resize((10, 2 * _coder.BAND_ROWS + 30)),
        "repeats-l": Image.fromarray(np.repeat(np.repeat(np.asarray(photo.convert("L")), 2, axis=0), [1, 2] * 12, axis=1)),
    }


def _adapted(pixels: np.ndarray) -> bytes:
    """An RGB file with a rank-1 adapter of the colour model's head (small random factors)."""
    models = load_models()
    network = models.network(3)
    rng = np.random.default_rng(1)
    shapes = adapters.factor_shapes(adapters.adaptable_layers(network)["head"], 1)
    a, b, *shift = [rng.integers(-3, 4, shape).astype(np.int32) for shape in shapes]
    adapter = [adapters.LayerAdapter("head", a, b, shift[0] if shift else None)]
    header, groups = api.prepare(pixels, "RGB", models)
    coded = [codec.encode_planes(replace(models.for_channels(3), network=adapters.apply(network, adapter)), groups[0])]
    return fmt.to_bytes(fmt.UnzFile(header, {}, adapters.encode([adapter]), coded))


def write() -> None:
    for folder in ("decode_file", "decode_parts"):
        (CORPUS / folder).mkdir(parents=True, exist_ok=True)
    seeds: dict[str, dict[str, bytes]] = {"decode_file": {}, "decode_parts": {}}
    files = seeds["decode_file"]
    for name, img in _images().items():
        files[name] = api.compress(np.asarray(img), img.mode)
    photo = _images()["photo-rgb"]
    files["metadata"] = api.compress(np.asarray(photo), "RGB", icc_profile=b"icc" * 10, exif=b"Exif\0\0MM\0*" + bytes(8),
                                     xmp=b"<x:xmpmeta/>")  # the profile deflated, the others verbatim
    frames = [(np.asarray(img), img.mode) for img in list(_images().values())[:4]]
    files["frames"] = api.compress_frames(frames)
    files["adapter"] = _adapted(np.asarray(photo))
    wide = np.asarray(photo).astype(np.uint16)
    files["wide-rgb-14bit"] = api.compress((wide << 6) | (wide[::-1] & 63), "RGB")
    files["wide-i16-offset"] = api.compress(wide[..., 1] * 3 + 20000, "I;16")
    files["wide-rgba-palette"] = api.compress(np.dstack([wide * 257, np.full(wide.shape[:2], 65535, np.uint16)]) // 4096 * 4097, "RGBA")
    files["wide-frames"] = api.compress_frames([(wide << 8, "RGB"), (np.asarray(photo.convert("L")), "L")])
    twelve = np.asarray(Image.open(SAMPLE).convert("RGB").crop((100, 90, 164, 138)), np.int64)
    twelve = twelve[..., 1] * 16 + twelve[..., 0] // 16
    files["wide-l-scaled"] = api.compress((twelve * 65535 // 4095).astype(np.uint16), "I;16")  # a wide palette

    parts = seeds["decode_parts"]
    models = load_models()
    planes = np.ascontiguousarray(np.asarray(photo).transpose(2, 0, 1)[[1, 0, 2]])
    c, h, w = planes.shape
    params = np.zeros((_coder.num_param_planes(c), h, w), np.int32)
    table = models.for_channels(3).scale_table
    photo_streams = _coder.encode_pixels(planes, params, table, 1)
    parts["photo"] = bytes(Pack().call(targets._decode_photo, c, h, w).raw(params.tobytes() + table.tobytes()).streams(photo_streams).out)
    screen = np.ascontiguousarray(np.asarray(_images()["screen-rgb"]).transpose(2, 0, 1))
    parts["screen"] = bytes(Pack().call(targets._decode_screen, 3, *screen.shape[1:]).streams(_coder.encode_screen(screen, 1)).out)
    parts["round-trip"] = bytes(Pack().call(targets._round_trip, 3, h, w).raw(planes.tobytes()).out)
    rows = np.asarray(photo).reshape(h, w * 3)
    filtered = _coder.png_filter(np.ascontiguousarray(rows), 3).tobytes()
    parts["unfilter"] = bytes(Pack().call(targets._unfilter, 3, h, w).number(len(filtered), 0).raw(filtered).out)
    parts["tables"] = bytes(Pack().call(targets._tables, 2, 8, 8).number(256, 2).raw(bytes(range(256)) * 2).out)
    payload = fmt.read(io.BytesIO(files["adapter"])).adapter
    parts["adapters"] = bytes(Pack().call(targets._adapters, 1, 1, 1).number(len(payload), 0).raw(payload).out)
    coded = codec.encode_planes(models.for_channels(3), np.asarray(photo).transpose(2, 0, 1))
    streams = codec.split_streams(coded.pixels, 1)
    parts["planes"] = bytes(Pack().call(targets._planes, 3, h, w).streams(streams).out)
    bits, context_shift = 13, 2
    wide = (planes.astype(np.uint16) << 5) | (planes[::-1].astype(np.uint16) & 31)
    wide_params = Pack().number(bits, 9).number(context_shift, 0).raw(bytes(params.size) + (table % 80).astype(np.uint8).tobytes())
    wide_streams = _coder.encode_pixels(wide, params, table % 80, 1, 0, -1, bits, context_shift)
    parts["wide"] = bytes(Pack().call(targets._decode_wide, c, h, w).raw(bytes(wide_params.out)).streams(wide_streams).out)
    parts["wide-round-trip"] = bytes(Pack().call(targets._round_trip_wide, c, h, w).raw(bytes(wide_params.out)).raw((wide << 3).tobytes()).out)
    parts["learned"] = bytes(_learned_seed(planes, table).out)

    for folder, named in seeds.items():
        for name, data in named.items():
            for stale in (CORPUS / folder).glob(f"{name}-????????"):  # the seed of earlier models or streams
                stale.unlink()
            (CORPUS / folder / f"{name}-{hashlib.sha256(data).hexdigest()[:8]}").write_bytes(data)


if __name__ == "__main__":
    write()
