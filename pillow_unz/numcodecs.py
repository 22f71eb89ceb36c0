"""A numcodecs codec for zarr: `pillow_unz.numcodecs.Unz` (codec id `pillow_unz`, registered
through the `numcodecs.codecs` entry point), lossless coding of uint8 and uint16 image chunks.

    import zarr
    from pillow_unz.numcodecs import Unz
    z = zarr.create_array(store, shape=(100, 2048, 2048), chunks=(1, 2048, 2048), dtype="uint8",
                          zarr_format=2, compressors=Unz())

Each chunk is stored as a .unz file. Its layout says how the chunk's axes map to images:
"HW" (one grayscale image), "HWC" (one image of C = 1 to 4 channels: L, LA, RGB, RGBA), "NHW"
(N grayscale frames), "NHWC" (N images of C channels); by default 2-D chunks are HW, 4-D NHWC,
and 3-D HWC when the last axis has 1 to 4 entries, NHW otherwise. `effort` is the encoder's,
as in `img.save(..., effort=N)`.
"""
from __future__ import annotations

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ensure_ndarray, ndarray_copy
from numcodecs.registry import register_codec

from . import api, tools

LAYOUTS = ("HW", "HWC", "NHW", "NHWC")


def _layout_of(shape: tuple[int, ...]) -> str:
    if len(shape) == 2:
        return "HW"
    if len(shape) == 3:
        return "HWC" if shape[-1] in api.MODE_OF_CHANNELS else "NHW"
    if len(shape) == 4:
        return "NHWC"
    raise ValueError(f"pillow_unz codes 2-D to 4-D image chunks, not {len(shape)}-D ones")


class Unz(Codec):
    codec_id = "pillow_unz"

    def __init__(self, layout: str | None = None, threads: int | None = None, effort: int = tools.DEFAULT_EFFORT) -> None:
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        tools.effort_of(effort)
        self.layout = layout
        self.threads = threads
        self.effort = effort

    def encode(self, buf) -> bytes:
        chunk = ensure_ndarray(buf)
        if chunk.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"pillow_unz codes uint8 and uint16 chunks, not {chunk.dtype}")
        layout = self.layout or _layout_of(chunk.shape)
        if chunk.ndim != len(layout):
            raise ValueError(f"a {chunk.ndim}-D chunk does not fit layout {layout}")
        images = chunk if layout.startswith("N") else chunk[None]
        return api.compress_frames([api.as_frame(image) for image in images], threads=self.threads, effort=self.effort)

    def decode(self, buf, out=None) -> np.ndarray:
        frames = [f.pixels for f in api.decompress_frames(ensure_bytes(buf), threads=self.threads)]
        chunk = np.stack(frames)
        if self.layout is not None:
            chunk = chunk.reshape(self._shape_of(chunk))
        elif len(frames) == 1:
            chunk = chunk[0]
        return ndarray_copy(chunk, out)

    def _shape_of(self, stacked: np.ndarray) -> tuple[int, ...]:
        """The decoded frames (N, H, W[, C]) in this codec's layout."""
        shape = stacked.shape if stacked.ndim == 4 or not self.layout.endswith("C") else (*stacked.shape, 1)
        return shape if self.layout.startswith("N") else shape[1:]


register_codec(Unz)
