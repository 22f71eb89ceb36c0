"""16-bit PNG files of any colour type, read and written whole: Pillow reads 16-bit colour PNG
as 8-bit and writes none, so that the command line and the benchmark would lose the low bytes.
Non-interlaced files only (Pillow's optimize writes none interlaced); the ICC profile and Exif
block come along. The rows are filtered and inflated as the deflate tool's (tools.py)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from . import format as fmt, tools

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # PNG colour type -> samples per pixel
_COLOUR_TYPE = {c: t for t, c in _CHANNELS.items()}
MODES = {sum(fmt.GROUPS[m]): m for m in fmt.WIDE_MODES}  # samples per pixel -> mode


def _chunks(data: bytes):
    pos = len(SIGNATURE)
    while pos + 8 <= len(data):
        length, tag = struct.unpack(">I4s", data[pos : pos + 8])
        if pos + 12 + length > len(data):
            raise ValueError("PNG chunk runs past the end of the file")
        payload = data[pos + 8 : pos + 8 + length]
        if struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] != zlib.crc32(tag + payload):
            raise ValueError(f"PNG chunk {tag!r} is corrupt (CRC mismatch)")
        yield tag, payload
        pos += 12 + length


def bit_depth(path: str | Path) -> int | None:
    """The bit depth of a PNG file (None for other files)."""
    with open(path, "rb") as f:
        head = f.read(26)
    return head[24] if head[:8] == SIGNATURE and head[12:16] == b"IHDR" else None


def read(path: str | Path) -> tuple[np.ndarray, str, dict[str, bytes]]:
    """decode() of a file."""
    return decode(Path(path).read_bytes())


def decode(data: bytes) -> tuple[np.ndarray, str, dict[str, bytes]]:
    """A 16-bit PNG file's pixels (uint16, (H, W) or (H, W, C)), their mode (I;16, LA;16,
    RGB;16, RGBA;16) and metadata ("icc_profile", "exif", "xmp"); ValueError for any other file."""
    if data[:8] != SIGNATURE:
        raise ValueError("not a PNG file")
    chunks = list(_chunks(data))
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise ValueError("PNG without a header")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 16 or colour not in _CHANNELS or interlace:
        raise ValueError(f"not a non-interlaced 16-bit PNG (depth {depth}, colour type {colour}, interlace {interlace})")
    fmt.check_size(width, height)
    channels = _CHANNELS[colour]
    idat = b"".join(p for t, p in chunks if t == b"IDAT")
    filtered = tools.inflate_exactly(idat, height * (width * channels * 2 + 1), "PNG image data")
    pixels = tools.png_pixels(filtered, (height, width, channels), np.uint16).astype(np.uint16)
    if channels == 1:
        pixels = pixels[..., 0]
    metadata = {}
    for tag, payload in chunks:
        if tag == b"iCCP":  # name, 0, method, zlib stream (no larger than .unz stores)
            try:
                profile = zlib.decompressobj().decompress(payload[payload.index(b"\0") + 2 :], fmt.MAX_METADATA + 1)
            except zlib.error as e:
                raise ValueError(f"corrupt ICC profile: {e}") from e
            metadata["icc_profile"] = profile
        elif tag == b"eXIf":
            metadata["exif"] = b"Exif\0\0" + payload  # as Pillow gives Exif blocks
        elif tag == b"iTXt" and payload.startswith(_XMP_KEYWORD):
            metadata["xmp"] = _international_text(payload)
    return pixels, MODES[channels], metadata


# An iTXt chunk's keyword, compression flag and method, empty language and translated keyword.
_XMP_KEYWORD = b"XML:com.adobe.xmp\0"


def _international_text(payload: bytes) -> bytes:
    """The text of an iTXt chunk (keyword, 0, compression flag, method, language, 0,
    translated keyword, 0, text): inflated if compressed, no larger than .unz stores."""
    keyword_end = payload.index(b"\0")
    flag = payload[keyword_end + 1 : keyword_end + 2]
    try:
        text = payload[payload.index(b"\0", payload.index(b"\0", keyword_end + 3) + 1) + 1 :]
        return zlib.decompressobj().decompress(text, fmt.MAX_METADATA + 1) if flag == b"\1" else text
    except (ValueError, zlib.error) as e:
        raise ValueError(f"corrupt iTXt chunk: {e}") from e


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def encode(pixels: np.ndarray, icc_profile: bytes | None = None, exif: bytes | None = None, xmp: bytes | None = None,
           level: int = 9) -> bytes:
    """uint16 pixels (H, W) or (H, W, C), C 1 to 4, as 16-bit PNG bytes."""
    height, width = pixels.shape[:2]
    pixels = pixels.reshape(height, width, -1)
    header = struct.pack(">IIBBBBB", width, height, 16, _COLOUR_TYPE[pixels.shape[2]], 0, 0, 0)
    parts = [SIGNATURE, _chunk(b"IHDR", header)]
    if icc_profile:
        parts.append(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile)))
    if exif:
        parts.append(_chunk(b"eXIf", exif.removeprefix(b"Exif\0\0")))
    if xmp:
        parts.append(_chunk(b"iTXt", _XMP_KEYWORD + b"\0\0\0\0" + xmp))
    parts += [_chunk(b"IDAT", zlib.compress(tools.png_rows(pixels).tobytes(), level)), _chunk(b"IEND", b"")]
    return b"".join(parts)
