"""The sample transform of a plane group: the first step of its pipeline, chosen by the encoder
and written in the stream (docs/FORMAT.md, "Sample transforms").

16-bit data seldom uses all 16 bits: a 12-bit sensor's samples sit in 0..4095, or in steps of 16
(12 bits shifted up); a CT slice spans a few thousand values around an offset; a drawing has a
few colours. And 8-bit pictures whose levels were stretched, gamma-corrected or cut to fewer
bits use some values and never their neighbours, which a predictor's smooth distribution cannot
know. These transforms map planes to what the tools code:
- SampleRange (16-bit planes) codes `(x - offset) >> shift`, which needs `bits` bits: 8 go to
  the 8-bit tools as they are (so 16-bit files of 8-bit content cost what 8-bit files do), 9 to
  16 to the wide tools (csrc/pixel_model.h: code_wide_sample), whose contexts it scales by
  `context_shift`;
- Palette codes each plane's index into the sorted list of the values it uses, where no plane
  uses more than 256: 8-bit planes again, for the screen model among others (and 8-bit content
  widened by 257, as image tools widen it); of 8-bit planes with gaps between the values they
  use, the gaps close (an eval photo with its levels stretched 1.6x: 164,942 bytes as it is,
  123,938 as indices, JPEG XL effort 9 131,828);
- WidePalette does the same for 16-bit planes of more than 256 values with gaps between them,
  whose indices need 9 to 16 bits: 12-bit samples scaled to 16 bits (x 65535 / 4095, as raw
  converters and medical exports scale them) use every sixteenth value or so, and no shift
  takes them back (four CT and MR slices: 2.0 to 2.6 times their 12-bit size as a range, 1.0
  as indices);
- Unchanged (8-bit planes) codes them as they are.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Union

import numpy as np

from . import tools

RANGE, PALETTE, UNCHANGED, WIDE_PALETTE = 0, 1, 2, 3
MIN_BITS, MAX_BITS = 8, 16
_RANGE = struct.Struct("<HBBB")  # offset, shift, bits, context_shift
_WIDE_PALETTE = struct.Struct("<BBI")  # bits, context_shift, bytes of the deflated value sets
_VALUE_SET = (1 << 16) // 8  # bytes of a set of 16-bit values, a bit each
# The median step between horizontal neighbours of the 8-bit photographs of ../shared/eval is
# 1 to 5; the context shift brings a wider image's median step near this.
_PHOTO_STEP = 4
MAX_PALETTE = 256
# Planes try a palette (8-bit ones; 16-bit ones of more than 256 values, a wide one) where at
# least this share of the pixels of a plane have a value next to one the plane never uses,
# between its least and greatest (photographs: under 0.1%, the few of their tails; stretched
# levels, or 12 bits scaled to 16: most of them).
MIN_GAP_SHARE = 0.1


@dataclass(frozen=True)
class SampleRange:
    offset: int = 0
    shift: int = 0
    bits: int = MIN_BITS
    context_shift: int = 0

    @property
    def dtype(self) -> type:
        """The dtype of the coded planes."""
        return np.uint8 if self.bits == MIN_BITS else np.uint16

    def to_bytes(self) -> bytes:
        return bytes([RANGE]) + _RANGE.pack(self.offset, self.shift, self.bits, self.context_shift)

    def forward(self, planes: np.ndarray) -> np.ndarray:
        """16-bit planes -> the planes the tools code, of dtype self.dtype (one new array)."""
        coded = planes - np.uint16(self.offset)
        coded >>= np.uint16(self.shift)
        return coded.astype(self.dtype, copy=False)

    def inverse(self, coded: np.ndarray) -> np.ndarray:
        """Inverse of forward: uint16 planes (in place where coded is uint16); ValueError where
        a decoded sample leaves 0..65535 (a corrupt file: no encoder writes such a range)."""
        if coded.size and (int(coded.max()) << self.shift) + self.offset > 0xFFFF:
            raise ValueError("decoded sample outside 0..65535: corrupt")
        wide = coded.astype(np.uint16, copy=False)
        wide <<= np.uint16(self.shift)
        wide += np.uint16(self.offset)
        return wide


@dataclass(frozen=True)
class Unchanged:
    """8-bit planes, coded as they are."""

    bits = MIN_BITS
    context_shift = 0
    dtype = np.uint8

    def to_bytes(self) -> bytes:
        return bytes([UNCHANGED])

    def forward(self, planes: np.ndarray) -> np.ndarray:
        return planes

    def inverse(self, coded: np.ndarray) -> np.ndarray:
        return coded


@dataclass(frozen=True)
class Palette:
    values: tuple[np.ndarray, ...]  # per plane, the values it uses, increasing (of the planes' dtype)
    bits = MIN_BITS
    context_shift = 0
    dtype = np.uint8

    def to_bytes(self) -> bytes:
        """Per plane, of 16-bit planes its count and values; of 8-bit planes a bit per value."""
        if self.values[0].dtype == np.uint8:
            return bytes([PALETTE]) + _value_sets(self.values, 256)
        return bytes([PALETTE]) + b"".join(struct.pack("<H", len(v)) + v.astype("<u2").tobytes() for v in self.values)

    def forward(self, planes: np.ndarray) -> np.ndarray:
        return np.stack([np.searchsorted(v, p).astype(self.dtype) for v, p in zip(self.values, planes)])

    def inverse(self, coded: np.ndarray) -> np.ndarray:
        """ValueError for an index past its plane's palette (a corrupt file)."""
        if any(len(v) <= int(c.max(initial=0)) for v, c in zip(self.values, coded)):
            raise ValueError("palette index out of range: corrupt")
        return np.stack([v[c] for v, c in zip(self.values, coded)])


@dataclass(frozen=True)
class WidePalette(Palette):
    """A palette of 16-bit planes with more than 256 values: indices of `bits` bits (9 to 16),
    coded by the wide tools with their contexts scaled by `context_shift`."""

    bits: int = MAX_BITS
    context_shift: int = 0
    dtype = np.uint16

    def to_bytes(self) -> bytes:
        """bits, context shift, then each plane's set of values, a bit per value, deflated."""
        sets = zlib.compress(_value_sets(self.values, 1 << 16), 9)
        return bytes([WIDE_PALETTE]) + _WIDE_PALETTE.pack(self.bits, self.context_shift, len(sets)) + sets

    @classmethod
    def of(cls, values: list[np.ndarray], planes: np.ndarray) -> WidePalette:
        """The palette of planes (C, H, W) that use `values` (per plane)."""
        bits = max(MIN_BITS + 1, (max(len(v) for v in values) - 1).bit_length())
        indices = np.stack([np.searchsorted(v, p[::4]) for v, p in zip(values, planes)])  # every fourth row
        return cls(tuple(values), bits, _context_shift(indices, bits))


SampleTransform = Union[SampleRange, Palette, WidePalette, Unchanged]


def _value_sets(values: tuple[np.ndarray, ...], size: int) -> bytes:
    """Each plane's values as a set of `size` bits, most significant bit first."""
    return b"".join(np.packbits(np.bincount(v, minlength=size) > 0).tobytes() for v in values)


def _values_of(sets: bytes, channels: int, size: int, dtype: type) -> list[np.ndarray]:
    """Inverse of _value_sets: each plane's values, increasing."""
    used = np.unpackbits(np.frombuffer(sets, np.uint8)).reshape(channels, size)
    return [np.flatnonzero(u).astype(dtype) for u in used]


def from_bytes(data: bytes, channels: int, wide: bool) -> tuple[SampleTransform, int]:
    """The transform at the start of `data` for `channels` planes of 16-bit samples (wide) or
    8-bit ones, and its size in bytes; ValueError for bytes that no encoder writes."""
    if not data:
        raise ValueError("sample transform missing")
    if not wide:
        if data[0] == UNCHANGED:
            return Unchanged(), 1
        if data[0] != PALETTE:
            raise ValueError(f"unknown sample transform {data[0]} for 8-bit samples")
        if len(data) < 1 + 32 * channels:
            raise ValueError("palette cut short")
        values = _values_of(data[1 : 1 + 32 * channels], channels, 256, np.uint8)
        if not all(len(v) for v in values):
            raise ValueError("palette of no values")
        return Palette(tuple(values)), 1 + 32 * channels
    if data[0] == RANGE:
        if len(data) < 1 + _RANGE.size:
            raise ValueError("sample range cut short")
        r = SampleRange(*_RANGE.unpack(data[1 : 1 + _RANGE.size]))
        if not (r.shift < 16 and MIN_BITS <= r.bits <= MAX_BITS and 0 <= r.context_shift <= r.bits - MIN_BITS):
            raise ValueError(f"sample range out of bounds: {r}")
        return r, 1 + _RANGE.size
    if data[0] == PALETTE:
        values, at = [], 1
        for _ in range(channels):
            (count,) = struct.unpack("<H", data[at : at + 2]) if len(data) >= at + 2 else (0,)
            v = np.frombuffer(data[at + 2 : at + 2 + 2 * count], "<u2").astype(np.uint16)
            if not 1 <= count <= MAX_PALETTE or len(v) != count or (np.diff(v.astype(np.int32)) <= 0).any():
                raise ValueError("palette: wrong size or values not increasing")
            values.append(v)
            at += 2 + 2 * count
        return Palette(tuple(values)), at
    if data[0] == WIDE_PALETTE:
        end = 1 + _WIDE_PALETTE.size
        if len(data) < end:
            raise ValueError("palette cut short")
        bits, context_shift, length = _WIDE_PALETTE.unpack(data[1:end])
        if not (MIN_BITS < bits <= MAX_BITS and context_shift <= bits - MIN_BITS) or length > len(data) - end:
            raise ValueError("palette: bits, context shift or length out of bounds")
        sets = tools.inflate_exactly(data[end : end + length], _VALUE_SET * channels, "palette")
        values = _values_of(sets, channels, 1 << 16, np.uint16)
        if not all(1 <= len(v) <= 1 << bits for v in values):
            raise ValueError("palette: no values, or more than its indices reach")
        return WidePalette(tuple(values), bits, context_shift), end + length
    raise ValueError(f"unknown sample transform {data[0]}")


def measure_range(planes: np.ndarray) -> SampleRange:
    """The sample range of 16-bit planes (C, H, W): the smallest value, the low bits that are
    zero in every sample above it, the bits what is left needs, and the context shift."""
    offset = int(planes.min())
    spread = int(planes.max()) - offset
    # the low bits that every sample shares with the offset: those of no difference from it
    rows = range(0, planes.shape[1], 256)  # (a band at a time: no full-size temporary)
    steps = np.bitwise_or.reduce([np.bitwise_or.reduce((planes[:, r : r + 256] ^ np.uint16(offset)).ravel()) for r in rows])
    steps = int(steps)
    shift = (steps & -steps).bit_length() - 1 if steps else 0
    bits = max(MIN_BITS, (spread >> shift).bit_length())
    # (every fourth row is enough for the context shift)
    context_shift = _context_shift(planes[:, ::4].astype(np.int32) >> shift, bits) if bits > MIN_BITS else 0
    return SampleRange(offset, shift, bits, context_shift)


def _context_shift(sample: np.ndarray, bits: int) -> int:
    """The context shift of coded samples of `bits` bits, from a sample of their rows (C, h, W):
    what brings their median step between horizontal neighbours near a photograph's."""
    if sample.shape[2] < 2:
        return 0
    step = float(np.median(np.abs(np.diff(sample.astype(np.int32), axis=2))))
    return int(np.clip(np.floor(np.log2(max(step, 1) / _PHOTO_STEP)), 0, bits - MIN_BITS))


def _gap_share(counts: np.ndarray) -> float:
    """The share of a plane's samples, counted by value, whose value lies next to an unused
    one between the least and the greatest used."""
    used = counts > 0
    first, last = np.flatnonzero(used)[[0, -1]]
    hole = ~used
    hole[:first] = hole[last + 1 :] = False
    near = np.zeros_like(hole)
    near[:-1] |= hole[1:]
    near[1:] |= hole[:-1]
    return float(counts[near].sum() / counts.sum())


def _counts(plane: np.ndarray, values: int) -> np.ndarray:
    """How often each of `values` values occurs in a plane (H, W), counted 256 rows at a time:
    bincount widens what it counts to 64 bits, 8 times an 8-bit plane."""
    return sum(np.bincount(plane[top : top + 256].ravel(), minlength=values) for top in range(0, plane.shape[0], 256))


def candidates(planes: np.ndarray) -> list[SampleTransform]:
    """The transforms worth trying on planes (C, H, W). Of 8-bit planes: as they are, and a
    palette where a plane's values have gaps enough (MIN_GAP_SHARE). Of 16-bit ones: the
    sample range, and where it leaves more than 8 bits, a palette where no plane uses more than
    256 values, or else a wide one where a plane's values have gaps enough."""
    if planes.dtype == np.uint8:
        counts = [_counts(p, 256) for p in planes]
        gaps = max(_gap_share(c) for c in counts) >= MIN_GAP_SHARE
        return [Unchanged()] + ([Palette(tuple(np.flatnonzero(c).astype(np.uint8) for c in counts))] if gaps else [])
    r = measure_range(planes)
    if r.bits == MIN_BITS:
        return [r]
    counts = [_counts(p, 1 << 16) for p in planes]
    used = [np.flatnonzero(c).astype(np.uint16) for c in counts]
    if all(len(u) <= MAX_PALETTE for u in used):
        return [r, Palette(tuple(used))]
    return [r, WidePalette.of(used, planes)] if max(_gap_share(c) for c in counts) >= MIN_GAP_SHARE else [r]
