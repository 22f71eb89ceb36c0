"""The .unz container (docs/FORMAT.md): a fixed header, then CRC-protected chunks.

    header  magic "\\x89UNZ", version, mode, flags, width, height, model id, pixel hash, header CRC
    chunks  [ICCP] [EXIF] [ADPT] (ZLAT PIXL) per plane group, UEND

Readers check every length against the bytes that are really there before reading, so a corrupt
or hostile file costs no more memory than its own size and raises UnzFormatError (a ValueError).
"""
from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from PIL import Image

from .codec import CodedPlanes

MAGIC = b"\x89UNZ"
VERSION = 1
MODES = ("L", "LA", "RGB", "RGBA")  # stored as index + 1
# Plane groups per mode: (number of colour planes coded together, ...); alpha is its own group.
GROUPS = {"L": (1,), "LA": (1, 1), "RGB": (3,), "RGBA": (3, 1)}
MAX_SIDE = 1 << 20

_HEADER = struct.Struct("<4sBBHII8s8s")  # then a CRC-32 of these bytes
_CHUNK = struct.Struct("<4sI")  # tag, payload length; payload; CRC-32 of tag and payload
_LATENT = struct.Struct("<BHH")  # z channels, height, width; then the z stream
HEADER_SIZE = _HEADER.size + 4
METADATA_TAGS = {b"ICCP": "icc_profile", b"EXIF": "exif"}


class UnzFormatError(OSError, ValueError):
    """A file that is not a valid .unz file: an OSError as Pillow's errors for broken files are,
    and a ValueError as the coder's are."""


class ChecksumError(UnzFormatError):
    """Decoded pixels differ from those that were encoded."""


@dataclass
class Header:
    mode: str
    width: int
    height: int
    model_id: bytes
    pixel_hash: bytes


@dataclass
class UnzFile:
    header: Header
    metadata: dict[str, bytes] = field(default_factory=dict)  # "icc_profile", "exif"
    adapter: bytes | None = None  # reserved for per-image adapters
    groups: list[CodedPlanes] = field(default_factory=list)
    truncated: bool = False  # read with truncated_ok from a file that ends early


def pixel_hash(pixels: bytes) -> bytes:
    return hashlib.blake2b(pixels, digest_size=8).digest()


def check_size(width: int, height: int) -> None:
    """Refuse absurd sizes as Pillow refuses decompression bombs."""
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise UnzFormatError(f"image size {width}x{height} is out of range")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > 2 * limit:
        raise Image.DecompressionBombError(
            f"Image size ({width * height} pixels) exceeds limit of {2 * limit} pixels, "
            "could be decompression bomb DOS attack."
        )


def write(f: BinaryIO, unz: UnzFile) -> None:
    h = unz.header
    head = _HEADER.pack(MAGIC, VERSION, MODES.index(h.mode) + 1, 0, h.width, h.height, h.model_id, h.pixel_hash)
    f.write(head + struct.pack("<I", zlib.crc32(head)))
    for tag, key in METADATA_TAGS.items():
        if unz.metadata.get(key):
            _write_chunk(f, tag, unz.metadata[key])
    if unz.adapter is not None:
        _write_chunk(f, b"ADPT", unz.adapter)
    for g in unz.groups:
        _write_chunk(f, b"ZLAT", _LATENT.pack(*g.latent_shape) + g.latent)
        _write_chunk(f, b"PIXL", g.pixels)
    _write_chunk(f, b"UEND", b"")


def _write_chunk(f: BinaryIO, tag: bytes, payload: bytes) -> None:
    f.write(_CHUNK.pack(tag, len(payload)) + payload + struct.pack("<I", zlib.crc32(tag + payload)))


def to_bytes(unz: UnzFile) -> bytes:
    buf = io.BytesIO()
    write(buf, unz)
    return buf.getvalue()


class _Reader:
    """Bounds-checked reads from a seekable binary file."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        start = f.tell()
        self.end = f.seek(0, io.SEEK_END)
        f.seek(start)

    def read(self, n: int, what: str) -> bytes:
        if n > self.end - self.f.tell():
            raise UnzFormatError(f"truncated file: {what} needs {n} bytes, {self.end - self.f.tell()} left")
        data = self.f.read(n)
        if len(data) != n:
            raise UnzFormatError(f"truncated file while reading {what}")
        return data

    def chunk(self) -> tuple[bytes, bytes]:
        tag, length = _CHUNK.unpack(self.read(_CHUNK.size, "chunk header"))
        payload = self.read(length, f"chunk {tag!r}")
        (crc,) = struct.unpack("<I", self.read(4, f"CRC of chunk {tag!r}"))
        if crc != zlib.crc32(tag + payload):
            raise UnzFormatError(f"chunk {tag!r} is corrupt (CRC mismatch)")
        return tag, payload

    def truncated_chunk(self) -> tuple[bytes, bytes]:
        """(tag, the payload bytes still there) of a chunk the file ends inside (b"" as the tag
        where even its header is cut)."""
        rest = self.f.read()
        if len(rest) < _CHUNK.size:
            return b"", b""
        tag, length = _CHUNK.unpack(rest[: _CHUNK.size])
        return tag, rest[_CHUNK.size : _CHUNK.size + length]

    def whole_chunk_follows(self) -> bool:
        """Whether the next chunk is all there (header, payload and CRC)."""
        pos = self.f.tell()
        head = self.f.read(_CHUNK.size)
        self.f.seek(pos)
        return len(head) == _CHUNK.size and _CHUNK.unpack(head)[1] + _CHUNK.size + 4 <= self.end - pos

    def peek_tag(self) -> bytes:
        pos = self.f.tell()
        tag = self.f.read(4)
        self.f.seek(pos)
        return tag


def accept(prefix: bytes) -> bool:
    return prefix[:4] == MAGIC


def read_header(f: BinaryIO) -> tuple[Header, dict[str, bytes]]:
    """The header and the metadata chunks, leaving `f` at the first coded chunk."""
    r = _Reader(f)
    raw = r.read(HEADER_SIZE, "header")
    magic, version, mode, flags, width, height, model_id, phash = _HEADER.unpack(raw[:-4])
    if magic != MAGIC:
        raise UnzFormatError("not a .unz file (bad magic)")
    if struct.unpack("<I", raw[-4:])[0] != zlib.crc32(raw[:-4]):
        raise UnzFormatError("corrupt .unz header (CRC mismatch)")
    if version != VERSION:
        raise UnzFormatError(f"unsupported .unz version {version} (this reader knows {VERSION})")
    if not 1 <= mode <= len(MODES) or flags != 0:
        raise UnzFormatError(f"unsupported mode {mode} or flags {flags}")
    check_size(width, height)
    metadata = {}
    while r.peek_tag() in METADATA_TAGS:
        tag, payload = r.chunk()
        metadata[METADATA_TAGS[tag]] = payload
    return Header(MODES[mode - 1], width, height, model_id, phash), metadata


def read(f: BinaryIO) -> UnzFile:
    """A whole file, every chunk checked."""
    header, metadata = read_header(f)
    return read_body(f, header, metadata)


def read_body(f: BinaryIO, header: Header, metadata: dict[str, bytes], truncated_ok: bool = False) -> UnzFile:
    """The chunks after the metadata, as left by read_header. With truncated_ok (Pillow's
    ImageFile.LOAD_TRUNCATED_IMAGES), a file that ends early gives the plane groups it holds
    (the last one incomplete if the file ends inside its PIXL chunk) and `truncated` set; every
    whole chunk is checked as ever."""
    r = _Reader(f)
    unz = UnzFile(header, metadata)

    def ends_here() -> bool:
        if truncated_ok and not r.whole_chunk_follows():
            unz.truncated = True
        return unz.truncated

    if not ends_here() and r.peek_tag() == b"ADPT":
        unz.adapter = r.chunk()[1]
    for _ in GROUPS[header.mode]:
        if ends_here():
            return unz
        tag, payload = r.chunk()
        if tag != b"ZLAT":
            raise UnzFormatError(f"expected a ZLAT chunk, found {tag!r}")
        if len(payload) < _LATENT.size:
            raise UnzFormatError("ZLAT chunk too short")
        shape = _LATENT.unpack(payload[: _LATENT.size])
        complete = not ends_here()
        tag, pixels = r.chunk() if complete else r.truncated_chunk()
        if tag != b"PIXL":
            if not complete:
                return unz  # cut inside the chunk's header
            raise UnzFormatError(f"expected a PIXL chunk, found {tag!r}")
        unz.groups.append(CodedPlanes(shape, payload[_LATENT.size :], pixels, complete))
    if ends_here():
        return unz
    tag, payload = r.chunk()
    if tag != b"UEND" or payload:
        raise UnzFormatError(f"expected the UEND chunk, found {tag!r}")
    return unz
