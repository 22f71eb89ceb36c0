"""The .unz container (docs/FORMAT.md): a fixed header, then CRC-protected chunks.

    header  magic "\\x89UNZ", version, mode, effort, flags, width, height, model id, pixel hash, header CRC
    chunks  [ICCP] [EXIF] [XMP ] [ADPT] [RPTS] PIXL per plane group, then for every further frame
            FRAM [RPTS] and PIXL per plane group; UEND

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

from . import _coder, samples, tools
from .codec import CodedPlanes
from .repeats import Repeats

MAGIC = b"\x89UNZ"
# Version 5: the learned photo tool (band tool 4, with the weights' context networks) and the
# encoder's effort in the header. Version 6: the frame transform that leaves out repeated rows
# and columns (RPTS), and a sample transform before the 8-bit planes too (16-bit ones had one).
# Version 7: the statistics key of every photo band (tools.photo_header). Version 8: metadata
# chunks deflated where that is smaller, and XMP. Version 9: the coder refines the distribution
# of every 8-bit photo sample (csrc/residual_shape.h). Version 10: the context networks' online
# readout (csrc/online_readout.h). Version 11: bands as tall as the encoder chooses (a byte of
# every PIXL chunk; before, 256 rows at most). Version 12: the fit memory of every photo band's
# classical prediction (tools.photo_header; before, the default). Version 13: photo bands code each
# row channel by channel (before, pixel by pixel): the same model, a faster order to decode.
VERSION = 13
READ_VERSIONS = (5, 6, 7, 8, 9, 10, 11, 12, 13)
BANDS_VERSION = 11  # the first whose PIXL chunks give their bands' height
# Versions 1 (one frame), 2 (frames) and 3 (16-bit samples) carried z; pillow-unz 0.1 reads them.
LATENT_VERSIONS = (1, 2, 3)
# Version 4 (no z, no context networks): pillow-unz 0.2 reads it.
CLASSICAL_VERSION = 4
# Stored as index + 1. The 16-bit modes: "I;16" as Pillow names 16-bit gray, the others after it.
MODES = ("L", "LA", "RGB", "RGBA", "I;16", "LA;16", "RGB;16", "RGBA;16")
WIDE_MODES = frozenset(MODES[4:])
# Plane groups per mode: (number of colour planes coded together, ...); alpha is its own group.
GROUPS = {"L": (1,), "LA": (1, 1), "RGB": (3,), "RGBA": (3, 1),
          "I;16": (1,), "LA;16": (1, 1), "RGB;16": (3,), "RGBA;16": (3, 1)}
MAX_SIDE = 1 << 20

_HEADER = struct.Struct("<4sBBBBII8s8s")  # then a CRC-32 of these bytes
_CHUNK = struct.Struct("<4sI")  # tag, payload length; payload; CRC-32 of tag and payload
_FRAME = struct.Struct("<BII8s")  # a further frame's mode, width, height, pixel hash
HEADER_SIZE = _HEADER.size + 4
METADATA_TAGS = {b"ICCP": "icc_profile", b"EXIF": "exif", b"XMP ": "xmp"}
MAX_METADATA = 16 << 20  # bytes of one metadata block: far above real ICC profiles, Exif and XMP
# How a metadata chunk of version 8 holds its block (the payload's first byte): verbatim, or
# deflated (zlib) after its size (u32). Versions 5 to 7 hold ICC profiles and Exif verbatim.
STORED, DEFLATED = 0, 1
_DEFLATED_SIZE = struct.Struct("<I")
MAX_METADATA_CHUNK = 1 + _DEFLATED_SIZE.size + MAX_METADATA  # a deflated block's payload may exceed its size


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
    effort: int = tools.DEFAULT_EFFORT  # the encoder's (the file's, for every frame)
    version: int = VERSION  # as read


@dataclass
class UnzFile:
    header: Header
    metadata: dict[str, bytes] = field(default_factory=dict)  # "icc_profile", "exif", "xmp"
    adapter: bytes | None = None  # per-image adapters (of the first frame)
    groups: list[CodedPlanes] = field(default_factory=list)
    truncated: bool = False  # read with truncated_ok from a file that ends early
    frames: list[UnzFrame] = field(default_factory=list)  # the frames after the first
    repeats: Repeats | None = None  # the first frame's rows and columns that its groups leave out


@dataclass
class UnzFrame:
    """A frame after the first: its own mode, size and pixel hash (the model id is the file's)."""

    header: Header
    groups: list[CodedPlanes] = field(default_factory=list)
    repeats: Repeats | None = None  # the rows and columns that its groups leave out


def coded_shape(header: Header, repeats: Repeats | None) -> tuple[int, int]:
    """The height and width of a frame's coded planes."""
    return repeats.shape if repeats else (header.height, header.width)


def coded_size(frame: UnzFrame) -> int:
    """The bytes of a frame's coded chunks (RPTS, PIXL, as _write_coded writes them), framing
    included: counted, not written (a large photo's would be a copy of tens of MB)."""
    framing = _CHUNK.size + 4
    size = sum(framing + len(_pixels_head(g)) + len(g.pixels) for g in frame.groups)
    return size + (framing + len(frame.repeats.to_bytes()) if frame.repeats else 0)


def pixel_hasher() -> "hashlib.blake2b":
    """The pixel hash, to be fed the samples' bytes in order (update), in as many parts as wanted."""
    return hashlib.blake2b(digest_size=8)


def pixel_hash(pixels: bytes | memoryview) -> bytes:
    """Of the samples' bytes: bytes, or a C-contiguous array (hashed in place, not copied)."""
    hasher = pixel_hasher()
    hasher.update(pixels)
    return hasher.digest()


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
    for key, value in unz.metadata.items():
        if len(value) > MAX_METADATA:
            raise ValueError(f"{key} is {len(value)} bytes, more than .unz stores ({MAX_METADATA})")
    h = unz.header
    head = _HEADER.pack(MAGIC, VERSION, MODES.index(h.mode) + 1, h.effort, 0, h.width, h.height, h.model_id, h.pixel_hash)
    f.write(head + struct.pack("<I", zlib.crc32(head)))
    for tag, key in METADATA_TAGS.items():
        if unz.metadata.get(key):
            _write_chunk(f, tag, _packed_metadata(unz.metadata[key]))
    if unz.adapter is not None:
        _write_chunk(f, b"ADPT", unz.adapter)
    _write_coded(f, unz.groups, unz.repeats)
    for frame in unz.frames:
        fh = frame.header
        _write_chunk(f, b"FRAM", _FRAME.pack(MODES.index(fh.mode) + 1, fh.width, fh.height, fh.pixel_hash))
        _write_coded(f, frame.groups, frame.repeats)
    _write_chunk(f, b"UEND", b"")


def _write_coded(f: BinaryIO, groups: list[CodedPlanes], repeats: Repeats | None) -> None:
    if repeats is not None:
        _write_chunk(f, b"RPTS", repeats.to_bytes())
    for g in groups:
        _write_chunk(f, b"PIXL", _pixels_head(g) + g.pixels)


def _pixels_head(g: CodedPlanes) -> bytes:
    """What a PIXL chunk holds before its band table: the sample transform, the band height."""
    if g.band_height % _coder.BAND_ROWS or not 1 <= g.band_height <= _coder.MAX_BAND_HEIGHT:
        raise ValueError(f"band height {g.band_height} is not a multiple of {_coder.BAND_ROWS} rows "
                         f"from 1 to {_coder.MAX_BAND_HEIGHT}")
    return (g.samples.to_bytes() if g.samples else b"") + bytes([g.band_height // _coder.BAND_ROWS])


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

    def chunk(self, limit: int | None = None) -> tuple[bytes, bytes]:
        """The next chunk's tag and payload, CRC checked; a payload over `limit` is refused
        before it is read."""
        tag, length = _CHUNK.unpack(self.read(_CHUNK.size, "chunk header"))
        if limit is not None and length > limit:
            raise UnzFormatError(f"chunk {tag!r} of {length} bytes is over its limit of {limit}")
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
    magic, version, mode, effort, flags, width, height, model_id, phash = _HEADER.unpack(raw[:-4])
    if magic != MAGIC:
        raise UnzFormatError("not a .unz file (bad magic)")
    if struct.unpack("<I", raw[-4:])[0] != zlib.crc32(raw[:-4]):
        raise UnzFormatError("corrupt .unz header (CRC mismatch)")
    if version in LATENT_VERSIONS:
        raise UnzFormatError(
            f"unsupported .unz version {version}: an earlier format (with a coded latent), "
            f"which pillow-unz 0.1 decodes; this reader knows version {VERSION}"
        )
    if version == CLASSICAL_VERSION:
        raise UnzFormatError(
            f"unsupported .unz version {version}: an earlier format (without context networks), "
            f"which pillow-unz 0.2 decodes; this reader knows version {VERSION}"
        )
    if version not in READ_VERSIONS:
        raise UnzFormatError(f"unsupported .unz version {version} (this reader knows versions 5 to {VERSION})")
    if flags != 0:
        raise UnzFormatError(f"unsupported flags {flags}")
    if effort not in tools.EFFORTS:
        raise UnzFormatError(f"unsupported effort {effort}")
    header = _frame_header(mode, width, height, model_id, phash, effort, version)
    metadata = {}
    packed = version >= 8
    while (tag := r.peek_tag()) in METADATA_TAGS and (packed or tag != b"XMP "):
        _, payload = r.chunk(MAX_METADATA_CHUNK if packed else MAX_METADATA)
        metadata[METADATA_TAGS[tag]] = _unpacked_metadata(tag, payload) if packed else payload
    return header, metadata


def _packed_metadata(block: bytes) -> bytes:
    """A metadata chunk's payload: the block deflated where that is smaller (the sRGB profile of
    two eval photos, 3,144 bytes, takes 2,599), else verbatim."""
    deflated = zlib.compress(block, 9)
    if 1 + _DEFLATED_SIZE.size + len(deflated) < 1 + len(block):
        return bytes([DEFLATED]) + _DEFLATED_SIZE.pack(len(block)) + deflated
    return bytes([STORED]) + block


def _unpacked_metadata(tag: bytes, payload: bytes) -> bytes:
    """Inverse of _packed_metadata; a block over MAX_METADATA is refused before it is inflated."""
    method, body = payload[:1], payload[1:]
    if method == bytes([STORED]):
        return body
    if method != bytes([DEFLATED]) or len(body) < _DEFLATED_SIZE.size:
        raise UnzFormatError(f"chunk {tag!r}: unknown storage {payload[:1].hex() or 'missing'}")
    (size,) = _DEFLATED_SIZE.unpack(body[: _DEFLATED_SIZE.size])
    if size > MAX_METADATA:
        raise UnzFormatError(f"chunk {tag!r} inflates to {size} bytes, over its limit of {MAX_METADATA}")
    try:
        return tools.inflate_exactly(body[_DEFLATED_SIZE.size :], size, f"chunk {tag!r}")
    except ValueError as e:
        raise UnzFormatError(str(e)) from e


def _frame_header(mode: int, width: int, height: int, model_id: bytes, phash: bytes, effort: int,
                  version: int) -> Header:
    if not 1 <= mode <= len(MODES):
        raise UnzFormatError(f"unsupported mode {mode}")
    check_size(width, height)
    return Header(MODES[mode - 1], width, height, model_id, phash, effort, version)


def _further_frame(payload: bytes, first: Header) -> Header:
    """The header of a frame after the first, from its FRAM chunk."""
    if len(payload) != _FRAME.size:
        raise UnzFormatError("FRAM chunk has the wrong size")
    mode, width, height, phash = _FRAME.unpack(payload)
    return _frame_header(mode, width, height, first.model_id, phash, first.effort, first.version)


def index_frames(f: BinaryIO, header: Header) -> list[tuple[Header, int]]:
    """Every frame's header and the offset of its first coded chunk, from a file left by
    read_header, found by walking the chunk headers (no payload but FRAM's is read). The walk
    stops quietly where the file ends early: loading a frame then reports the truncation."""
    r = _Reader(f)
    frames = [(header, f.tell())]
    while f.tell() + _CHUNK.size <= r.end:
        start = f.tell()
        tag, length = _CHUNK.unpack(f.read(_CHUNK.size))
        if tag == b"UEND" or start + _CHUNK.size + length + 4 > r.end:
            break
        if tag == b"FRAM":
            f.seek(start)
            frames.append((_further_frame(r.chunk()[1], header), f.tell()))
        else:
            f.seek(length + 4, io.SEEK_CUR)
    f.seek(frames[0][1])
    return frames


def read(f: BinaryIO) -> UnzFile:
    """A whole file, every frame and chunk checked."""
    header, metadata = read_header(f)
    unz = read_body(f, header, metadata)
    r = _Reader(f)
    while r.peek_tag() == b"FRAM":
        frame_header = _further_frame(r.chunk()[1], header)
        body = read_body(f, frame_header, {}, first_frame=False)
        unz.frames.append(UnzFrame(frame_header, body.groups, body.repeats))
    return unz  # the last read_body read UEND


def read_body(
    f: BinaryIO, header: Header, metadata: dict[str, bytes], truncated_ok: bool = False, first_frame: bool = True
) -> UnzFile:
    """One frame's coded chunks: the first frame's after the metadata, as left by read_header,
    or a further frame's after its FRAM chunk (index_frames gives where each starts). The frame
    must end at the next FRAM chunk (left unread) or at UEND (read). With truncated_ok (Pillow's
    ImageFile.LOAD_TRUNCATED_IMAGES), a file that ends early gives the plane groups it holds
    (the last one incomplete if the file ends inside its PIXL chunk) and `truncated` set; every
    whole chunk is checked as ever."""
    r = _Reader(f)
    unz = UnzFile(header, metadata)

    def ends_here() -> bool:
        if truncated_ok and not r.whole_chunk_follows():
            unz.truncated = True
        return unz.truncated

    if first_frame and r.peek_tag() == b"ADPT" and not ends_here():
        unz.adapter = r.chunk()[1]
    if header.version >= 6 and r.peek_tag() == b"RPTS" and not ends_here():
        try:
            unz.repeats = Repeats.from_bytes(r.chunk()[1], header.height, header.width)
        except ValueError as e:
            raise UnzFormatError(str(e)) from e
    for channels in GROUPS[header.mode]:
        if unz.truncated:  # inside an earlier group
            return unz
        complete = not ends_here()
        tag, pixels = r.chunk() if complete else r.truncated_chunk()
        if tag != b"PIXL":
            if not complete:
                return unz  # cut inside the chunk's header
            raise UnzFormatError(f"expected a PIXL chunk, found {tag!r}")
        transform, head, band_height = None, 0, _coder.BAND_ROWS  # head: the bytes before the band table
        if header.version >= 6 or header.mode in WIDE_MODES:
            try:
                transform, head = samples.from_bytes(pixels, channels, header.mode in WIDE_MODES)
            except ValueError as e:
                if not complete:
                    return unz  # cut inside the sample transform
                raise UnzFormatError(f"corrupt PIXL chunk: {e}") from e
        if header.version >= BANDS_VERSION:
            if head == len(pixels):
                if not complete:
                    return unz  # cut before the band height
                raise UnzFormatError("corrupt PIXL chunk: no band height")
            if pixels[head] == 0:
                raise UnzFormatError("corrupt PIXL chunk: band height 0")
            band_height, head = pixels[head] * _coder.BAND_ROWS, head + 1
        unz.groups.append(CodedPlanes(pixels[head:], complete, transform, revision=header.version, band_height=band_height))
    next_frame = r.peek_tag() == b"FRAM" and r.whole_chunk_follows()
    if not ends_here() and not next_frame:
        _read_end(r)
    return unz


def _read_end(r: _Reader) -> None:
    tag, payload = r.chunk()
    if tag != b"UEND" or payload:
        raise UnzFormatError(f"expected the UEND chunk, found {tag!r}")
