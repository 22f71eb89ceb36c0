"""The sample range of a group of 16-bit planes: the first transform of their pipeline.

16-bit data seldom uses all 16 bits: a 12-bit sensor's samples sit in 0..4095, or in steps of 16
(12 bits shifted up); a CT slice spans a few thousand values around an offset. The encoder
measures what the planes really use and codes `(x - offset) >> shift`, which needs `bits` bits:
8 or fewer go to the 8-bit tools as they are (so 16-bit files of 8-bit content cost what 8-bit
files do), 9 to 16 to the wide tools (csrc/pixel_model.h: code_wide_sample). `context_shift`
says how much larger than an 8-bit photograph's the image's variations are, in powers of two:
the wide pixel model divides its contexts by it (docs/DESIGN.md has the measurements).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

_FORMAT = struct.Struct("<HBBB")  # offset, shift, bits, context_shift
SIZE = _FORMAT.size
MIN_BITS, MAX_BITS = 8, 16
# The median step between horizontal neighbours of the 8-bit photographs of ../shared/eval is
# 1 to 5; the context shift brings a wider image's median step near this.
_PHOTO_STEP = 4


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
        return _FORMAT.pack(self.offset, self.shift, self.bits, self.context_shift)

    @classmethod
    def from_bytes(cls, data: bytes) -> SampleRange:
        """ValueError for bytes that no encoder writes."""
        if len(data) != SIZE:
            raise ValueError("sample range: wrong size")
        r = cls(*_FORMAT.unpack(data))
        if not (r.shift < 16 and MIN_BITS <= r.bits <= MAX_BITS and 0 <= r.context_shift <= r.bits - MIN_BITS):
            raise ValueError(f"sample range out of bounds: {r}")
        return r


def measure(planes: np.ndarray) -> SampleRange:
    """The sample range of 16-bit planes (C, H, W): the smallest value, the low bits that are
    zero in every sample above it, the bits what is left needs, and the context shift."""
    offset = int(planes.min())
    spread = int(planes.max()) - offset
    steps = np.bitwise_or.reduce((planes - np.uint16(offset)).ravel()) if spread else 0
    shift = (int(steps) & -int(steps)).bit_length() - 1 if steps else 0
    bits = max(MIN_BITS, (spread >> shift).bit_length())
    context_shift = 0
    if bits > MIN_BITS:
        sample = planes[:, ::4].astype(np.int32) >> shift  # every fourth row is enough for a median
        step = float(np.median(np.abs(np.diff(sample, axis=2)))) if sample.shape[2] > 1 else 0.0
        context_shift = int(np.clip(np.floor(np.log2(max(step, 1) / _PHOTO_STEP)), 0, bits - MIN_BITS))
    return SampleRange(offset, shift, bits, context_shift)


def forward(planes: np.ndarray, r: SampleRange) -> np.ndarray:
    """16-bit planes -> the planes the tools code, of dtype r.dtype."""
    return ((planes - np.uint16(r.offset)) >> np.uint16(r.shift)).astype(r.dtype)


def inverse(coded: np.ndarray, r: SampleRange) -> np.ndarray:
    """Inverse of forward: uint16 planes; ValueError where a decoded sample leaves 0..65535
    (a corrupt file: no encoder writes such a range)."""
    wide = (coded.astype(np.uint32) << np.uint32(r.shift)) + np.uint32(r.offset)
    if coded.size and int(wide.max()) > 0xFFFF:
        raise ValueError("decoded sample outside 0..65535: corrupt")
    return wide.astype(np.uint16)
