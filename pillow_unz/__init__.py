"""pillow-unz: a learned lossless image codec for Pillow and imageio.

    import pillow_unz          # registers the .unz format with Pillow (and imageio)
    img.save("photo.unz")
    Image.open("photo.unz")

pillow_unz.compress / pillow_unz.decompress code numpy arrays directly;
pillow_unz.register_unz_opener(threads=..., ...) sets default options of save().
"""
from .UnzImagePlugin import register_unz_opener  # importing it registers the format with Pillow
from .api import DecodedImage, compress, decompress
from .format import ChecksumError, UnzFormatError

__all__ = ["compress", "decompress", "register_unz_opener", "DecodedImage", "UnzFormatError", "ChecksumError"]
__version__ = "0.2.0"
