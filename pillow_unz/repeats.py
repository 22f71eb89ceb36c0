"""The frame transform that leaves out repeated rows and columns (docs/FORMAT.md, `RPTS`).

A picture enlarged by pixel replication (a scan or a game's frame shown at twice its size, an
icon blown up) repeats every row and column it has; a screenshot repeats the rows and columns
of its blank margins and flat panels. The tools code a repeat cheaply but not for free, and in
an enlargement every neighbour that predicts a new pixel is twice as far away as it was in the
picture. So the encoder also codes the frame without its repeated rows and columns, where
enough of its pixels repeat, and keeps the smaller: scikit-image's moon (a 2x enlargement) went
from 39,043 to 26,389 bytes, and the screenshots that repeat enough 2.9% smaller (from 22%
smaller to 3% larger each, before keeping the smaller); a photograph repeats nothing, and
costs one comparison of its pixels with their neighbours.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import tools

# Coding a frame twice costs time: only where at least this share of its pixels would be left
# out (the screenshots that gained repeated 19% of their rows or more).
MIN_SHARE = 0.1
_BLOCK = 256  # rows compared at a time: no temporary of the whole frame


@dataclass(frozen=True, eq=False)
class Repeats:
    rows: np.ndarray  # (H,) bool: the row equals the row above it in every plane (never the first)
    columns: np.ndarray  # (W,) bool: the column equals the column left of it in every plane

    @classmethod
    def of(cls, groups: Sequence[np.ndarray]) -> Repeats | None:
        """The repeated rows and columns of a frame, its plane groups (C, H, W); None where
        fewer than MIN_SHARE of its pixels repeat."""
        _, height, width = groups[0].shape
        rows, columns = np.ones(height, bool), np.ones(width, bool)
        rows[0] = columns[0] = False
        for top in range(0, height, _BLOCK):
            for g in groups:
                block = g[:, top : top + _BLOCK + 1]  # and the next block's first row
                rows[top + 1 : top + block.shape[1]] &= (block[:, 1:] == block[:, :-1]).all(axis=(0, 2))
                columns[1:] &= (block[:, :_BLOCK, 1:] == block[:, :_BLOCK, :-1]).all(axis=(0, 1))
        repeats = cls(rows, columns)
        coded = repeats.shape[0] * repeats.shape[1]
        return repeats if coded <= (1 - MIN_SHARE) * height * width else None

    @cached_property
    def _source_rows(self) -> np.ndarray:
        """The coded row that every row of the frame repeats (or is)."""
        return np.cumsum(~self.rows) - 1

    @cached_property
    def _source_columns(self) -> np.ndarray:
        return np.cumsum(~self.columns) - 1

    @property
    def shape(self) -> tuple[int, int]:
        """The height and width of the coded planes."""
        return int(self._source_rows[-1]) + 1, int(self._source_columns[-1]) + 1

    def forward(self, planes: np.ndarray) -> np.ndarray:
        """Planes (C, H, W) of the frame -> the planes (C, h, w) that are coded."""
        return np.ascontiguousarray(planes[:, ~self.rows][:, :, ~self.columns])

    def expand(self, rows: range, pixels: np.ndarray) -> tuple[range, np.ndarray]:
        """Coded `rows` of pixels (len(rows), w[, C]) -> the frame's rows they make, and
        those rows' pixels (n, W[, C])."""
        first, stop = np.searchsorted(self._source_rows, [rows.start, rows.stop])
        expanded = pixels[self._source_rows[first:stop] - rows.start][:, self._source_columns]
        return range(int(first), int(stop)), np.ascontiguousarray(expanded)

    def _bits(self) -> bytes:
        return np.packbits(self.rows).tobytes() + np.packbits(self.columns).tobytes()

    def to_bytes(self) -> bytes:
        return zlib.compress(self._bits(), 9)

    @classmethod
    def from_bytes(cls, payload: bytes, height: int, width: int) -> Repeats:
        """The repeats of a height x width frame; ValueError for bytes that no encoder writes."""
        row_bytes = (height + 7) // 8
        bits = tools.inflate_exactly(payload, row_bytes + (width + 7) // 8, "RPTS chunk")
        packed = np.frombuffer(bits, np.uint8)
        repeats = cls(np.unpackbits(packed[:row_bytes], count=height).astype(bool),
                      np.unpackbits(packed[row_bytes:], count=width).astype(bool))
        if repeats.rows[0] or repeats.columns[0]:
            raise ValueError("corrupt RPTS chunk: a first row or column repeats nothing")
        if repeats._bits() != bits:
            raise ValueError("corrupt RPTS chunk: bits set past the last row or column")
        return repeats
