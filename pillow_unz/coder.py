"""The range coder's public API: CDF tables in, bytes out, and back.

`cdf` is an (N, K+1) integer array of cumulative frequencies running from 0 to 2**16, non-decreasing;
row i codes symbol i (or, with `indexes`, row indexes[i] codes symbol i, so that a few tables can
serve many symbols). Malformed input raises ValueError; so does a truncated or corrupt stream.
int32 C-contiguous arrays are used in place; other integer arrays are converted once.
"""
from __future__ import annotations

import numpy as np

from . import _coder

CorruptStream = _coder.CorruptStream  # a ValueError


def _int32(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.int32:
        return np.ascontiguousarray(a)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, not {a.dtype}")
    if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{name} has values outside int32")
    return np.ascontiguousarray(a, dtype=np.int32)


def encode_cdf(cdf, symbols, indexes=None) -> bytes:
    """Range-code `symbols` (N,) with CDF rows `cdf`."""
    idx = None if indexes is None else _int32(indexes, "indexes")
    return _coder.encode_cdf(_int32(cdf, "cdf"), _int32(symbols, "symbols"), idx)


def decode_cdf(cdf, data: bytes, indexes=None) -> np.ndarray:
    """The symbols (int32) that encode_cdf coded into `data` with the same `cdf` (and `indexes`)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError("data must be bytes")
    idx = None if indexes is None else _int32(indexes, "indexes")
    return _coder.decode_cdf(_int32(cdf, "cdf"), bytes(data), idx)


def encode_centered(values, scale_index, limit: int) -> bytes:
    """Range-code integers in [-limit, limit] (N,), each under a zero-mean discretized logistic
    whose scale is scale_index (N,) in the coder's scale table: how z and adapters are stored."""
    values = np.asarray(values)
    if values.size and np.abs(values).max() > limit:
        raise ValueError(f"values outside [-{limit}, {limit}]")
    mean8 = np.full(values.size, 8 * limit, dtype=np.int32)
    return _coder.encode_logistic(_int32(values + limit, "values"), mean8, _int32(scale_index, "scale_index"), 2 * limit + 1)


def decode_centered(data: bytes, scale_index, limit: int) -> np.ndarray:
    """The integers (int32) that encode_centered coded into `data` with the same scales."""
    scale_index = _int32(scale_index, "scale_index")
    mean8 = np.full(scale_index.size, 8 * limit, dtype=np.int32)
    return _coder.decode_logistic(bytes(data), mean8, scale_index, 2 * limit + 1) - limit
