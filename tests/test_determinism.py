"""Files decode to the same pixels, and encode to the same bytes, in other processes and with
other thread counts, because coding is exact integer arithmetic (files with adapters, whose
network runs in torch, are tested with torch's threads and oneDNN too: tests/test_lora.py)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import pillow_unz

from .conftest import mixed, with_alpha

DECODE = """
import sys, hashlib
threads, path = int(sys.argv[1]), sys.argv[2]
import numpy as np
from PIL import Image
import pillow_unz
pillow_unz.register_unz_opener(threads=threads)  # coding and decoding
with Image.open(path) as img:
    pixels = np.asarray(img)
buf = __import__("io").BytesIO()
Image.fromarray(pixels, img.mode).save(buf, format="UNZ")
print(hashlib.sha256(pixels.tobytes()).hexdigest(), hashlib.sha256(buf.getvalue()).hexdigest())
"""


@pytest.fixture(scope="module")
def coded_files(sample: Image.Image, tmp_path_factory) -> list[tuple[str, np.ndarray, bytes]]:
    folder = tmp_path_factory.mktemp("det")
    out = []
    # the tall one has three bands of rows, which the coder runs on parallel threads; the mixed
    # one a band of the screen tool and one of the photo tool
    tall = sample.convert("L").resize((60, 2 * pillow_unz._coder.BAND_ROWS + 60))
    for name, img in (("rgba", with_alpha(sample.crop((0, 0, 160, 120)))), ("gray", sample.convert("L").crop((50, 50, 150, 170))),
                      ("tall", tall), ("mixed", mixed(sample))):
        path = folder / f"{name}.unz"
        img.save(path)
        out.append((str(path), np.asarray(img), path.read_bytes()))
    return out


@pytest.mark.parametrize("threads", [1, 3])
def test_decode_in_other_process(coded_files, threads: int) -> None:
    import hashlib

    for path, pixels, data in coded_files:
        result = subprocess.run([sys.executable, "-c", DECODE, str(threads), path],
                                capture_output=True, text=True, check=True)
        pixel_hash, reencoded_hash = result.stdout.split()
        assert pixel_hash == hashlib.sha256(pixels.tobytes()).hexdigest()
        # the encoder is exact too: the same file, byte for byte, whatever the thread count
        assert reencoded_hash == hashlib.sha256(data).hexdigest()
