"""Pillow plugin for .unz files: Image.open, Image.save, the .unz extension and MIME type.

Modes L, LA, RGB, RGBA and I;16 are stored as they are. Mode 1 is stored as L (0 and 255), P and
PA as RGB or RGBA (RGBA when the palette has transparency), I;16B and I;16L as I;16, and I as I;16
where its values fit 0..65535: lossless conversions, and the file opens in the converted mode.
Other modes raise OSError: convert them first, choosing the loss. Pillow has no modes of 16-bit
colour: files of LA, RGB or RGBA with 16-bit samples (written from numpy) open as LA, RGB or RGBA
with the top 8 bits of each sample, as Pillow opens such PNG files; pillow_unz.decompress and
imageio give all 16 bits.
`save(..., save_all=True, append_images=[...])` stores several frames, which open as a
multi-frame image (n_frames, seek, tell, ImageSequence).

`save(..., threads=N)` codes on N threads (default: one per core; the bytes never depend on it).
`save(..., effort=N)`, N from 1 (fastest) to 9 (smallest) as `cjxl -e`, picks the coding tools
(pillow_unz.tools.EFFORTS; default tools.DEFAULT_EFFORT, or 9 with lora=True); the file records
it, and decoding needs no option.
`save(..., lora=True)` tunes a per-image adapter first (pillow_unz/finetune/lora.py; needs the
`lora` extra), with the options of `unz-finetune --lora`: rank, steps or seconds, device, targets.
`register_unz_opener(**defaults)` sets defaults for these options (threads also for decoding),
as pillow-heif's register_heif_opener does, and registers `.unz` with imageio where it is
installed, so that imageio goes straight to pillow-unz's plugin for it.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import IO, Iterator

import numpy as np
from PIL import Image, ImageFile, ImageSequence
from PIL._util import DeferredError

from . import api, codec, format as fmt, tools

MIME = "image/x-unz"
SAVE_OPTIONS = frozenset({"threads", "effort", "lora", "rank", "steps", "seconds", "device", "targets"})
_defaults: dict = {}


def _accept(prefix: bytes) -> bool:
    return fmt.accept(prefix)


class UnzImageFile(ImageFile.ImageFile):
    """A .unz file: one frame, or several (pages, slices, frames of a capture) that seek(),
    tell(), n_frames and ImageSequence reach as in Pillow's multi-frame formats; each frame
    decodes without the others, when it is loaded."""

    format = "UNZ"
    format_description = "pillow-unz learned lossless image"

    def _open(self) -> None:
        assert self.fp is not None
        self._fp = self.fp  # frames are decoded from it; self.fp serves each frame's pixels
        header, metadata = fmt.read_header(self.fp)
        self._frames = fmt.index_frames(self.fp, header)
        self.n_frames = len(self._frames)
        self.is_animated = self.n_frames > 1
        self._metadata = metadata
        self.info.update(metadata)
        self._loaded_frame = -1
        self._select(0)

    def _select(self, frame: int) -> None:
        header = self._frames[frame][0]
        self._frame = frame
        self._mode = PILLOW_MODES.get(header.mode, header.mode)
        self._size = (header.width, header.height)
        self.tile = []

    def seek(self, frame: int) -> None:
        if not self._seek_check(frame) or frame == self._frame:
            return
        if isinstance(self._fp, DeferredError):
            raise self._fp.ex
        self._select(frame)
        self._im = None  # the frame may differ in mode and size

    def tell(self) -> int:
        return self._frame

    def _decoded_rows(self, frame: int, truncated_ok: bool = False) -> Iterator[tuple[range, np.ndarray]]:
        """api.decode_rows of a frame, on the threads of register_unz_opener."""
        if isinstance(self._fp, DeferredError):  # the image was closed
            raise self._fp.ex
        header, offset = self._frames[frame]
        self._fp.seek(offset)
        with codec.coding_threads(_defaults.get("threads")):
            yield from api.decode_rows(self._fp, header, self._metadata, truncated_ok=truncated_ok, first_frame=frame == 0)

    def _decode(self, frame: int) -> np.ndarray:
        """A frame's stored samples (16 bits where stored so) in one array: what imageio reads."""
        return api.into_array(self._frames[frame][0], self._decoded_rows(frame))

    def load(self) -> Image.core.PixelAccess | None:
        if self._loaded_frame != self._frame:
            # As Pillow's own formats: a truncated file is an error, unless
            # LOAD_TRUNCATED_IMAGES asks for what it still holds (the rest black).
            rows_of_image = self._decoded_rows(self._frame, truncated_ok=ImageFile.LOAD_TRUNCATED_IMAGES)
            self.load_prepare()
            for rows, pixels in rows_of_image:  # the image fills as bands are decoded
                if self._mode != self._frames[self._frame][0].mode:  # 16-bit colour: the top 8 bits
                    pixels = (pixels >> 8).astype(np.uint8)
                # Pillow's raw decoder writes the rows into the image (as ImageFile.load does)
                decoder = Image._getdecoder(self._mode, "raw", self._mode)
                decoder.setimage(self.im, (0, rows.start, self.width, rows.stop))
                decoder.decode(pixels.astype(pixels.dtype.newbyteorder("<"), copy=False))  # I;16 is little-endian
            self._loaded_frame = self._frame
            if self._exclusive_fp and not self.is_animated:
                self._fp.close()
        return super().load()

    def verify(self) -> None:
        """Decode every frame and check its pixel checksum (and every chunk's CRC)."""
        assert self.fp is not None
        for frame in range(self.n_frames):
            for _ in self._decoded_rows(frame):
                pass
        super().verify()


# The stored modes Pillow has no mode for (16-bit colour), and the mode they open in, of their
# top 8 bits.
PILLOW_MODES = {m: m.removesuffix(";16") for m in fmt.WIDE_MODES if m != "I;16"}


def storable(im: Image.Image) -> Image.Image:
    """im as the mode a .unz file stores it in (what Image.open gives back): modes outside
    fmt.GROUPS convert to one of them without loss; others raise OSError."""
    if im.mode in fmt.GROUPS:
        return im
    if im.mode in ("I;16B", "I;16L", "I;16N", "I"):
        if im.mode == "I":
            low, high = im.getextrema()
            if low < 0 or high > 0xFFFF:
                raise OSError(f"cannot write mode I with values {low}..{high} as UNZ: 16-bit samples hold 0..65535")
        wide = Image.fromarray(np.asarray(im).astype(np.uint16))  # (Pillow's convert clips I;16B to 255)
        wide.info = dict(im.info)
        return wide
    if im.mode == "1":
        return im.convert("L")
    if im.mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode == "PA":
        return im.convert("RGBA")
    msg = f"cannot write mode {im.mode} as UNZ (supported: L, LA, RGB, RGBA, I;16; 1, P, PA, I;16B, I;16L and I are converted)"
    raise OSError(msg)


def open_storable(path: str | Path) -> Image.Image:
    """The image file at `path`, loaded, as storable() gives it (its info, ICC profile and Exif
    included, comes along)."""
    with Image.open(path) as img:
        stored = storable(img)
        stored.load()
    return stored


def metadata_to_store(im: Image.Image, info: dict | None = None) -> dict[str, bytes | None]:
    """The ICC profile, Exif block and XMP packet to store (api.compress's keywords): from the
    save call's `info`, or else from im.info, as Pillow's WebP plugin takes them."""
    info = info or {}
    icc_profile, exif, xmp = (info.get(key, im.info.get(key)) for key in ("icc_profile", "exif", "xmp"))
    if isinstance(exif, Image.Exif):
        exif = exif.tobytes()
    if isinstance(xmp, str):  # text, as PNG's iTXt chunk holds it (PngInfo takes either)
        xmp = xmp.encode()
    return {"icc_profile": icc_profile or None, "exif": exif or None, "xmp": xmp or None}


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    info = {**_defaults, **im.encoderinfo}
    stored = storable(im)
    stored.load()
    if info.get("lora"):
        fp.write(_compress_with_lora(np.asarray(stored), stored.mode, metadata_to_store(im, info), info))
    else:
        fp.write(api.compress(np.asarray(stored), stored.mode, **metadata_to_store(im, info), threads=info.get("threads"),
                              effort=info.get("effort", tools.DEFAULT_EFFORT)))


def _save_all(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    """save(..., save_all=True, append_images=[...]): every frame of im and of the appended
    images, in order, each in the mode storable() gives it."""
    info = {**_defaults, **im.encoderinfo}
    if info.get("lora"):
        raise ValueError("lora=True tunes an adapter for one image: save the frames without it, or one by one")
    current = im.tell()
    frames = []
    for image in itertools.chain([im], info.get("append_images", [])):
        for frame in ImageSequence.Iterator(image):
            stored = storable(frame)
            frames.append((np.asarray(stored), stored.mode))
    im.seek(current)
    fp.write(api.compress_frames(frames, **metadata_to_store(im, info), threads=info.get("threads"),
                                 effort=info.get("effort", tools.DEFAULT_EFFORT)))


def _compress_with_lora(pixels: np.ndarray, mode: str, metadata: dict[str, bytes | None], info: dict) -> bytes:
    """save(..., lora=True, rank=, steps=, seconds=, device=, targets=, effort=): `unz-finetune --lora`'s options."""
    from .finetune import lora

    options = {k: info[k] for k in ("rank", "steps", "seconds", "device", "targets") if k in info}
    if "targets" in options:
        options["targets"] = tuple(options["targets"])
    with codec.coding_threads(info.get("threads")):
        return lora.compress(pixels, mode, **metadata, settings=lora.LoraSettings(**options),
                             effort=info.get("effort", lora.DEFAULT_EFFORT)).data


def _register_with_imageio() -> None:
    """Tell imageio (where it is installed) that .unz files go to pillow_unz.imageio_plugin (its
    Pillow plugin, reading multi-frame files as stacks), then to its Pillow plugin, instead of
    probing every plugin it has."""
    try:
        from imageio.config import known_extensions, known_plugins
        from imageio.config.extensions import FileExtension
        from imageio.config.plugins import PluginConfig
    except ImportError:
        return
    known_plugins["unz"] = PluginConfig(name="unz", class_name="UnzPlugin", module_name="pillow_unz.imageio_plugin")
    entries = known_extensions.setdefault(".unz", [])
    if not any("unz" in e.priority for e in entries):
        entries.insert(0, FileExtension(name=UnzImageFile.format_description, extension=".unz", priority=["unz", "pillow"],
                                        description="pillow-unz lossless images (pip install pillow-unz)"))


def register_unz_opener(**defaults) -> None:
    """Register .unz with Pillow and imageio (importing pillow_unz already does), and make
    `defaults` the options of every later save() (threads also of decoding): threads, effort,
    lora, rank, steps, seconds, device, targets. Options given to save() still win."""
    unknown = set(defaults) - SAVE_OPTIONS
    if unknown:
        raise TypeError(f"unknown .unz option(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(SAVE_OPTIONS))})")
    codec.checked_threads(defaults.get("threads"))  # a bad count fails here, not at the first save
    if "effort" in defaults:
        tools.effort_of(defaults["effort"])
    _defaults.update(defaults)
    Image.register_open(UnzImageFile.format, UnzImageFile, _accept)
    Image.register_save(UnzImageFile.format, _save)
    Image.register_save_all(UnzImageFile.format, _save_all)
    Image.register_extension(UnzImageFile.format, ".unz")
    Image.register_mime(UnzImageFile.format, MIME)
    _register_with_imageio()


register_unz_opener()
