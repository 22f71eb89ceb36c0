"""Whole images to .unz bytes and back: splits a mode into plane groups, runs the codec on each
with the right model, and checks the pixel hash and model identity of every file it decodes."""
from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import BinaryIO, Iterator, Sequence

import numpy as np

from . import codec, format as fmt, tools
from .repeats import Repeats
from .weights import ModelSet, load_models, models_for


@dataclass
class DecodedImage:
    mode: str  # L, LA, RGB, RGBA; I;16, LA;16, RGB;16, RGBA;16 (16-bit samples)
    pixels: np.ndarray  # (H, W) for L and I;16, (H, W, C) otherwise; uint8, or uint16 for 16-bit modes
    info: dict[str, bytes] = field(default_factory=dict)


# The mode of 16-bit samples of each mode's shape: a uint16 array of mode "L" (or "I;16") is
# stored as I;16, of mode "RGB" (or "RGB;16") as RGB;16, and so on.
_WIDE = {**dict(zip(fmt.MODES[:4], fmt.MODES[4:])), **{m: m for m in fmt.WIDE_MODES}}
# The mode compress takes for an image of C channels.
MODE_OF_CHANNELS = {sum(fmt.GROUPS[m]): m for m in fmt.MODES[:4]}


def stored_mode(pixels: np.ndarray, mode: str) -> str:
    """The mode an array of pixels given as `mode` is stored in: its own for uint8, the 16-bit
    mode of its shape for uint16."""
    if pixels.dtype == np.uint16 and mode in _WIDE:
        return _WIDE[mode]
    if pixels.dtype == np.uint8 and mode in fmt.GROUPS and mode not in fmt.WIDE_MODES:
        return mode
    if mode not in _WIDE:
        raise ValueError(f"mode {mode!r} cannot be coded (supported: {', '.join(fmt.MODES)})")
    raise ValueError(f"mode {mode} needs a uint8 or uint16 array, not {pixels.dtype}")


def as_frame(image: np.ndarray) -> tuple[np.ndarray, str]:
    """An image (H, W) or (H, W, C), C 1 to 4, as compress takes it: (pixels, mode)."""
    if image.ndim == 2:
        return image, "L"
    if image.ndim != 3 or image.shape[-1] not in MODE_OF_CHANNELS:
        raise ValueError(f"an image of shape {image.shape} cannot be coded: (H, W), or (H, W, C) of 1 to 4 channels")
    return (image[..., 0], "L") if image.shape[-1] == 1 else (image, MODE_OF_CHANNELS[image.shape[-1]])


def pixel_layout(header: fmt.Header) -> tuple[tuple[int, ...], np.dtype]:
    """The shape, (H, W) or (H, W, C), and sample type of a frame's pixels."""
    channels = sum(fmt.GROUPS[header.mode])
    shape = (header.height, header.width, channels)[: 2 if channels == 1 else 3]
    return shape, np.dtype(np.uint16 if header.mode in fmt.WIDE_MODES else np.uint8)


def _hashable(pixels: np.ndarray) -> np.ndarray:
    """The samples as the pixel hash reads them: bytes, or little-endian 16-bit words."""
    return np.ascontiguousarray(pixels, dtype="<u2" if pixels.dtype.itemsize == 2 else np.uint8)


def _split(pixels: np.ndarray, mode: str) -> list[np.ndarray]:
    """(H, W[, C]) array -> the (C, H, W) plane groups of fmt.GROUPS[mode], as views (the codec
    copies each group once, into its coding order)."""
    planes = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    groups, start = [], 0
    for n in fmt.GROUPS[mode]:
        groups.append(planes[start : start + n])
        start += n
    return groups


def _join(planes: Sequence[np.ndarray]) -> np.ndarray:
    """Planes (H, W) -> the (H, W) array of the one, or the (H, W, C) array of several, written once."""
    if len(planes) == 1:
        return np.ascontiguousarray(planes[0])
    out = np.empty((*planes[0].shape, len(planes)), planes[0].dtype)
    for c, plane in enumerate(planes):
        out[..., c] = plane
    return out


def prepare(pixels: np.ndarray, mode: str, models: ModelSet,
            effort: int = tools.DEFAULT_EFFORT) -> tuple[fmt.Header, list[np.ndarray]]:
    """Check an image, pixels (H, W) for mode L and (H, W, C) for LA, RGB and RGBA, uint8 or
    uint16 (stored_mode); return its header (for coding at `effort`) and its plane groups
    (C, H, W), ready to code."""
    pixels = np.asarray(pixels)
    pixels = pixels.astype(pixels.dtype.newbyteorder("="), copy=False)  # big-endian 16-bit arrays too
    mode = stored_mode(pixels, mode)
    channels = sum(fmt.GROUPS[mode])
    expected = "(H, W)" if channels == 1 else f"(H, W, {channels})"
    if pixels.ndim != (2 if channels == 1 else 3) or (pixels.ndim == 3 and pixels.shape[2] != channels):
        raise ValueError(f"mode {mode} needs an array of shape {expected}, not {pixels.shape}")
    height, width = pixels.shape[:2]
    fmt.check_size(width, height)
    pixels = np.ascontiguousarray(pixels)
    header = fmt.Header(mode, width, height, models.model_id, fmt.pixel_hash(_hashable(pixels)), effort)
    return header, _split(pixels, mode)


def metadata_of(icc_profile: bytes | None, exif: bytes | None, xmp: bytes | None) -> dict[str, bytes]:
    return {k: v for k, v in (("icc_profile", icc_profile), ("exif", exif), ("xmp", xmp)) if v}


def compress(
    pixels: np.ndarray,
    mode: str,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    xmp: bytes | None = None,
    models: ModelSet | None = None,
    threads: int | None = None,
    effort: int = tools.DEFAULT_EFFORT,
) -> bytes:
    """Encode an image: pixels (H, W) for mode L, (H, W, C) for LA, RGB and RGBA, uint8, or
    uint16 for 16-bit samples (stored as I;16, LA;16, RGB;16, RGBA;16, which may also be given
    as the mode), on `threads` threads (default: one per core), at `effort` 1 (fastest) to 9
    (smallest; tools.EFFORTS). (pillow_unz.finetune.lora.compress does the same with a
    per-image adapter.)"""
    return compress_frames([(pixels, mode)], icc_profile, exif, xmp, models, threads, effort)


def compress_frames(
    frames: Sequence[tuple[np.ndarray, str]],
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    xmp: bytes | None = None,
    models: ModelSet | None = None,
    threads: int | None = None,
    effort: int = tools.DEFAULT_EFFORT,
) -> bytes:
    """Encode several images (pages, slices of a stack, frames of a capture), each (pixels,
    mode) as compress takes them, into one file; each frame decodes without the others."""
    if not frames:
        raise ValueError("no frames to code")
    tools.effort_of(effort)  # before any work
    models = models or load_models()
    with codec.coding_threads(threads):
        first, *rest = [encode_frame(*prepare(pixels, mode, models, effort), models, effort) for pixels, mode in frames]
    return fmt.to_bytes(fmt.UnzFile(first.header, metadata_of(icc_profile, exif, xmp), None, first.groups, frames=rest,
                                    repeats=first.repeats))


def encode_frame(header: fmt.Header, groups: list[np.ndarray], models: ModelSet,
                 effort: int = tools.DEFAULT_EFFORT) -> fmt.UnzFrame:
    """A frame's plane groups (prepare's) coded at `effort`: as they are, and where enough of
    its rows and columns repeat, without them (repeats.py); the smaller."""
    def coded(repeats: Repeats | None) -> fmt.UnzFrame:
        planes = groups if repeats is None else [repeats.forward(g) for g in groups]
        return fmt.UnzFrame(header, [codec.encode_planes(models.for_channels(len(g)), g, effort) for g in planes], repeats)

    repeats = Repeats.of(groups)
    return min([coded(None)] + ([coded(repeats)] if repeats else []), key=fmt.coded_size)


def adapter_module() -> ModuleType:
    """pillow_unz.adapter, imported on demand: it needs torch, which only files with a per-image
    adapter do."""
    try:
        from . import adapter
    except ImportError as e:
        raise ImportError(
            f"this file holds a per-image adapter, which decodes with the network: pip install 'pillow-unz[network]' ({e})"
        ) from e
    return adapter


def decode_rows(
    f: BinaryIO,
    header: fmt.Header,
    metadata: dict[str, bytes],
    models: ModelSet | None = None,
    truncated_ok: bool = False,
    first_frame: bool = True,
) -> Iterator[tuple[range, np.ndarray]]:
    """The pixels of the frame whose chunks start at f's position (the Pillow plugin's path):
    the first frame's, after read_header, or another's (fmt.index_frames gives its header and
    offset), a few bands of rows at a time from the top: (rows, pixels (len(rows), W[, C])), so
    that no copy of the whole image exists but the caller's. The file is read and every stream
    checked before the first rows come; the pixel hash is checked after the last
    (ChecksumError). With truncated_ok, a file that ends early gives the bands it still holds
    and zeros."""
    unz = fmt.read_body(f, header, metadata, truncated_ok, first_frame)
    models = models_for(header.model_id) if models is None else models
    if models is None or header.model_id != models.model_id:
        raise fmt.UnzFormatError(
            f"file was coded with model {header.model_id.hex()} (another release of pillow-unz or of its weights), "
            f"this pillow-unz has {(models or load_models()).model_id.hex()}: decode it with the release that wrote it"
        )
    group_models = [models.for_channels(n) for n in fmt.GROUPS[header.mode]]
    if unz.adapter is not None:
        adapter = adapter_module()
        networks = [models.network(n) for n in fmt.GROUPS[header.mode]]
        try:
            group_adapters = adapter.decode(unz.adapter, networks)
        except ValueError as e:
            raise fmt.UnzFormatError(f"corrupt adapter chunk: {e}") from e
        group_models = [replace(m, network=adapter.apply(n, a)) if a else m
                        for m, n, a in zip(group_models, networks, group_adapters)]
    shape = fmt.coded_shape(header, unz.repeats)
    groups = [codec.decode_chunks(m, coded, *shape) for m, coded in zip(group_models, unz.groups)]
    missing = fmt.GROUPS[header.mode][len(groups) :]  # of a truncated file
    return _rows_of(header, groups, missing, unz.repeats, check_hash=not unz.truncated)


def _rows_of(header: fmt.Header, groups: list[Iterator[tuple[range, list[np.ndarray]]]], missing: Sequence[int],
             repeats: Repeats | None, check_hash: bool) -> Iterator[tuple[range, np.ndarray]]:
    """The groups' chunks of coded rows, joined (and zeros for the missing groups), their
    repeated rows and columns put back, hashed as they go."""
    dtype = pixel_layout(header)[1]
    height, width = fmt.coded_shape(header, repeats)
    hasher = fmt.pixel_hasher()
    if not groups:  # a file cut before its first group: all zeros
        groups = [iter([(range(height), [])])]
    for parts in zip(*groups):  # every group comes in the same chunks of rows
        rows = parts[0][0]
        if any(p.dtype != dtype for _, planes in parts for p in planes):
            raise fmt.UnzFormatError(f"plane group of another sample size than mode {header.mode}: corrupt")
        planes = [*(p for _, group in parts for p in group), *np.zeros((sum(missing), len(rows), width), dtype)]
        pixels = _join(planes)
        if repeats:
            rows, pixels = repeats.expand(rows, pixels)
        hasher.update(_hashable(pixels))
        yield rows, pixels
    if check_hash and hasher.digest() != header.pixel_hash:
        raise fmt.ChecksumError("decoded pixels do not match the file's checksum: corrupt file or decoder mismatch")


def into_array(header: fmt.Header, rows_of_image: Iterator[tuple[range, np.ndarray]]) -> np.ndarray:
    """The chunks of rows of decode_rows, written into one array (H, W[, C])."""
    out = np.empty(*pixel_layout(header))
    for rows, pixels in rows_of_image:
        out[rows.start : rows.stop] = pixels
    return out


def _open(data: bytes | BinaryIO) -> tuple[BinaryIO, fmt.Header, dict[str, bytes]]:
    """A seekable file of .unz bytes (or the file itself), read up to its first coded chunk."""
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    return (f, *fmt.read_header(f))


def decompress(data: bytes | BinaryIO, models: ModelSet | None = None, threads: int | None = None) -> DecodedImage:
    """Decode .unz bytes (or a seekable binary file) on `threads` threads (default: one per core);
    of a file of several frames, the first."""
    f, header, metadata = _open(data)
    with codec.coding_threads(threads):
        return DecodedImage(header.mode, into_array(header, decode_rows(f, header, metadata, models)), metadata)


def decompress_frames(data: bytes | BinaryIO, models: ModelSet | None = None, threads: int | None = None) -> list[DecodedImage]:
    """Every frame of .unz bytes (or a seekable binary file), in order."""
    f, header, metadata = _open(data)
    frames = []
    with codec.coding_threads(threads):
        for i, (frame, offset) in enumerate(fmt.index_frames(f, header)):
            f.seek(offset)
            pixels = into_array(frame, decode_rows(f, frame, metadata, models, first_frame=i == 0))
            frames.append(DecodedImage(frame.mode, pixels, metadata))
    return frames
