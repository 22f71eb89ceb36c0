"""imageio's plugin for .unz files: imageio's Pillow plugin, except that
- `index=None` reads every frame of a multi-frame file and stacks them (as that plugin does for
  GIF), so that `imageio.v3.imread(path)` gives a stack for a stack and an image for an image;
- samples come back as stored, 16-bit colour too (Pillow has no mode for it), unless a mode
  conversion, rotation or gamma is asked for;
- uint16 arrays are written as 16-bit images of any channel count (Pillow's fromarray takes
  16-bit gray only);
- its properties describe what read() gives.
Imported by imageio only, when it opens a .unz file (UnzImagePlugin registers it)."""
from __future__ import annotations

import numpy as np
from imageio.core.request import URI_BYTES
from imageio.core.v3_plugin_api import ImageProperties
from imageio.plugins.pillow import PillowPlugin

from . import api, tools


class UnzPlugin(PillowPlugin):
    def read(self, *, index: int | None = None, **kwargs) -> np.ndarray:
        frames = getattr(self._image, "n_frames", 1)
        if index is None and frames > 1:
            index = ...
        if self._image.format != "UNZ" or any(kwargs.get(k) for k in ("mode", "pilmode", "rotate", "exifrotate", "apply_gamma")):
            return super().read(index=index, **kwargs)
        if index is None or isinstance(index, int):
            if not -frames <= (index or 0) < frames:
                raise IndexError(f"frame {index} of a file of {frames}")
            return self._image._decode((index or 0) % frames)
        return np.stack([self._image._decode(i) for i in range(frames)])

    def properties(self, index: int | None = None) -> ImageProperties:
        """What read() gives: every frame of a multi-frame file for index=None, 16-bit samples
        as uint16."""
        if self._image.format != "UNZ":
            return super().properties(index=index)
        frames = [header for header, _ in self._image._frames]
        if index is None:
            index = ... if len(frames) > 1 else 0
        header = frames[0 if index is ... else index]
        shape, dtype = api.pixel_layout(header)
        return ImageProperties(shape=(len(frames), *shape) if index is ... else shape, dtype=dtype,
                               n_images=len(frames) if index is ... else None, is_batch=index is ...)

    def write(self, ndimage, *, mode: str | None = None, is_batch: bool | None = None, **kwargs) -> bytes | None:
        array = np.stack(ndimage) if isinstance(ndimage, list) else np.asarray(ndimage)
        if array.dtype != np.uint16 or mode is not None:
            return super().write(ndimage, mode=mode, is_batch=is_batch, **kwargs)
        if is_batch is None:
            is_batch = isinstance(ndimage, list) or array.ndim == 4 or (array.ndim == 3 and array.shape[-1] not in (2, 3, 4))
        frames = [api.as_frame(image) for image in (array if is_batch else array[None])]
        data = api.compress_frames(frames, threads=kwargs.get("threads"), effort=kwargs.get("effort", tools.DEFAULT_EFFORT))
        self._request.get_file().write(data)
        return data if self._request._uri_type == URI_BYTES else None
