"""Photographs nothing in pillow-unz was trained or tuned on, for `unz bench`: the photos and
textures that scikit-image ships in its wheel (`../shared/DATA.md` keeps them for independent
checks), written as PNG files. `python -m tests.unseen DIR` (needs `pip install scikit-image`)."""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png",  # colour
         "camera.png", "moon.png", "coins.png", "brick.png", "grass.png", "gravel.png")  # gray


def main(folder: str) -> None:
    import skimage

    shipped = Path(skimage.__file__).parent / "data"
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        with Image.open(shipped / name) as img:
            img = img if img.mode in ("L", "RGB") else img.convert("RGB")
            img.save(out / f"skimage-{name}")
        print(out / f"skimage-{name}", img.size, img.mode)


if __name__ == "__main__":
    main(sys.argv[1])
