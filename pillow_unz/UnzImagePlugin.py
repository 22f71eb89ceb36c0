"""Pillow plugin for .unz files: Image.open, Image.save, the .unz extension and MIME type.

Modes L, LA, RGB and RGBA are stored as they are. Mode 1 is stored as L (0 and 255) and P and PA
as RGB or RGBA (RGBA when the palette has transparency): lossless conversions, and the file
opens in the converted mode. Other modes raise OSError: convert them first, choosing the loss.

`save(..., threads=N)` codes on N threads (default: torch's; the bytes never depend on it).
`save(..., lora=True)` tunes a per-image adapter first (pillow_unz/finetune/lora.py; needs the
`lora` extra), with the options of `unz-finetune --lora`: rank, steps or seconds, device, targets.
`register_unz_opener(**defaults)` sets defaults for these options (threads also for decoding),
as pillow-heif's register_heif_opener does, and registers `.unz` with imageio where it is
installed, so that imageio goes straight to Pillow for it.
"""
from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageFile

from . import api, codec, format as fmt

MIME = "image/x-unz"
SAVE_OPTIONS = frozenset({"threads", "lora", "rank", "steps", "seconds", "device", "targets"})
_defaults: dict = {}


def _accept(prefix: bytes) -> bool:
    return fmt.accept(prefix)


class UnzImageFile(ImageFile.ImageFile):
    format = "UNZ"
    format_description = "pillow-unz learned lossless image"

    def _open(self) -> None:
        assert self.fp is not None
        self._header, metadata = fmt.read_header(self.fp)
        self._mode = self._header.mode
        self._size = (self._header.width, self._header.height)
        self._metadata = metadata
        self.info.update(metadata)
        self._decoded = False
        self.tile = []

    def load(self) -> Image.core.PixelAccess | None:
        if not self._decoded:
            assert self.fp is not None
            with codec.coding_threads(_defaults.get("threads")):
                # As Pillow's own formats: a truncated file is an error, unless
                # LOAD_TRUNCATED_IMAGES asks for what it still holds (the rest black).
                pixels = api.decode_body(self.fp, self._header, self._metadata,
                                         truncated_ok=ImageFile.LOAD_TRUNCATED_IMAGES)
            self._decoded = True
            if self._exclusive_fp:
                self.fp.close()
            self.fp = BytesIO(pixels.tobytes())
            self.tile = [ImageFile._Tile("raw", (0, 0, *self.size), 0, self.mode)]
        return super().load()

    def verify(self) -> None:
        """Decode the whole file and check its pixel checksum (and every chunk's CRC)."""
        assert self.fp is not None
        with codec.coding_threads(_defaults.get("threads")):
            api.decode_body(self.fp, self._header, self._metadata)
        super().verify()


def storable(im: Image.Image) -> Image.Image:
    """im as the mode a .unz file stores it in (what Image.open gives back): modes outside
    fmt.GROUPS convert to one of them without loss; others raise OSError."""
    if im.mode in fmt.GROUPS:
        return im
    if im.mode == "1":
        return im.convert("L")
    if im.mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode == "PA":
        return im.convert("RGBA")
    msg = f"cannot write mode {im.mode} as UNZ (supported: L, LA, RGB, RGBA; 1, P and PA are converted)"
    raise OSError(msg)


def open_storable(path: str | Path) -> Image.Image:
    """The image file at `path`, loaded, as storable() gives it (its info, ICC profile and Exif
    included, comes along)."""
    with Image.open(path) as img:
        stored = storable(img)
        stored.load()
    return stored


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    info = {**_defaults, **im.encoderinfo}
    icc_profile = info.get("icc_profile", im.info.get("icc_profile"))
    exif = info.get("exif", im.info.get("exif"))
    if isinstance(exif, Image.Exif):
        exif = exif.tobytes()
    stored = storable(im)
    stored.load()
    if info.get("lora"):
        fp.write(_compress_with_lora(np.asarray(stored), stored.mode, icc_profile or None, exif or None, info))
    else:
        fp.write(api.compress(np.asarray(stored), stored.mode, icc_profile or None, exif or None, threads=info.get("threads")))


def _compress_with_lora(pixels: np.ndarray, mode: str, icc_profile: bytes | None, exif: bytes | None, info: dict) -> bytes:
    """save(..., lora=True, rank=, steps=, seconds=, device=, targets=): `unz-finetune --lora`'s options."""
    from .finetune import lora

    options = {k: info[k] for k in ("rank", "steps", "seconds", "device", "targets") if k in info}
    if "targets" in options:
        options["targets"] = tuple(options["targets"])
    with codec.coding_threads(info.get("threads")):
        return lora.compress(pixels, mode, icc_profile, exif, settings=lora.LoraSettings(**options)).data


def _register_with_imageio() -> None:
    """Tell imageio that .unz files are Pillow's (where imageio is installed), so that it tries
    the pillow plugin first instead of probing every plugin it has."""
    try:
        from imageio.config import known_extensions
        from imageio.config.extensions import FileExtension
    except ImportError:
        return
    entries = known_extensions.setdefault(".unz", [])
    if not any("pillow" in e.priority for e in entries):
        entries.insert(0, FileExtension(name=UnzImageFile.format_description, extension=".unz", priority=["pillow"],
                                        description="pillow-unz lossless images (pip install pillow-unz)"))


def register_unz_opener(**defaults) -> None:
    """Register .unz with Pillow and imageio (importing pillow_unz already does), and make
    `defaults` the options of every later save() (threads also of decoding): threads, lora,
    rank, steps, seconds, device, targets. Options given to save() still win."""
    unknown = set(defaults) - SAVE_OPTIONS
    if unknown:
        raise TypeError(f"unknown .unz option(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(SAVE_OPTIONS))})")
    codec.checked_threads(defaults.get("threads"))  # a bad count fails here, not at the first save
    _defaults.update(defaults)
    Image.register_open(UnzImageFile.format, UnzImageFile, _accept)
    Image.register_save(UnzImageFile.format, _save)
    Image.register_extension(UnzImageFile.format, ".unz")
    Image.register_mime(UnzImageFile.format, MIME)
    _register_with_imageio()


register_unz_opener()
