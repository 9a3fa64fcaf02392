"""Helpers for the attachment tests: uploads, downloads and what is on disk.

Files are stored under ``<data_dir>/files/ab/cd/<sha256>`` with uploads in
progress under ``files/tmp/<process>/``; ``stored_files`` and ``temp_files`` let a test
check that nothing was left behind.
"""

from __future__ import annotations

import hashlib
import struct
import unicodedata
import zlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx

import trio_events
from trio_events.files import DEPLOYMENT_MARKER
from trio_events.model import Attachment

from .rest_helpers import Actor, Json, admin_actor, body_of, create_room, user_actors

ATTACHMENT_FIELDS = {
    "attachmentId",
    "attachmentState",
    "createdUtc",
    "lastModifiedUtc",
    "fileChecksum",
    "fileName",
    "fileSize",
    "hasThumbnail",
    "roomId",
    "textMessageId",
}
READY = "ReadyForDownloadFromServerToClient"
OCTET = "application/octet-stream"

FileSpec = tuple[str, bytes]


@attrs.frozen
class World:
    """An admin, two users and a Public room the three of them can write to."""

    admin: Actor
    alice: Actor
    bob: Actor
    room_id: int


async def world(
    client: httpx.AsyncClient, server: trio_events.RunningServer, room_type: str = "Public"
) -> World:
    admin = await admin_actor(client)
    alice, bob = await user_actors(client, server, "alice", "bob")
    room_id = await create_room(client, admin, "files", room_type, members=[alice, bob])
    return World(admin, alice, bob, room_id)


def multipart(files: Sequence[FileSpec], field: str = "files") -> list[tuple[str, Any]]:
    return [(field, (name, data, OCTET)) for name, data in files]


async def upload(
    client: httpx.AsyncClient, actor: Actor, message_id: int, files: Sequence[FileSpec]
) -> httpx.Response:
    return await client.post(
        f"/api/v1/messages/{message_id}/attachments",
        files=multipart(files),
        headers=actor.headers,
    )


async def upload_ok(
    client: httpx.AsyncClient, actor: Actor, message_id: int, files: Sequence[FileSpec]
) -> list[int]:
    ids = body_of(await upload(client, actor, message_id, files))["attachmentIds"]
    assert isinstance(ids, list)
    assert len(ids) == len(files)
    assert all(isinstance(i, int) for i in ids)
    return [int(i) for i in ids]


async def metadata(client: httpx.AsyncClient, actor: Actor, attachment_id: int) -> Json:
    return body_of(await client.get(f"/api/v1/attachments/{attachment_id}", headers=actor.headers))


async def download(
    client: httpx.AsyncClient, actor: Actor, attachment_id: int, name: str = "file"
) -> httpx.Response:
    return await client.get(f"/api/v1/attachments/{attachment_id}/{name}", headers=actor.headers)


async def delete_attachment(
    client: httpx.AsyncClient, actor: Actor, attachment_id: int
) -> httpx.Response:
    return await client.delete(f"/api/v1/attachments/{attachment_id}", headers=actor.headers)


def attachment_fields(found: Json) -> Json:
    """The attachment fields of a metadata answer (which also has httpStatusCode)."""
    return {key: value for key, value in found.items() if key in ATTACHMENT_FIELDS}


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_root(server: trio_events.RunningServer) -> Path:
    return server.services.config.data_dir / "files"


def content_path(server: trio_events.RunningServer, data: bytes) -> Path:
    digest = sha256(data)
    return files_root(server) / digest[:2] / digest[2:4] / digest


def stored_files(server: trio_events.RunningServer) -> list[Path]:
    """Every stored content file (temporary uploads and the deployment marker left out)."""
    root = files_root(server)
    if not root.exists():
        return []
    tmp = root / "tmp"
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and tmp not in p.parents and p != root / DEPLOYMENT_MARKER
    )


def temp_files(server: trio_events.RunningServer) -> list[Path]:
    """Temporary upload files, in any process's directory under ``files/tmp``."""
    tmp = files_root(server) / "tmp"
    return sorted(p for p in tmp.rglob("*") if p.is_file()) if tmp.exists() else []


async def attachments_in_store(
    server: trio_events.RunningServer, message_ids: Sequence[int]
) -> dict[int, list[Attachment]]:
    return await server.services.store.read(lambda tx: tx.attachments_of(list(message_ids)))


async def attachment_row(
    server: trio_events.RunningServer, attachment_id: int
) -> Attachment | None:
    return await server.services.store.read(lambda tx: tx.get_attachment(attachment_id))


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that are not all alike, different for each seed."""
    block = hashlib.sha256(f"{seed}".encode()).digest() * 8 + bytes(range(256))
    repeat = size // len(block) + 1
    return (block * repeat)[:size]


BOUNDARY = "trio-events-test-boundary-7f3a"


def raw_part(disposition: bytes, data: bytes, content_type: bytes = OCTET.encode()) -> bytes:
    """One multipart part with a hand-written Content-Disposition (no escaping at all)."""
    head = b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: " + disposition
    return head + b"\r\nContent-Type: " + content_type + b"\r\n\r\n" + data + b"\r\n"


def file_part(file_name: bytes, data: bytes, field: bytes = b"files") -> bytes:
    return raw_part(b'form-data; name="' + field + b'"; filename="' + file_name + b'"', data)


def raw_body(*parts: bytes, closed: bool = True) -> bytes:
    return b"".join(parts) + (b"--" + BOUNDARY.encode() + b"--\r\n" if closed else b"")


async def upload_raw(
    client: httpx.AsyncClient,
    actor: Actor,
    message_id: int,
    body: bytes,
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
    *,
    chunked: bool = False,
) -> httpx.Response:
    """POST a hand-made body; ``chunked`` sends it without a Content-Length."""
    headers = {**actor.headers, "Content-Type": content_type}
    url = f"/api/v1/messages/{message_id}/attachments"
    if not chunked:
        return await client.post(url, content=body, headers=headers)

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16384):
            yield body[start : start + 16384]

    return await client.post(url, content=stream(), headers=headers)


def is_safe_name(name: str) -> bool:
    return (
        0 < len(name) <= 255
        and "/" not in name
        and "\\" not in name
        and name not in (".", "..")
        and not any(unicodedata.category(ch)[0] == "C" for ch in name)
    )


# Avatar images: small but well-formed headers of each accepted format.


def png_image(width: int = 1, height: int = 1) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress((b"\x00" + b"\xff\x00\x00" * width) * height)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def jpeg_image(width: int = 1, height: int = 1) -> bytes:
    def segment(marker: int, data: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(data) + 2).to_bytes(2, "big") + data

    app0 = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    dqt = segment(0xDB, b"\x00" + bytes([1] * 64))
    sof0 = segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    dht = segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
    sos = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    return b"\xff\xd8" + app0 + dqt + sof0 + dht + sos + b"\x00\x00" + b"\xff\xd9"


def gif_image(width: int = 1, height: int = 1) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\xff\xff\xff\x00\x00\x00"
    image = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02D\x01\x00"
    return b"GIF89a" + screen + image + b";"


def webp_image(kind: str = "VP8 ", width: int = 1, height: int = 1) -> bytes:
    if kind == "VP8 ":
        data = b"\x30\x01\x00\x9d\x01\x2a" + struct.pack("<HH", width, height) + bytes(8)
    elif kind == "VP8L":
        bits = (width - 1) | (height - 1) << 14
        data = b"\x2f" + bits.to_bytes(4, "little") + bytes(4)
    else:
        data = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little")
        data += (height - 1).to_bytes(3, "little")
    chunk = kind.encode() + len(data).to_bytes(4, "little") + data + b"\x00" * (len(data) % 2)
    return b"RIFF" + (4 + len(chunk)).to_bytes(4, "little") + b"WEBP" + chunk


PNG = png_image()
JPEG = jpeg_image()
GIF = gif_image()
WEBP = webp_image()
IMAGES = [
    (PNG, "image/png", "png"),
    (JPEG, "image/jpeg", "jpg"),
    (GIF, "image/gif", "gif"),
    (WEBP, "image/webp", "webp"),
]
WRONG_IMAGE_TYPES = {
    "text": b"just some text, not an image",
    "html": b"<html><body>hi</body></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>',
    "truncated-png-magic": b"\x89PNG\r\n",
    "riff-not-webp": b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(16),
    "pdf": b"%PDF-1.7\n" + bytes(32),
}
DAMAGED_IMAGES = {
    "gif-magic-and-four-bytes": b"GIF89a....",
    "png-cut-short": PNG[:-20],
    "jpeg-without-end": JPEG[:-2],
    "webp-cut-short": WEBP[:-3],
}
