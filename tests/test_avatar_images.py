"""Avatar images are checked by their structure, not only their first bytes
(plain parametrized tests of :mod:`trio_events.services.images`; the HTTP
answers are in test_room_avatars.py and test_users_api.py)."""

from __future__ import annotations

import struct
import zlib

import pytest

from trio_events.errors import BadRequest, UnsupportedMediaType
from trio_events.services.images import MAX_SIDE, check_image, image_size

from .attachment_helpers import GIF, JPEG, PNG, WEBP, gif_image, jpeg_image, png_image, webp_image

LIMIT = 1 << 20


def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return len(data).to_bytes(4, "big") + kind + data + crc.to_bytes(4, "big")


def png_with(*chunks: bytes) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


IHDR = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 3, 8, 2, 0, 0, 0))
IDAT = png_chunk(b"IDAT", zlib.compress(b"\x00" * 7 * 3))
IEND = png_chunk(b"IEND", b"")

GOOD = {
    "png": (PNG, "image/png", (1, 1)),
    "png-640x480": (png_image(640, 480), "image/png", (640, 480)),
    "png-with-text-chunk": (
        png_with(IHDR, png_chunk(b"tEXt", b"Comment\x00hi"), IDAT, IEND),
        "image/png",
        (2, 3),
    ),
    "jpeg": (JPEG, "image/jpeg", (1, 1)),
    "jpeg-1920x1080": (jpeg_image(1920, 1080), "image/jpeg", (1920, 1080)),
    "gif": (GIF, "image/gif", (1, 1)),
    "gif-16x9": (gif_image(16, 9), "image/gif", (16, 9)),
    "webp-vp8": (WEBP, "image/webp", (1, 1)),
    "webp-vp8l": (webp_image("VP8L", 300, 200), "image/webp", (300, 200)),
    "webp-vp8x": (webp_image("VP8X", 4000, 7), "image/webp", (4000, 7)),
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_whole_images_are_accepted_with_their_size(case: str) -> None:
    data, content_type, size = GOOD[case]
    assert check_image(data, LIMIT) == content_type
    assert image_size(data, content_type) == size


def webp_chunk(kind: bytes, body: bytes) -> bytes:
    chunk = kind + len(body).to_bytes(4, "little") + body
    return b"RIFF" + (4 + len(chunk)).to_bytes(4, "little") + b"WEBP" + chunk


DAMAGED = {
    "gif-magic-and-four-bytes": (b"GIF89a....", "GIF"),
    "gif-without-trailer": (GIF[:-1], "GIF"),
    "gif-zero-size": (gif_image(0, 0), "GIF"),
    "gif-without-image": (GIF[: 13 + 6] + b";", "GIF"),
    "gif-unknown-block": (GIF[: 13 + 6] + b"\x99;", "GIF"),
    "png-signature-only": (b"\x89PNG\r\n\x1a\n", "PNG"),
    "png-cut-in-idat": (PNG[: len(PNG) - 20], "PNG"),
    "png-bad-crc": (png_with(IHDR, png_chunk(b"IDAT", b"xx", crc=1), IEND), "PNG"),
    "png-without-iend": (png_with(IHDR, IDAT), "PNG"),
    "png-without-idat": (png_with(IHDR, IEND), "PNG"),
    "png-ihdr-not-first": (png_with(IDAT, IHDR, IEND), "PNG"),
    "png-zero-width": (png_image(0, 5), "PNG"),
    "jpeg-magic-only": (b"\xff\xd8\xff", "JPEG"),
    "jpeg-without-end-marker": (JPEG[:-2], "JPEG"),
    "jpeg-without-frame-header": (b"\xff\xd8\xff\xda\x00\x02\x00\xff\xd9", "JPEG"),
    "jpeg-segment-past-the-end": (b"\xff\xd8\xff\xe0\x40\x00JFIF", "JPEG"),
    "webp-cut-short": (WEBP[:-3], "WebP"),
    "webp-unknown-chunk": (webp_chunk(b"ABCD", bytes(10)), "WebP"),
    "webp-vp8-not-a-key-frame": (webp_chunk(b"VP8 ", b"\x31\x01\x00" + bytes(11)), "WebP"),
    "webp-vp8l-bad-signature": (webp_chunk(b"VP8L", b"\x00" + bytes(8)), "WebP"),
    "webp-header-only": (b"RIFF\x04\x00\x00\x00WEBP", "WebP"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_truncated_or_damaged_images_are_400_naming_the_format(case: str) -> None:
    data, name = DAMAGED[case]
    with pytest.raises(BadRequest) as refused:
        check_image(data, LIMIT)
    assert str(refused.value).startswith(f"The {name} image is truncated or damaged: ")


def test_unknown_formats_are_still_415() -> None:
    with pytest.raises(UnsupportedMediaType):
        check_image(b"BM" + bytes(60), LIMIT)


@pytest.mark.parametrize(
    ("width", "height"), [(MAX_SIDE + 1, 1), (1, MAX_SIDE + 1), (65535, 65535)]
)
def test_images_larger_than_max_side_are_400(width: int, height: int) -> None:
    """A tiny file can claim a huge canvas that every client would decode whole."""
    claims = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    data = png_with(claims, IDAT, IEND)
    assert image_size(data, "image/png") == (width, height)
    with pytest.raises(BadRequest, match=f"{width}x{height} pixels"):
        check_image(data, LIMIT)


def test_an_image_of_exactly_max_side_is_accepted() -> None:
    claims = png_chunk(b"IHDR", struct.pack(">IIBBBBB", MAX_SIDE, MAX_SIDE, 8, 2, 0, 0, 0))
    assert check_image(png_with(claims, IDAT, IEND), LIMIT) == "image/png"
