"""Whole images to .unz bytes and back: splits a mode into plane groups, runs the codec on each
with the right model, and checks the pixel hash and model identity of every file it decodes."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from . import codec, format as fmt
from .weights import ModelSet, load_models


@dataclass
class DecodedImage:
    mode: str
    pixels: np.ndarray  # (H, W) for L, (H, W, C) otherwise, uint8
    info: dict[str, bytes] = field(default_factory=dict)


def _split(pixels: np.ndarray, mode: str) -> list[np.ndarray]:
    """(H, W[, C]) array -> the (C, H, W) plane groups of fmt.GROUPS[mode]."""
    planes = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    groups, start = [], 0
    for n in fmt.GROUPS[mode]:
        groups.append(np.ascontiguousarray(planes[start : start + n]))
        start += n
    return groups


def _join(groups: list[np.ndarray]) -> np.ndarray:
    planes = np.concatenate(groups)
    return planes[0] if len(planes) == 1 else np.ascontiguousarray(planes.transpose(1, 2, 0))


def compress(
    pixels: np.ndarray,
    mode: str,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    models: ModelSet | None = None,
) -> bytes:
    """Encode an 8-bit image: pixels (H, W) for mode L, (H, W, C) for LA, RGB and RGBA."""
    if mode not in fmt.GROUPS:
        raise ValueError(f"mode {mode!r} cannot be coded (supported: {', '.join(fmt.GROUPS)})")
    expected_ndim = 2 if mode == "L" else 3
    if pixels.dtype != np.uint8 or pixels.ndim != expected_ndim or (pixels.ndim == 3 and pixels.shape[2] != len(mode)):
        raise ValueError(f"mode {mode} needs a uint8 array of shape {'(H, W)' if mode == 'L' else f'(H, W, {len(mode)})'}")
    height, width = pixels.shape[:2]
    fmt.check_size(width, height)
    models = models or load_models()
    pixels = np.ascontiguousarray(pixels)
    header = fmt.Header(mode, width, height, models.model_id, fmt.pixel_hash(pixels.tobytes()))
    groups = [codec.encode_planes(models.for_channels(len(g)), g) for g in _split(pixels, mode)]
    metadata = {k: v for k, v in (("icc_profile", icc_profile), ("exif", exif)) if v}
    return fmt.to_bytes(fmt.UnzFile(header, metadata, None, groups))


def decode_body(f: BinaryIO, header: fmt.Header, metadata: dict[str, bytes], models: ModelSet | None = None) -> np.ndarray:
    """Pixels of a file whose header and metadata have been read (the Pillow plugin's path)."""
    unz = fmt.read_body(f, header, metadata)
    models = models or load_models()
    if header.model_id != models.model_id:
        raise fmt.UnzFormatError(
            f"file was coded with model {header.model_id.hex()}, this pillow-unz has {models.model_id.hex()}"
        )
    if unz.adapter is not None:
        raise fmt.UnzFormatError("file carries a per-image adapter, which this version cannot apply")
    groups = [
        codec.decode_planes(models.for_channels(n), coded, header.height, header.width)
        for n, coded in zip(fmt.GROUPS[header.mode], unz.groups)
    ]
    pixels = _join(groups)
    if fmt.pixel_hash(pixels.tobytes()) != header.pixel_hash:
        raise fmt.ChecksumError("decoded pixels do not match the file's checksum: corrupt file or decoder mismatch")
    return pixels


def decompress(data: bytes | BinaryIO, models: ModelSet | None = None) -> DecodedImage:
    """Decode .unz bytes (or a seekable binary file)."""
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    header, metadata = fmt.read_header(f)
    return DecodedImage(header.mode, decode_body(f, header, metadata, models), metadata)
