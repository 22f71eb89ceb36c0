"""pillow_unz.coder: round trips and the refusal of bad input."""
from __future__ import annotations

import numpy as np
import pytest

from pillow_unz import _coder, coder


def random_cdf(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    freqs = rng.integers(1, 1000, size=(rows, k))
    freqs[:, rng.integers(0, k)] = 0 if k > 2 else 1  # a zero-probability symbol in each row
    cdf = np.zeros((rows, k + 1), np.int64)
    cdf[:, 1:] = np.cumsum(freqs, axis=1)
    return (cdf * 2**16 // cdf[:, -1:]).astype(np.int32)


def sample_symbols(rng: np.random.Generator, cdf: np.ndarray) -> np.ndarray:
    u = rng.integers(0, 2**16, size=len(cdf))
    return np.array([np.searchsorted(row, x, side="right") - 1 for row, x in zip(cdf, u)], np.int32)


@pytest.mark.parametrize("k", [2, 3, 256, 1000])
def test_round_trip(k: int) -> None:
    rng = np.random.default_rng(k)
    cdf = random_cdf(rng, 2000, k)
    symbols = sample_symbols(rng, cdf)
    data = coder.encode_cdf(cdf, symbols)
    assert np.array_equal(coder.decode_cdf(cdf, data), symbols)


def test_shared_tables_and_other_integer_dtypes() -> None:
    rng = np.random.default_rng(1)
    cdf = random_cdf(rng, 4, 256)
    indexes = rng.integers(0, 4, size=5000)
    symbols = np.array([sample_symbols(rng, cdf[i : i + 1])[0] for i in indexes], np.int64)
    data = coder.encode_cdf(cdf.astype(np.int64), symbols, indexes.astype(np.uint16))
    assert np.array_equal(coder.decode_cdf(cdf, data, indexes), symbols)


def test_empty() -> None:
    cdf = np.zeros((0, 3), np.int32)
    data = coder.encode_cdf(cdf, np.zeros(0, np.int32))
    assert coder.decode_cdf(cdf, data).shape == (0,)


def test_skewed_distribution_compresses() -> None:
    cdf = np.array([[0, 65535, 65536]] * 100_000, np.int32)
    data = coder.encode_cdf(cdf, np.zeros(100_000, np.int32))
    assert len(data) < 20
    assert not coder.decode_cdf(cdf, data).any()


def test_logistic_round_trip() -> None:
    rng = np.random.default_rng(2)
    n = 20_000
    mean8 = rng.integers(-100, 2200, n).astype(np.int32)
    scale = rng.integers(0, _coder.NUM_SCALES, n).astype(np.int32)
    symbols = np.clip(mean8 // 8 + rng.integers(-3, 4, n), 0, 255).astype(np.int32)
    data = _coder.encode_logistic(symbols, mean8, scale, 256)
    assert np.array_equal(_coder.decode_logistic(data, mean8, scale, 256), symbols)


GOOD = np.array([[0, 30000, 65536]], np.int32)


@pytest.mark.parametrize(
    "cdf, symbols, match",
    [
        (GOOD.astype(np.float32), [0], "integer"),
        (GOOD[0], [0], "dimensions"),
        (np.array([[0, 40000, 30000, 65536]], np.int32), [0], "decreases"),
        (np.array([[0, 30000, 65535]], np.int32), [0], "65536"),
        (np.array([[5, 30000, 65536]], np.int32), [0], "65536"),
        (GOOD, [2], "out of range"),
        (GOOD, [-1], "out of range"),
        (np.array([[0, 0, 65536]], np.int32), [0], "zero-probability"),
        (GOOD, [0, 1], "does not match"),
        (GOOD, [[0]], "dimensions"),
        (GOOD, [2**40], "int32"),
    ],
)
def test_bad_input_raises_value_error(cdf, symbols, match) -> None:
    with pytest.raises(ValueError, match=match):
        coder.encode_cdf(cdf, np.asarray(symbols))


def test_bad_indexes() -> None:
    with pytest.raises(ValueError, match="indexes"):
        coder.encode_cdf(GOOD, np.zeros(3, np.int32), np.array([0, 1, 0]))


def test_truncated_and_garbage_streams_raise() -> None:
    rng = np.random.default_rng(3)
    cdf = random_cdf(rng, 3000, 256)
    symbols = sample_symbols(rng, cdf)
    data = coder.encode_cdf(cdf, symbols)
    for cut in range(0, len(data), max(1, len(data) // 50)):
        with pytest.raises(ValueError):
            coder.decode_cdf(cdf, data[:cut])
    with pytest.raises(ValueError):
        coder.decode_cdf(cdf, data + b"\x00")
    with pytest.raises(ValueError):
        coder.decode_cdf(cdf, "not bytes")
    for seed in range(200):  # garbage: an exception or some symbols, never a crash
        junk = b"\x00" + np.random.default_rng(seed).bytes(len(data) - 1)
        try:
            out = coder.decode_cdf(cdf, junk)
        except ValueError:
            continue
        assert out.shape == symbols.shape and out.min() >= 0 and out.max() < 256


def test_many_symbols_per_table_round_trip() -> None:
    """Enough symbols per table for the decoder's slot lookup, zero-probability symbols included."""
    rng = np.random.default_rng(4)
    cdf = random_cdf(rng, 2, 256)
    indexes = rng.integers(0, 2, size=20_000).astype(np.int32)
    symbols = np.array([sample_symbols(rng, cdf[i : i + 1])[0] for i in indexes], np.int32)
    data = coder.encode_cdf(cdf, symbols, indexes)
    assert np.array_equal(coder.decode_cdf(cdf, data, indexes), symbols)
    with pytest.raises(ValueError):
        coder.decode_cdf(cdf, data[:-3], indexes)


def test_unpickled_arrays_are_coded() -> None:
    """Arrays from another process (pickled: multiprocessing, dask) carry dtype objects of their
    own; the extension compares dtypes by value."""
    import pickle

    import pillow_unz

    pixels = pickle.loads(pickle.dumps(np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)))
    assert np.array_equal(pillow_unz.decompress(pillow_unz.compress(pixels, "L")).pixels, pixels)
