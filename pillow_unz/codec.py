"""Coding one group of planes (the colour planes, or the alpha plane), band by band, each band
by the tool that codes it smallest (tools.py). The planes first go through a sample transform
(samples.py: of 16-bit planes a range or a palette, coded as 8-bit planes where that leaves
8 bits or fewer; of 8-bit planes a palette where their values have gaps).

The photo tool is the C++ pixel model under the group's PhotoModel: the learned scale table of
its context cells and its parameters (per channel a scale offset and an error-feedback
coefficient): the model's learned constants, or, where the file's adapter adapts the group, the
adapted network's parameter planes (pillow_unz.adapter; only then is torch imported).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _coder, samples, tools
from .context_network import ContextNetwork
from .samples import SampleTransform

def coding_order(channels: int) -> list[int]:
    """The order in which a pixel's channels are coded: for colour, green first (the least noisy
    channel of a camera photograph, and the best predictor of the other two), then red, blue."""
    return [1, 0, 2] if channels == 3 else list(range(channels))


@dataclass(frozen=True)
class PhotoModel:
    """What the photo tool codes a group of C planes with."""

    scale_table: np.ndarray  # (C, A, B, S) int32: the base scale index of every context cell
    constants: np.ndarray  # (2C,) int32: per channel the scale offset, then the feedback coefficient
    network: Any = None  # an adapted pillow_unz.model.UnzNet whose parameter planes replace the constants
    context_networks: tuple[ContextNetwork, ...] = ()  # of the learned photo tool, by index (effort picks)

    @property
    def channels(self) -> int:
        return self.scale_table.shape[0]

    def run_length(self, threads: int) -> int | None:
        """How many consecutive bands to code in one call: the network's planes are made for
        one band per thread at a time (their memory grows with the rows); constants serve
        every band at once, and the threads then take bands as they finish (no waiting for
        the slowest band of each call)."""
        return None if self.network is None else threads

    def context_network(self, index: int | None) -> ContextNetwork | None:
        """The context network of an index (None: the classical pixel model, none)."""
        return None if index is None else self.context_networks[index]

    def usable_network(self, index: int | None, wide: bool) -> int | None:
        """`index` where planes (wide: of more than 8 bits) can be coded with that context
        network, else None (the classical model): networks read 8-bit samples, and a model may
        hold fewer networks than an effort names."""
        return index if index is not None and not wide and index < len(self.context_networks) else None

    def parameters(self, height: int, width: int, rows: range) -> np.ndarray:
        """The pixel model's parameters for `rows` of a height x width image: the constants
        (P,), or the network's planes (P, len(rows), width)."""
        return self.constants if self.network is None else self.network.parameter_planes(height, width, rows)


@dataclass(frozen=True)
class CodedPlanes:
    pixels: bytes  # one stream per band of rows (its tool's byte, then its payload), framed by join_streams
    complete: bool = True  # False: what a truncated file still holds of `pixels`
    samples: SampleTransform | None = None  # None: 8-bit planes of a version 5 file, coded as they are
    revision: int = _coder.LATEST_REVISION  # the format version of its file: its photo bands' layout and coding
    band_height: int = _coder.BAND_ROWS  # the most rows a band has (the file says, from version 11)

    @property
    def size(self) -> int:
        """Coded bytes (without the container's framing)."""
        return len(self.pixels)


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
    """Within the block, code bands on `threads` threads (None: one per core this process may
    use). The bytes and pixels never depend on it."""
    token = _THREADS.set(checked_threads(threads))
    try:
        yield
    finally:
        _THREADS.reset(token)


def thread_count() -> int:
    """The threads bands are coded on: coding_threads' number, else one per core this process
    may use."""
    if _THREADS.get():
        return _THREADS.get()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _layers(network: ContextNetwork | None) -> list | None:
    return None if network is None else network.coder_layers()


def encode_samples(photo: PhotoModel, ordered: np.ndarray, network: ContextNetwork | None = None,
                   stats_key: int = tools.NO_KEY, revision: int = _coder.LATEST_REVISION) -> bytes:
    """The photo tool's streams of 8-bit planes (C, H, W), already in coding order, with a
    context network or without, and a statistics key (no tool bytes: for measurements of the
    photo tool alone), as format version `revision` codes samples (8: the logistic's distributions
    as they are; 9: refined; 10 on: and the network's online readout), in the encoder's bands
    (tools.band_height)."""
    _, height, width = ordered.shape
    params = photo.parameters(height, width, range(height))
    return join_streams(_coder.encode_pixels(np.ascontiguousarray(ordered), params, photo.scale_table, thread_count(),
                                             network=_layers(network), stats_key=stats_key, revision=revision,
                                             band_height=tools.band_height(height)))


def decode_samples(photo: PhotoModel, pixels: bytes, height: int, width: int,
                   network: ContextNetwork | None = None, stats_key: int = tools.NO_KEY,
                   revision: int = _coder.LATEST_REVISION) -> np.ndarray:
    """Inverse of encode_samples: 8-bit planes (C, H, W) in coding order."""
    out = np.empty((photo.channels, height, width), np.uint8)
    band_height = tools.band_height(height)
    streams = split_streams(pixels, _coder.num_bands(height, band_height))
    for i, s in enumerate(streams):
        tools.check_band(tools.PHOTO, s, photo.channels, len(tools.band_rows(height, i, band_height)), width)
    _coder.decode_pixels(streams, photo.parameters(height, width, range(height)), photo.scale_table, thread_count(), out,
                         network=_layers(network), stats_keys=[stats_key] * len(streams), revision=revision,
                         band_height=band_height)
    return out


def encode_planes(photo: PhotoModel, planes: np.ndarray, effort: int = tools.DEFAULT_EFFORT) -> CodedPlanes:
    """planes: (C, H, W) uint8 or uint16 with C = photo.channels, coded with the tools of
    `effort` (tools.EFFORTS) under each of their candidate sample transforms; the smallest."""
    ordered = planes[coding_order(planes.shape[0])]
    coded = [_encode_coded(photo, np.ascontiguousarray(t.forward(ordered)), t, effort) for t in samples.candidates(ordered)]
    return min(coded, key=lambda c: c.size + len(c.samples.to_bytes()))


def _photo_models(photo: PhotoModel, effort: tools.Effort, wide: bool) -> tools.Effort:
    """The effort with the pixel models these planes can have (PhotoModel.usable_network)."""
    return dataclasses.replace(effort, photo=tuple(dict.fromkeys(photo.usable_network(k, wide) for k in effort.photo)))


def _encode_coded(photo: PhotoModel, planes: np.ndarray, r: SampleTransform, effort: int) -> CodedPlanes:
    """Planes already in coding order and through their sample transform r: tools.encode_bands
    picks each band's tool, in bands as tall as tools.band_height makes them. Where a band takes
    another tool than the photo one (screenshots, drawings), the planes in one band too, and the
    smaller: the screen model's colours and matches then serve the whole image (docs/DESIGN.md)."""
    height = planes.shape[1]
    coded, tools_used = _encode_in_bands(photo, planes, r, effort, tools.band_height(height))
    whole = min(-(-height // _coder.BAND_ROWS) * _coder.BAND_ROWS, _coder.MAX_BAND_HEIGHT)
    if tools_used <= set(tools.PHOTO_TOOLS) or coded.band_height == whole:
        return coded
    return min(coded, _encode_in_bands(photo, planes, r, effort, whole)[0], key=lambda c: c.size)


def _encode_in_bands(photo: PhotoModel, planes: np.ndarray, r: SampleTransform, effort: int,
                     band_height: int) -> tuple[CodedPlanes, set[int]]:
    """_encode_coded in bands of `band_height` rows at most, and the tools its bands took."""
    chosen = _photo_models(photo, tools.effort_of(effort), planes.dtype != np.uint8)
    photo_tool = functools.partial(photo_streams, photo, planes, r, band_height=band_height)
    streams = tools.encode_bands(planes, thread_count(), photo_tool, chosen, band_height)
    return CodedPlanes(join_streams(streams), samples=r, band_height=band_height), {s[0] for s in streams}


def photo_streams(photo: PhotoModel, planes: np.ndarray, r: SampleTransform, bands: list[int],
                  codings: list[tools.Way], band_height: int, race_rows: int | None = None) -> dict[int, bytes]:
    """The photo tool (tools.PhotoTool): of each of `bands` of planes (in coding order, through
    r), the smallest stream of those that `codings` finish, racing over `race_rows` rows
    (default tools.race_rows; 0: every way codes every row), with its header (tools.photo_prefix)."""
    h, w = planes.shape[1:]
    race_rows = tools.race_rows(w) if race_rows is None else race_rows
    streams: dict[int, bytes] = {}
    layers = {c.network: _layers(photo.context_network(c.network)) for c in codings}  # one object a network: run once
    ways = [(layers[c.network], c.key, c.fit_memory) for c in codings]
    # A call returns every way's streams of its bands: a few bands a call where there are several.
    longest = photo.run_length(thread_count()) or (None if len(ways) == 1 else 2 * thread_count())
    for first, count in tools.runs(bands, longest):
        params = photo.parameters(h, w, tools.band_rows(h, first, band_height, count))
        coded = _coder.encode_pixels(planes, params, photo.scale_table, thread_count(), first, count, r.bits,
                                     r.context_shift, codings=ways, band_height=band_height, race_rows=race_rows)
        del params  # before the next run's are made
        # Each band: the smallest of the ways that finished (each memory's winner of the race).
        for band in range(first, first + count):
            finished = [k for k in range(len(codings)) if coded[k][band - first] is not None]
            k = min(finished, key=lambda k: len(coded[k][band - first]))
            streams[band] = tools.photo_prefix(codings[k]) + coded[k][band - first]
        del coded
    return streams


def decode_chunks(photo: PhotoModel, coded: CodedPlanes, height: int, width: int) -> Iterator[tuple[range, list[np.ndarray]]]:
    """Inverse of encode_planes, a few bands at a time (one per thread), from the top: (rows,
    their C planes (len(rows), W) in the usual order, views of one array in coding order). Every band stream is checked against its
    band's size before this returns, so that nothing is decoded (or allocated) for streams that
    cannot be this model's (ValueError). Of incomplete planes (a truncated file), the bands
    still there, and zeros (16-bit planes: what their sample transform makes of zeros)."""
    r = coded.samples or samples.Unchanged()
    channels, band_height = photo.channels, coded.band_height
    bands = _coder.num_bands(height, band_height)
    streams = split_streams(coded.pixels, bands) if coded.complete else intact_streams(coded.pixels, bands)
    headers: dict[int, tuple[tools.Way, int]] = {}  # of the photo bands: their way, and where their payload starts
    for i, s in enumerate(streams):
        if not s:
            raise ValueError("empty band stream: corrupt")
        if s[0] in tools.PHOTO_TOOLS:
            headers[i] = tools.photo_header(s, coded.revision)
        payload = memoryview(s)[headers[i][1] if i in headers else 1 :]  # (no copy)
        tools.check_band(s[0], payload, channels, len(tools.band_rows(height, i, band_height)), width, r.dtype)
        if s[0] == tools.LEARNED and headers[i][0].network >= len(photo.context_networks):
            raise ValueError("band coded with a context network that the model lacks: corrupt")
    order = np.argsort(coding_order(channels))

    def chunks() -> Iterator[tuple[range, list[np.ndarray]]]:
        for first, count in tools.runs(list(range(bands)), thread_count()):
            rows = tools.band_rows(height, first, band_height, count)
            planes = np.zeros((channels, len(rows), width), r.dtype)  # rows no stream reaches stay zero
            present = streams[first : first + count]
            tools.decode_bands(present, planes, thread_count(), first, height, rows.start, band_height)
            # Runs of photo bands, each band with its own model: one call decodes them side by side.
            for start, n in tools.runs([i for i in range(first, first + len(present)) if i in headers]):
                ways, starts = zip(*(headers[i] for i in range(start, start + n)))
                payloads = [streams[i][h:] for i, h in enumerate(starts, start)]
                params = photo.parameters(height, width, tools.band_rows(height, start, band_height, n))
                _coder.decode_pixels(payloads, params, photo.scale_table, thread_count(), planes, start, r.bits,
                                     r.context_shift, height, rows.start,
                                     networks=[_layers(photo.context_network(w.network)) for w in ways],
                                     stats_keys=[w.key for w in ways], fit_memories=[w.fit_memory for w in ways],
                                     revision=coded.revision, band_height=band_height)
            if coded.samples:
                planes = coded.samples.inverse(planes)
            yield rows, [planes[c] for c in order]

    return chunks()


def decode_planes(photo: PhotoModel, coded: CodedPlanes, height: int, width: int) -> np.ndarray:
    """Inverse of encode_planes: the planes (C, H, W) in the usual order, in one array
    (decode_chunks says what is checked, and what incomplete planes give)."""
    out = None
    for rows, planes in decode_chunks(photo, coded, height, width):
        if out is None:
            out = np.empty((len(planes), height, width), planes[0].dtype)
        out[:, rows.start : rows.stop] = planes
    return out
