"""Coding one group of planes (the colour planes, or the alpha plane), band by band, each band
by the tool that codes it smallest (tools.py). 16-bit planes first go through a sample
transform (samples.py: a range or a palette), and are coded as 8-bit planes where that leaves
8 bits or fewer.

The photo tool: the network's encoder gives z; z is coded under its learned prior; the decoder
half of the network, run exactly in float64, turns z into the per-pixel parameter planes; the C++
pixel model codes the samples with them. Decoding repeats the last two steps from the stored z.
z is stored only where some band of the group takes the photo tool.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch

from . import _coder, coder, samples, tools
from .pixelmodel import coding_order
from .model import Z_MAX, UnzNet, num_levels
from .samples import SampleRange, SampleTransform

@dataclass(frozen=True)
class CodedPlanes:
    latent_shape: tuple[int, int, int]  # (channels, height, width) of z
    latent: bytes  # z, range coded; empty where no band takes the photo tool
    pixels: bytes  # one stream per band of rows (its tool's byte, then its payload), framed by join_streams
    complete: bool = True  # False: what a truncated file still holds of `pixels`
    samples: SampleTransform | None = None  # of 16-bit planes; None for 8-bit ones

    @property
    def size(self) -> int:
        """Coded bytes (without the container's framing)."""
        return len(self.latent) + len(self.pixels)


def join_streams(streams: list[bytes]) -> bytes:
    """The lengths of all streams but the last (u32 little-endian), then the streams."""
    return b"".join(len(s).to_bytes(4, "little") for s in streams[:-1]) + b"".join(streams)


def split_streams(payload: bytes, count: int) -> list[bytes]:
    """Inverse of join_streams; ValueError where the lengths do not fit the payload."""
    start = 4 * (count - 1)
    if len(payload) < start:
        raise ValueError("pixel data too short for its band table: truncated or corrupt")
    streams = []
    for i in range(count - 1):
        length = int.from_bytes(payload[4 * i : 4 * i + 4], "little")
        if start + length > len(payload):
            raise ValueError("pixel band extends past its chunk: truncated or corrupt")
        streams.append(payload[start : start + length])
        start += length
    return streams + [payload[start:]]


def intact_streams(payload: bytes, count: int) -> list[bytes]:
    """The streams a truncated join_streams payload still holds whole: those the band table
    places inside it (never the last one, whose end the table does not give)."""
    table = min(count - 1, len(payload) // 4)
    start, streams = 4 * (count - 1), []
    for i in range(table):
        length = int.from_bytes(payload[4 * i : 4 * i + 4], "little")
        if start + length > len(payload):
            break
        streams.append(payload[start : start + length])
        start += length
    return streams


_THREADS: ContextVar[int | None] = ContextVar("pillow_unz_threads", default=None)


def checked_threads(threads: int | None) -> int | None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return threads


@contextmanager
def coding_threads(threads: int | None) -> Iterator[None]:
    """Within the block, code bands on `threads` threads (None: as many as torch is allowed).
    The bytes and pixels never depend on it."""
    token = _THREADS.set(checked_threads(threads))
    try:
        yield
    finally:
        _THREADS.reset(token)


def _threads() -> int:
    return _THREADS.get() or max(1, torch.get_num_threads())


def latent_shape(model: UnzNet, height: int, width: int) -> tuple[int, int, int]:
    for _ in range(num_levels(height, width)):
        height, width = (height + 1) // 2, (width + 1) // 2
    return model.config.latent, height, width


def parameter_planes(model: UnzNet, z: torch.Tensor, height: int, width: int, rows: range | None = None) -> np.ndarray:
    """The decoder half in float64: integer parameter planes (of `rows` only, if given),
    identical on every machine."""
    rows = rows if rows is not None else range(height)
    params = np.empty((_coder.num_param_planes(model.config.channels), len(rows), width), np.int32)
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=False):
        for part, planes in model.decode_chunks(z.to(torch.float64), height, width, rows):
            params[:, part.start - rows.start : part.stop - rows.start] = planes[0].cpu().numpy()
    return params


def _latent_scales(model: UnzNet, shape: tuple[int, int, int]) -> np.ndarray:
    """z's scale index for every element: one per channel."""
    _, h, w = shape
    return np.repeat(model.z_scale_index().detach().cpu().numpy().astype(np.int32), h * w)


def scale_table(model: UnzNet) -> np.ndarray:
    table = model.scale_table_index().detach().cpu().numpy()
    return np.ascontiguousarray(table.astype(np.int32))


def encode_samples(model: UnzNet, ordered: np.ndarray, params: np.ndarray) -> bytes:
    """The photo tool's streams of planes (C, H, W) uint8, already in coding order, under the
    pixel model with the integer parameter planes `params` and the model's scale table (no tool
    bytes: for measurements of the photo tool alone)."""
    return join_streams(_coder.encode_pixels(np.ascontiguousarray(ordered), params, scale_table(model), _threads()))


def decode_samples(model: UnzNet, pixels: bytes, params: np.ndarray) -> np.ndarray:
    """Inverse of encode_samples: planes (C, H, W) uint8 in coding order, from its pixel streams
    and the parameter planes (P, H, W) they were coded with."""
    channels, (height, width) = model.config.channels, params.shape[1:]
    out = np.empty((channels, height, width), np.uint8)
    streams = split_streams(pixels, _coder.num_bands(height))
    for i, s in enumerate(streams):
        tools.check_band(tools.PHOTO, s, channels, len(_rows(height, i, 1)), width)
    _coder.decode_pixels(streams, params, scale_table(model), _threads(), out)
    return out


def _rows(height: int, first: int, count: int) -> range:
    return range(_coder.band_start(height, first), _coder.band_start(height, first + count))


def _top_bytes(planes: np.ndarray, t: SampleTransform) -> np.ndarray:
    """What the network reads of coded planes: their top 8 bits."""
    return planes if t.bits == samples.MIN_BITS else (planes >> np.uint16(t.bits - 8)).astype(np.uint8)


def encode_planes(model: UnzNet, planes: np.ndarray) -> CodedPlanes:
    """planes: (C, H, W) uint8 or uint16 with C = model.config.channels. 16-bit planes are
    coded under each of their candidate sample transforms, and the smaller kept."""
    ordered = planes[coding_order(planes.shape[0])]
    if planes.dtype == np.uint8:
        return _encode_coded(model, np.ascontiguousarray(ordered), None)
    coded = [_encode_coded(model, np.ascontiguousarray(t.forward(ordered)), t) for t in samples.candidates(ordered)]
    return min(coded, key=lambda c: c.size + len(c.samples.to_bytes()))


def _encode_coded(model: UnzNet, planes: np.ndarray, transform: SampleTransform | None) -> CodedPlanes:
    """Planes already in coding order and through their sample transform (None: 8-bit planes):
    tools.encode_bands picks each band's tool; the network runs only if it asks for the photo
    tool."""
    c, h, w = planes.shape
    r = transform or SampleRange()
    shape, latent = latent_shape(model, h, w), b""

    def photo(bands: list[int]) -> dict[int, bytes]:
        nonlocal latent
        if not bands:
            return {}
        device = next(model.parameters()).device
        with torch.no_grad():
            z = model.latent(torch.from_numpy(_top_bytes(planes, r)).to(device)[None])
        latent = coder.encode_centered(z.cpu().numpy().reshape(-1).astype(np.int32), _latent_scales(model, shape), Z_MAX)
        table, streams = scale_table(model), {}
        for first, count in tools.runs(bands, _threads()):  # parameter planes for a few bands at a time
            params = parameter_planes(model, z, h, w, _rows(h, first, count))
            coded = _coder.encode_pixels(planes, params, table, _threads(), first, count, r.bits, r.context_shift)
            del params  # before the next run's are made
            for band, s in enumerate(coded, first):
                streams[band] = bytes([tools.PHOTO]) + s
        return streams

    streams = tools.encode_bands(planes, _threads(), photo)
    latent = latent if any(s[0] == tools.PHOTO for s in streams) else b""
    return CodedPlanes(shape, latent, join_streams(streams), samples=transform)


def decode_planes(model: UnzNet, coded: CodedPlanes, height: int, width: int) -> list[np.ndarray]:
    """Inverse of encode_planes: the C planes (H, W), in their usual order (views of one array
    in coding order, not copied); raises ValueError for streams that cannot be this model's. Of
    incomplete planes (a truncated file), the bands still there, and zeros (16-bit planes: what
    their sample transform makes of zeros). Every band stream is checked against its band's size before the
    image's planes are allocated."""
    expected = latent_shape(model, height, width)
    if coded.latent_shape != expected:
        raise ValueError(f"latent shape {coded.latent_shape} does not fit a {width}x{height} image ({expected})")
    r = coded.samples or SampleRange()
    channels, bands, dtype = model.config.channels, _coder.num_bands(height), r.dtype
    streams = split_streams(coded.pixels, bands) if coded.complete else intact_streams(coded.pixels, bands)
    for i, s in enumerate(streams):
        if not s:
            raise ValueError("empty band stream: corrupt")
        tools.check_band(s[0], s[1:], channels, len(_rows(height, i, 1)), width, dtype)
    photo = [i for i, s in enumerate(streams) if s[0] == tools.PHOTO]
    if (photo and not coded.latent) or (coded.complete and coded.latent and not photo):
        raise ValueError("latent z missing for photo bands, or present without them: corrupt")
    planes = np.zeros((channels, height, width), dtype)  # rows no stream reaches stay zero
    tools.decode_bands(streams, planes, _threads())
    if photo:
        z, table = decode_latent(model, coded), scale_table(model)
        for first, count in tools.runs(photo, _threads()):  # parameter planes for a few bands at a time
            params = parameter_planes(model, z, height, width, _rows(height, first, count))
            payloads = [s[1:] for s in streams[first : first + count]]
            _coder.decode_pixels(payloads, params, table, _threads(), planes, first, r.bits, r.context_shift)
            del params  # before the next run's are made
    if coded.samples:
        planes = coded.samples.inverse(planes)
    return [planes[c] for c in np.argsort(coding_order(channels))]


def decode_latent(model: UnzNet, coded: CodedPlanes) -> torch.Tensor:
    """z of coded planes, (1, latent, h, w) float64 on the model's device."""
    symbols = coder.decode_centered(coded.latent, _latent_scales(model, coded.latent_shape), Z_MAX)
    device = next(model.parameters()).device
    return torch.from_numpy(symbols.astype(np.float64)).view(1, *coded.latent_shape).to(device)
