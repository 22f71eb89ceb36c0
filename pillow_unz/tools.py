"""The coding tools of a band, and the encoder's choice among them.

Every band of a plane group is coded by one tool, named by the first byte of its stream
(`docs/FORMAT.md`). The encoder codes each band with every tool that can still win and keeps the
smallest, as JPEG XL's modular mode chooses its transforms: photographs keep the network's pixel
model, screenshots and drawings take the screen model, a band of one colour costs its colour,
and nothing ever costs more than PNG-style deflate. The photo tool needs the network, so it lives
in codec.py; this module holds the others, which need nothing but the pixels.

Planes of 9 to 16 bits (uint16, after their sample range: samples.py) have the photo, flat and
deflate tools; the screen model codes 8-bit samples only.
"""
from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import _coder

PHOTO, SCREEN, FLAT, DEFLATE, LEARNED = range(5)
NAMES = {PHOTO: "photo", SCREEN: "screen", FLAT: "flat", DEFLATE: "deflate", LEARNED: "learned photo"}
PHOTO_TOOLS = (PHOTO, LEARNED)  # the pixel model's: LEARNED adds a context network (its index: the payload's first byte)
# What splits the photo tools' context cells' adaptive statistics a second time (csrc/pixel_model.h,
# StatsKey), named by every photo band of a version 7 file: nothing, the predicted level, or the
# place in an 8x8 grid (JPEG's blocks).
NO_KEY, LEVEL_KEY, POSITION_KEY = range(_coder.NUM_STATS_KEYS)
KEY_NAMES = {NO_KEY: "none", LEVEL_KEY: "level", POSITION_KEY: "position"}
# The memory of the classical prediction's least-squares fits, in bits (they forget with a factor
# 1 - 2**-m a sample: csrc/least_squares.h), named by every photo band of a version 12 file;
# earlier files have the default.
DEFAULT_FIT_MEMORY = _coder.DEFAULT_FIT_MEMORY
FIT_MEMORIES = range(_coder.MIN_FIT_MEMORY, _coder.MAX_FIT_MEMORY + 1)
# The first format versions whose photo bands name their statistics key and their fit memory.
KEYED_REVISION, FIT_MEMORY_REVISION = 7, 12

# The fewest bits a range-coded stream can spend per sample (photo) or per pixel (screen): one
# symbol or decision of the largest probability the coder gives; and the fewest bytes a stream
# has beyond its bits (csrc/range_coder.h flushes 5 bytes, its first byte is always 0, and the
# first 8 bits of a stream leave no byte).
_PHOTO_MIN_BITS = -math.log2((2**16 - 255) / 2**16)
_SCREEN_MIN_BITS = -math.log2((2**16 - 1) / 2**16)
_RANGE_FRAMING = 4
# The screen tool is tried on a band only where at least this share of its pixels repeat W or N
# exactly: below it, the photo tool won every band of the training photographs, the screen sets
# and ../shared/eval by 8% or more (the screen tool won from 0.59 up, on a screenshot of a mail
# client showing photographs), and the screen tool is the slowest part of encoding a photograph.
SCREEN_MIN_REPEATS = 0.5
# It is also tried on bands of at most this many colours, whatever they repeat: a photograph cut
# to a palette and dithered (as pngquant and GIFs make them) repeats few neighbours but is a
# choice among a few colours, which the screen model codes as such (an eval photo dithered to
# 256 colours: 344,714 bytes by the photo tool, 218,848 by the screen tool; WebP 211,560).
SCREEN_MAX_COLOURS = 256
# Deflate runs at zlib's level 1 on every band (about 10 ms a megabyte), and at level 9 (up to
# 40 times slower on photographs) only where level 1 came within this factor of the best tool:
# on the eval photographs level 9 was 7% to 18% smaller than level 1.
DEFLATE_RETRY = 1.25


class Way(NamedTuple):
    """One way of the photo tool to code a band: what its stream's header names."""

    network: int | None  # the context network's index, or None (the classical pixel model)
    key: int  # the statistics key
    fit_memory: int = DEFAULT_FIT_MEMORY


@dataclass(frozen=True)
class Effort:
    """What the encoder tries on every band at one effort level."""

    screen: bool = True  # the screen tool, where enough pixels repeat; and deflate at level 9, where it might win
    photo: tuple[int | None, ...] = (None,)  # pixel models: a context network's index, or None (classical)
    keys: tuple[int, ...] = (LEVEL_KEY,)  # statistics keys, each tried with every pixel model
    fit_memories: tuple[int, ...] = (DEFAULT_FIT_MEMORY,)  # each tried with every pixel model and key

    @property
    def codings(self) -> list[Way]:
        """The photo tool's ways of coding a band that the encoder tries: every combination."""
        return list(itertools.starmap(Way, itertools.product(self.photo, self.keys, self.fit_memories)))

    @property
    def networks(self) -> tuple[int, ...]:
        """The context networks tried, in order."""
        return tuple(k for k in self.photo if k is not None)

    @property
    def network(self) -> int | None:
        """The context network tried first (None: the classical pixel model)."""
        return next(iter(self.networks), None)


EFFORTS = {
    1: Effort(screen=False, photo=()),  # flat and deflate at level 1: about PNG's speed
    2: Effort(photo=()),
    3: Effort(photo=(None,)),  # the classical pixel model
    4: Effort(photo=(0,)),  # with the small context network
    5: Effort(photo=(0, None)),
    # With the large ones: a pair trained against each other, 1 on reduced photos and 3 on
    # full-size ones (5 is the large one trained on a GPU that 3 went on from).
    6: Effort(photo=(1, 3)),
    # The classical model won no band from these networks, on photographs, graphics or
    # screenshots (docs/DESIGN.md): it stays the safety net of efforts 5, 8 and 9.
    # A short and a long memory of the least-squares fits, each band the better: full-size photos
    # took the first more often, the eval photos the second (docs/DESIGN.md, "Fit memory").
    7: Effort(photo=(1, 3), keys=(LEVEL_KEY, POSITION_KEY), fit_memories=(7, 11)),
    # With the deep ones too.
    8: Effort(photo=(2, 4, 1, 3, 5, None), keys=(LEVEL_KEY, POSITION_KEY, NO_KEY), fit_memories=(7, 11)),
    9: Effort(photo=(2, 4, 1, 3, 5, 0, None), keys=(LEVEL_KEY, POSITION_KEY, NO_KEY), fit_memories=(7, 10, 11)),
}
# The large networks. No effort with a context network decoded the eval photos at a quarter of
# JPEG XL effort 7's speed on two threads even before format 9 (the small one 0.18x, these 0.13x;
# the classical model alone 0.22x to 0.28x; now 0.10x and 0.15x: docs/DESIGN.md), so the default
# keeps the bytes the networks win and the speed is still to be won; 8 and 9 add the deep ones.
DEFAULT_EFFORT = 7
# The photo tool's ways race over a band's first rows, and only the way then ahead codes the rest
# (csrc/pixel_model.h, code_pixels): the others' networks and statistics were most of the
# encoder's time. After 128 rows the way ahead was the smallest one in all but two bands of the
# eval photos at efforts 7 and 9 (21 bytes in all; after 64 rows, 175 bytes): docs/DESIGN.md.
# The ways of each fit memory race apart: which memory ends smallest shows late, so the way
# ahead of every memory codes to the end. What the lead needs is samples, not rows: bands of
# wider images race over as many rows as hold 128 of the eval photos' 640 pixels, 16 at least
# (docs/DESIGN.md).
RACE_ROWS = 128
RACE_PIXELS = RACE_ROWS * 640


def race_rows(width: int) -> int:
    """The rows of a band of `width` pixels that the photo tool's ways race over."""
    return min(RACE_ROWS, max(RACE_ROWS // 8, -(-RACE_PIXELS // width)))


def effort_of(effort: int) -> Effort:
    if isinstance(effort, bool) or not isinstance(effort, int) or effort not in EFFORTS:
        raise ValueError(f"effort must be an integer from 1 to 9, got {effort!r}")
    return EFFORTS[effort]


def photo_prefix(way: Way) -> bytes:
    """What a photo band's stream starts with: the classical tool's byte, or the learned tool's and
    the index of its context network; then the statistics key and the fit memory."""
    tool = bytes([PHOTO]) if way.network is None else bytes([LEARNED, way.network])
    return tool + bytes([way.key, way.fit_memory])


def photo_header(stream: bytes, revision: int) -> tuple[Way, int]:
    """Inverse of photo_prefix for a file of format version `revision`: a photo band stream's
    way, and the header's size (where the range-coded payload starts). Streams of versions 5 and
    6 name no key (NO_KEY), those before version 12 no fit memory (the default). ValueError where
    the stream is too short for its header or names an unknown key or memory."""
    start = 2 if stream[0] == LEARNED else 1  # where the key is
    keyed, remembers = revision >= KEYED_REVISION, revision >= FIT_MEMORY_REVISION
    size = start + keyed + remembers
    if len(stream) < size:
        raise ValueError(f"{NAMES[stream[0]]} band without its header: corrupt")
    key = stream[start] if keyed else NO_KEY
    memory = stream[start + 1] if remembers else DEFAULT_FIT_MEMORY
    if key not in KEY_NAMES:
        raise ValueError(f"photo band with unknown statistics key {key}: corrupt")
    if memory not in FIT_MEMORIES:
        raise ValueError(f"photo band with unknown fit memory {memory}: corrupt")
    return Way(stream[1] if stream[0] == LEARNED else None, key, memory), size


def band_height(height: int) -> int:
    """The most rows the encoder puts in a band of an image of `height` rows: a multiple of
    _coder.BAND_ROWS, which the file gives. Bands decode in parallel, so there are two wherever
    there are more than BAND_ROWS rows; but every band learns the image afresh, and taller bands
    code smaller (full-size photos 0.3% to 0.5% at up to 1,024 rows against 256:
    docs/DESIGN.md), so they are as tall as that leaves, up to 1,024 rows (a 20 MP photo still
    has four)."""
    return _coder.BAND_ROWS * min(max(1, -(-height // (2 * _coder.BAND_ROWS))), 4)


def band_rows(height: int, first: int, band_height: int, count: int = 1) -> range:
    """The rows of bands first .. first + count - 1 of an image of `height` rows in bands of
    `band_height` rows at most."""
    return range(_coder.band_start(height, first, band_height), _coder.band_start(height, first + count, band_height))


def photo_floor(channels: int, rows: int, width: int) -> int:
    """A lower bound on the size of a band's photo stream: where another tool is already at most
    this, the network need not run."""
    return 1 + _RANGE_FRAMING + int(channels * rows * width * _PHOTO_MIN_BITS / 8)


def runs(bands: list[int], longest: int | None = None) -> list[tuple[int, int]]:
    """(first, count) of the runs of consecutive numbers in sorted `bands`, each at most
    `longest` long."""
    out: list[tuple[int, int]] = []
    for band in bands:
        if out and band == sum(out[-1]) and (longest is None or out[-1][1] < longest):
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((band, 1))
    return out


def repeats(band: np.ndarray) -> float:
    """The share of pixels of a band (C, rows, W) that repeat W or N exactly."""
    same = np.zeros(band.shape[1:], bool)
    same[:, 1:] = (band[:, :, 1:] == band[:, :, :-1]).all(0)
    same[1:] |= (band[:, 1:] == band[:, :-1]).all(0)
    return float(same.mean())


def few_colours(band: np.ndarray) -> bool:
    """Whether a band (C, rows, W) of 8-bit samples of several planes has at most
    SCREEN_MAX_COLOURS colours (one plane always has): counted first in its first rows, where a
    photograph has more."""
    def colours(part: np.ndarray) -> int:
        keys = np.zeros(part.shape[1:], np.uint32)
        for plane in part:
            keys = (keys << 8) | plane
        return len(np.unique(keys))

    return len(band) > 1 and all(colours(part) <= SCREEN_MAX_COLOURS for part in (band[:, :16], band))


def _stored(dtype: np.dtype, order: str) -> np.dtype:
    """How samples of `dtype` are stored in a stream: bytes, or 16-bit words in `order`."""
    return np.dtype(np.uint8) if dtype == np.uint8 else np.dtype(order + "u2")


def _flat(band: np.ndarray) -> bytes | None:
    first = band[:, :1, :1]
    return bytes([FLAT]) + first.astype(_stored(band.dtype, "<")).tobytes() if (band == first).all() else None


def png_rows(pixels: np.ndarray) -> np.ndarray:
    """Pixels (rows, W, C), uint8 or uint16, as PNG stores them: filtered rows (RFC 2083), each
    its filter byte first, 16-bit samples big-endian (the deflate tool and png16 share them)."""
    rows, width, c = pixels.shape
    stored = np.ascontiguousarray(pixels, dtype=_stored(pixels.dtype, ">"))
    return _coder.png_filter(stored.view(np.uint8).reshape(rows, width * c * pixels.itemsize), c * pixels.itemsize)


def png_pixels(filtered: bytes, shape: tuple[int, int, int], dtype: type) -> np.ndarray:
    """Inverse of png_rows: pixels of `shape` (rows, W, C) and `dtype` from their filtered rows."""
    rows, width, c = shape
    itemsize = np.dtype(dtype).itemsize
    unfiltered = _coder.png_unfilter(filtered, rows, width * c * itemsize, c * itemsize)
    return unfiltered.view(_stored(dtype, ">")).reshape(shape)


def inflate_exactly(payload: bytes, size: int, what: str) -> bytes:
    """The zlib stream `payload` inflated, which must be exactly `size` bytes with nothing after
    the stream: never more is inflated (ValueError naming `what` otherwise)."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(payload, size)
    except zlib.error as e:
        raise ValueError(f"corrupt {what}: {e}") from e
    if len(data) != size or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise ValueError(f"corrupt {what}: wrong size")
    return data


def _deflate(band: np.ndarray, level: int) -> bytes:
    return bytes([DEFLATE]) + zlib.compress(png_rows(band.transpose(1, 2, 0)).tobytes(), level)


def _keep_smaller(streams: list[bytes], candidates: dict[int, bytes]) -> None:
    for i, stream in candidates.items():
        if len(stream) < len(streams[i]):
            streams[i] = stream


# The photo tool: the stream of each given band, by the way that won the race of the given ways
# (race_rows).
PhotoTool = Callable[[list[int], list[Way]], dict[int, bytes]]


def encode_bands(planes: np.ndarray, threads: int, photo: PhotoTool, effort: Effort, band_height: int) -> list[bytes]:
    """Each band of planes (C, H, W), of `band_height` rows at most, by the smallest of the tools
    that `effort` tries, from the cheapest: flat; deflate (level 1); screen, where enough pixels
    repeat; photo(bands, codings), the photo tool's smallest streams of the bands where it can
    still win, of every way the effort tries (Effort.codings) at once; deflate at level 9, where
    it might."""
    c, height, width = planes.shape
    rows = [band_rows(height, i, band_height) for i in range(_coder.num_bands(height, band_height))]
    bands = [planes[:, r.start : r.stop] for r in rows]
    streams = [_flat(b) for b in bands]
    todo = [i for i, s in enumerate(streams) if s is None]

    def deflate(which: list[int], level: int) -> dict[int, bytes]:
        with ThreadPoolExecutor(threads) as pool:  # zlib leaves the GIL
            return dict(zip(which, pool.map(_deflate, [bands[i] for i in which], [level] * len(which))))

    fast = deflate(todo, 1)
    for i, stream in fast.items():
        streams[i] = stream
    if not effort.screen:
        return streams
    screen = [i for i in todo if planes.dtype == np.uint8 and (repeats(bands[i]) >= SCREEN_MIN_REPEATS or few_colours(bands[i]))]
    for first, count in runs(screen):
        streams_of_run = _coder.encode_screen(planes, threads, first, count, band_height)
        _keep_smaller(streams, {i: bytes([SCREEN]) + s for i, s in enumerate(streams_of_run, first)})
    if effort.photo:
        which = [i for i in todo if len(streams[i]) > photo_floor(c, bands[i].shape[1], width)]
        _keep_smaller(streams, photo(which, effort.codings))
    _keep_smaller(streams, deflate([i for i in todo if len(fast[i]) <= DEFLATE_RETRY * len(streams[i])], 9))
    return streams


def check_band(tool: int, payload: bytes | memoryview, channels: int, rows: int, width: int, dtype: type = np.uint8) -> None:
    """Refuse, before decoding, a band stream that cannot hold its band (of samples of `dtype`):
    so that no hostile file makes the decoder allocate or work far beyond its size. A photo
    band's payload: its range-coded stream (after photo_header's header)."""
    if tool == PHOTO or (tool == LEARNED and dtype == np.uint8):
        samples, min_bits = channels * rows * width, _PHOTO_MIN_BITS
    elif tool == SCREEN and dtype == np.uint8:
        samples, min_bits = rows * width, _SCREEN_MIN_BITS
    elif tool == FLAT:
        if len(payload) != channels * np.dtype(dtype).itemsize:
            raise ValueError("flat band: wrong colour size")
        return
    elif tool == DEFLATE:
        return  # inflating is bounded by the band's size (decode_bands)
    else:
        raise ValueError(f"band coded with unknown tool {tool} (or one that does not code {np.dtype(dtype).name} samples)")
    if samples > (8 * (len(payload) + _RANGE_FRAMING) + 64) / min_bits:
        raise ValueError(f"{NAMES[tool]} band too short for its size: truncated or corrupt")


def _inflate(payload: bytes, band: np.ndarray) -> None:
    c, rows, width = band.shape
    filtered = inflate_exactly(payload, rows * (width * c * band.itemsize + 1), "deflate band")
    band[:] = png_pixels(filtered, (rows, width, c), band.dtype).transpose(2, 0, 1)


def decode_bands(streams: list[bytes], planes: np.ndarray, threads: int, first_band: int = 0,
                 height: int | None = None, top: int = 0, band_height: int = _coder.BAND_ROWS) -> None:
    """Decode the bands first_band, first_band + 1, ... of `streams` that a tool of this module
    coded (photo bands are left to the caller) into planes (C, R, W): rows top .. top + R - 1 of
    an image of `height` rows (None: R) in bands of `band_height` rows at most, as the coder's
    decode_pixels and decode_screen take them."""
    height = planes.shape[1] if height is None else height
    screen: list[bytes | None] = []
    for i, stream in enumerate(streams, first_band):
        rows = band_rows(height, i, band_height)
        tool, payload, band = stream[0], stream[1:], planes[:, rows.start - top : rows.stop - top]
        screen.append(payload if tool == SCREEN else None)
        if tool == FLAT:
            band[:] = np.frombuffer(payload, _stored(planes.dtype, "<"))[:, None, None]
        elif tool == DEFLATE:
            _inflate(payload, band)
    if any(s is not None for s in screen):
        _coder.decode_screen(screen, threads, planes, first_band, height, top, band_height)
