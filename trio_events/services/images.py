"""Recognise avatar images by their content, never by a name or a header."""

from __future__ import annotations

from ..errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["EXTENSIONS", "check_image", "sniff_image_type"]

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of a PNG, JPEG, GIF or WebP image, or ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_image(data: bytes, max_bytes: int) -> str:
    """Return the image's MIME type, or raise the right 4xx."""
    if not data:
        raise BadRequest("The image is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"The image is larger than {max_bytes} bytes")
    content_type = sniff_image_type(data)
    if content_type is None:
        raise UnsupportedMediaType("The image must be a PNG, JPEG, GIF or WebP file")
    return content_type
