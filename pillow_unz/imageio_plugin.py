"""imageio's plugin for .unz files: imageio's Pillow plugin, except that `index=None` reads every
frame of a multi-frame file and stacks them (as that plugin does for GIF), so that
`imageio.v3.imread(path)` gives a stack for a stack and an image for an image. Imported by
imageio only, when it opens a .unz file (UnzImagePlugin registers it)."""
from __future__ import annotations

import numpy as np
from imageio.plugins.pillow import PillowPlugin


class UnzPlugin(PillowPlugin):
    def read(self, *, index: int | None = None, **kwargs) -> np.ndarray:
        if index is None and getattr(self._image, "n_frames", 1) > 1:
            index = ...
        return super().read(index=index, **kwargs)
