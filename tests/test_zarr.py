"""The numcodecs codec: zarr arrays of uint8 and uint16 images, written and read back
bit-exactly, also by a dask.distributed cluster of two worker processes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

numcodecs = pytest.importorskip("numcodecs")
zarr = pytest.importorskip("zarr")

from pillow_unz.numcodecs import Unz  # noqa: E402


@pytest.fixture(scope="module")
def photo(sample: Image.Image) -> np.ndarray:
    return np.asarray(sample)[:96, :128]


def test_codec_round_trips_every_layout(photo: np.ndarray) -> None:
    codec = numcodecs.get_codec({"id": "pillow_unz"})  # found through the entry point
    assert isinstance(codec, Unz)
    gray = photo[..., 0]
    cases = [(gray, None), (photo, None), (np.stack([gray, gray[::-1], 255 - gray]), None), (np.stack([photo] * 2), None),
             (photo[..., :2], "HWC"), (photo[..., :1], "HWC"), (np.stack([gray[:, :3]] * 2), "NHW")]
    for chunk, layout in cases:
        codec = Unz(layout=layout)
        decoded = codec.decode(codec.encode(chunk))
        assert decoded.shape == chunk.shape and np.array_equal(decoded, chunk)
        out = np.zeros_like(chunk)
        codec.decode(codec.encode(chunk), out=out)
        assert np.array_equal(out, chunk)
    assert numcodecs.get_codec(Unz(layout="NHW", threads=1).get_config()).layout == "NHW"


def test_codec_refuses_what_it_cannot_code(photo: np.ndarray) -> None:
    for dtype in (np.int16, np.float32, np.uint32):
        with pytest.raises(ValueError, match="uint8 and uint16"):
            Unz().encode(photo.astype(dtype))
    with pytest.raises(ValueError, match="layout"):
        Unz(layout="CHW")
    with pytest.raises(ValueError, match="does not fit"):
        Unz(layout="HW").encode(photo)
    with pytest.raises(ValueError, match="channels"):
        Unz(layout="HWC").encode(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(ValueError):
        Unz().decode(b"not a .unz chunk")


def test_zarr_array_round_trip(photo: np.ndarray, tmp_path) -> None:
    stack = np.stack([photo[..., i % 3] for i in range(5)])
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=stack.shape, chunks=(2, 64, 64), dtype="uint8",
                          zarr_format=2, compressors=Unz())
    z[:] = stack
    back = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    assert isinstance(back.metadata.compressor, Unz)
    assert np.array_equal(back[:], stack)


def test_zarr_array_of_16_bit_images(photo: np.ndarray, tmp_path) -> None:
    """A stack of 12-bit gray slices and one of 16-bit colour images, chunked across both."""
    rng = np.random.default_rng(5)
    slices = (np.stack([photo[..., i % 3] for i in range(3)]).astype(np.uint16) << 4) | rng.integers(0, 16, (3, 96, 128), np.uint16)
    colour = np.stack([photo] * 2).astype(np.uint16) * 256 + rng.integers(0, 256, (2, 96, 128, 3), np.uint16)
    for stack, chunks in ((slices, (2, 64, 64)), (colour, (1, 64, 64, 3))):
        path = str(tmp_path / f"w{stack.ndim}.zarr")
        z = zarr.create_array(path, shape=stack.shape, chunks=chunks, dtype="uint16", zarr_format=2, compressors=Unz())
        z[:] = stack
        assert np.array_equal(zarr.open_array(path, mode="r")[:], stack)


def test_dask_distributed_cluster_writes_and_reads(photo: np.ndarray, tmp_path) -> None:
    """Two worker processes code the chunks (each finds the codec through its entry point)."""
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("dask.distributed")
    stack = np.stack([np.roll(photo, 7 * i, axis=1) for i in range(4)])
    path = str(tmp_path / "d.zarr")
    target = zarr.create_array(path, shape=stack.shape, chunks=(1, 96, 128, 3), dtype="uint8", zarr_format=2,
                               compressors=Unz(layout="NHWC", threads=1))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        da.from_array(stack, chunks=(1, 96, 128, 3)).store(target, lock=False)
        back = da.from_zarr(path).compute()
    assert np.array_equal(back, stack)
