"""Real 16-bit images for `unz bench`: the grayscale slices (CT, MR, X-ray) and the 16-bit RGB
test pattern that pydicom ships with its test files, written as 16-bit PNG files.
`python -m tests.dicom16 DIR` (needs `pip install pydicom`; pydicom decodes its JPEG 2000
files through Pillow). `python -m tests.dicom16 --twelve DIR` then compares, on the slices of
DIR that fit 12 bits once their smallest value is subtracted, pillow-unz on that content in
the low and in the high 12 bits of 16 with JPEG XL on it declared 12-bit. Signed slices are offset by 32768, as a uint16 array holds them; copies of
the same pixels in other encodings are left out."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

COPIES = ("bigendian", "expb", "implicit", "RLE", "jp2klossless", "padded")  # of MR_small
COLOUR = ("SC_rgb_rle_16bit.dcm",)


def images() -> dict[str, np.ndarray]:
    import pydicom

    shipped = Path(pydicom.__file__).parent / "data" / "test_files"  # (get_testdata_files downloads more)
    out = {}
    for path in sorted(shipped.rglob("*.dcm")):
        name = path.stem
        if any(c in name for c in COPIES):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                pixels = pydicom.dcmread(path).pixel_array
            except Exception:  # needs a decoder that is not installed
                continue
        gray = pixels.ndim == 2 and min(pixels.shape) >= 32
        if pixels.dtype.itemsize != 2 or not (gray or path.name in COLOUR):
            continue
        if pixels.dtype.kind == "i":
            pixels = pixels.astype(np.int32) + 32768
        out[name] = np.ascontiguousarray(pixels, np.uint16)
    return out


def main(folder: str) -> None:
    import imagecodecs  # Pillow writes no 16-bit colour PNG

    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, pixels in images().items():
        path = Path(folder) / f"{name}.png"
        if pixels.ndim == 2:
            Image.fromarray(pixels).save(path)
        else:
            path.write_bytes(imagecodecs.png_encode(pixels))
        print(path, pixels.shape, f"{int(pixels.min())}..{int(pixels.max())}")


def twelve_bits(folder: str) -> None:
    import imagecodecs

    import pillow_unz

    totals: dict[str, int] = {}
    for path in sorted(Path(folder).glob("*.png")):
        pixels = np.asarray(Image.open(path)).astype(np.int64)
        content = pixels - pixels.min()
        if pixels.ndim != 2 or content.max() >= 1 << 12:
            continue
        x = content.astype(np.uint16)
        sizes = {"pillow-unz, low 12 of 16": len(pillow_unz.compress(x, "L")),
                 "pillow-unz, high 12 of 16": len(pillow_unz.compress(x << 4, "L"))}
        for effort in (7, 9):
            sizes[f"JPEG XL e{effort}, 12-bit"] = len(imagecodecs.jpegxl_encode(x, lossless=True, effort=effort, bitspersample=12))
        print(path.name, sizes)
        for k, v in sizes.items():
            totals[k] = totals.get(k, 0) + v
    print("total", totals)


if __name__ == "__main__":
    twelve_bits(sys.argv[2]) if sys.argv[1] == "--twelve" else main(sys.argv[1])
