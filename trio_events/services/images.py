"""Recognise avatar images by their content, never by a name or a header.

The first bytes name the format; then the format's own structure is read far
enough to find the picture's dimensions and the end of the file (PNG chunks
with their CRCs up to IEND, GIF blocks up to the trailer, JPEG segments up
to the scan and its end marker, WebP's RIFF size and first chunk).  Nothing
is decoded: this only refuses files that are obviously not a whole image of
their kind, such as ``GIF89a`` followed by a few bytes, or a cut-off upload.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any

from ..errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["EXTENSIONS", "check_image", "image_size", "sniff_image_type"]

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}
NAMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WebP"}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# An avatar is drawn small, but every client decodes it whole: a few hundred
# bytes of PNG can claim 65535x65535 pixels (16 GiB as RGBA), a bomb for the
# browsers that show it.  Wider or taller images are refused.
MAX_SIDE = 4096


class Damaged(ValueError):
    """The image's structure does not hold together; the message says where."""


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of a PNG, JPEG, GIF or WebP image, or ``None``."""
    if data.startswith(PNG_SIGNATURE):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _unpack(layout: str, data: bytes, offset: int, what: str) -> tuple[Any, ...]:
    try:
        return struct.unpack_from(layout, data, offset)
    except struct.error:
        raise Damaged(f"it ends inside the {what}") from None


def _dimensions(width: int, height: int) -> tuple[int, int]:
    if width <= 0 or height <= 0:
        raise Damaged(f"it claims a size of {width}x{height}")
    return width, height


def _png_size(data: bytes) -> tuple[int, int]:
    """Every chunk whole and its CRC right, IHDR first, IDAT, IEND last."""
    offset = len(PNG_SIGNATURE)
    kinds: list[bytes] = []
    while not kinds or kinds[-1] != b"IEND":
        length, kind = _unpack(">I4s", data, offset, "chunk header")
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = _unpack(">I", data, offset + 8 + length, f"{kind.decode('latin-1')} chunk")
        if zlib.crc32(kind + body) != crc:
            raise Damaged(f"the {kind.decode('latin-1')} chunk's CRC is wrong")
        if not kinds and (kind != b"IHDR" or length != 13):
            raise Damaged("it does not start with an IHDR chunk")
        kinds.append(kind)
        offset += 12 + length
    if b"IDAT" not in kinds:
        raise Damaged("it has no IDAT chunk")
    width, height = struct.unpack_from(">II", data, len(PNG_SIGNATURE) + 8)
    return _dimensions(width, height)


def _gif_skip_sub_blocks(data: bytes, offset: int) -> int:
    while True:
        (count,) = _unpack("B", data, offset, "data sub-blocks")
        offset += 1 + count
        if count == 0:
            return offset


def _gif_color_table(flags: int) -> int:
    return 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0


def _gif_size(data: bytes) -> tuple[int, int]:
    """The logical screen descriptor, then blocks up to the trailer, with at least one image."""
    width, height, flags = _unpack("<HHB", data, 6, "logical screen descriptor")
    size = _dimensions(width, height)
    offset = 13 + _gif_color_table(flags)
    images = 0
    while True:
        (introducer,) = _unpack("B", data, offset, "block list (no trailer)")
        if introducer == 0x3B:  # trailer
            break
        if introducer == 0x21:  # extension: label, then sub-blocks
            offset = _gif_skip_sub_blocks(data, offset + 2)
        elif introducer == 0x2C:  # image descriptor, color table, LZW code size, sub-blocks
            (image_flags,) = _unpack("B", data, offset + 9, "image descriptor")
            offset += 10 + _gif_color_table(image_flags) + 1
            offset = _gif_skip_sub_blocks(data, offset)
            images += 1
        else:
            raise Damaged(f"it has an unknown block 0x{introducer:02x}")
    if not images:
        raise Damaged("it has no image")
    return size


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Segments from SOI to the start of scan, a frame header among them,
    and an end-of-image marker after the scan."""
    offset = 2
    size: tuple[int, int] | None = None
    while True:
        fill, marker = _unpack("BB", data, offset, "segment list")
        if fill != 0xFF:
            raise Damaged(f"a segment starts with 0x{fill:02x}, not a marker")
        if marker == 0xFF:  # padding before a marker
            offset += 1
            continue
        (length,) = _unpack(">H", data, offset + 2, "segment length")
        if length < 2 or offset + 2 + length > len(data):
            raise Damaged("it ends inside a segment")
        if marker in _SOF_MARKERS:
            height, width = _unpack(">HH", data, offset + 5, "frame header")
            size = _dimensions(width, height)
        offset += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
    if size is None:
        raise Damaged("it has no frame header (SOF) before the scan")
    if data.rfind(b"\xff\xd9") < offset:
        raise Damaged("it has no end-of-image marker")
    return size


def _webp_size(data: bytes) -> tuple[int, int]:
    """The RIFF container whole, and the size from its first chunk."""
    (riff_size,) = _unpack("<I", data, 4, "RIFF header")
    if riff_size + 8 > len(data) or riff_size < 4:
        raise Damaged(f"the RIFF container claims {riff_size + 8} bytes, the file has {len(data)}")
    kind, length = _unpack("<4sI", data, 12, "first chunk header")
    body = data[20 : 20 + length]
    if len(body) < length:
        raise Damaged(f"it ends inside the {kind!r} chunk")
    if kind == b"VP8 ":
        tag, start, width, height = _unpack("<3s3sHH", body, 0, "VP8 frame header")
        if tag[0] & 1 or start != b"\x9d\x01\x2a":
            raise Damaged("its VP8 data does not start with a key frame")
        return _dimensions(width & 0x3FFF, height & 0x3FFF)
    if kind == b"VP8L":
        signature, bits = _unpack("<BI", body, 0, "VP8L header")
        if signature != 0x2F:
            raise Damaged("its VP8L data has the wrong signature")
        return _dimensions(1 + (bits & 0x3FFF), 1 + (bits >> 14 & 0x3FFF))
    if kind == b"VP8X":
        (canvas,) = _unpack("<6s", body, 4, "VP8X header")
        width = int.from_bytes(canvas[:3], "little") + 1
        return _dimensions(width, int.from_bytes(canvas[3:], "little") + 1)
    raise Damaged(f"its first chunk is {kind!r}, not VP8, VP8L or VP8X")


_PARSERS: dict[str, Callable[[bytes], tuple[int, int]]] = {
    "image/png": _png_size,
    "image/jpeg": _jpeg_size,
    "image/gif": _gif_size,
    "image/webp": _webp_size,
}


def image_size(data: bytes, content_type: str) -> tuple[int, int]:
    """Width and height of an image of ``content_type``; :class:`Damaged` if
    its structure does not hold together."""
    return _PARSERS[content_type](data)


def check_image(data: bytes, max_bytes: int) -> str:
    """Return the image's MIME type, or raise the right 4xx."""
    if not data:
        raise BadRequest("The image is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"The image is larger than {max_bytes} bytes")
    content_type = sniff_image_type(data)
    if content_type is None:
        raise UnsupportedMediaType("The image must be a PNG, JPEG, GIF or WebP file")
    try:
        width, height = image_size(data, content_type)
    except Damaged as exc:
        name = NAMES[content_type]
        raise BadRequest(f"The {name} image is truncated or damaged: {exc}") from None
    if width > MAX_SIDE or height > MAX_SIDE:
        raise BadRequest(
            f"The image is {width}x{height} pixels; at most {MAX_SIDE}x{MAX_SIDE} are allowed"
        )
    return content_type
