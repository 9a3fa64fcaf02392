"""Attachments over HTTP (API.md section 6): streamed uploads and downloads.

An upload is authorized before its body is read, then decoded with
werkzeug's sans-I/O multipart decoder as the bytes arrive; each part named
``files`` is written to a temporary file and hashed on the way, so a file is
never held whole in memory.  Limits (per file, per request, files per
message) are checked as bytes arrive; a refused upload leaves no file and no
row behind.
"""

from __future__ import annotations

import contextlib
import mimetypes
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import trio
from quart import Blueprint, Response, request
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from ..errors import BadRequest, NotFound, PayloadTooLarge, RequestTimeout
from ..files import FileStore, Upload
from ..model import Attachment
from ..services.attachments import safe_file_name
from ..wire import attachment_json
from .body_window import consumed
from .common import authenticate, discard_body, ok, services

__all__ = ["blueprint", "content_disposition"]

blueprint = Blueprint("attachments", __name__, url_prefix="/api/v1")
CHUNK = 64 * 1024


def content_disposition(file_name: str) -> str:
    """RFC 6266: an ASCII fallback and the exact UTF-8 name."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\%;' else "_" for ch in file_name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"


@contextlib.contextmanager
def _malformed_is_400() -> Iterator[None]:
    """The multipart decoder's ValueError is the client's malformed body;
    only its calls are wrapped, so a ValueError of ours stays a 500."""
    try:
        yield
    except ValueError as exc:
        raise BadRequest(f"Malformed multipart body: {exc}") from None


class _UploadReader:
    """Turns multipart bytes into temporary files, enforcing the limits.

    ``uploads`` is the caller's list, appended to as each file starts, so the
    caller can remove every temporary file whatever happens.
    """

    def __init__(self, files: FileStore, boundary: bytes, uploads: list[Upload], room: int) -> None:
        self._limits = services().config.limits
        self._room = room
        self._files = files
        self._decoder = MultipartDecoder(boundary, max_form_memory_size=4 * CHUNK)
        self._uploads = uploads
        self._open: Upload | None = None
        self.total = 0
        self.done = False

    async def feed(self, piece: bytes | None) -> None:
        """Decode one piece of the body (``None`` at its end)."""
        if self.done:
            return  # past the closing boundary: nothing more to decode
        limits = self._limits
        self.total += len(piece or b"")
        if self.total > limits.max_upload_bytes:
            raise PayloadTooLarge(f"The upload is larger than {limits.max_upload_bytes} bytes")
        with _malformed_is_400():
            self._decoder.receive_data(piece)
        event = self._next_event()
        while not isinstance(event, NeedData):
            if isinstance(event, File):
                if event.name != "files":
                    raise BadRequest("Upload files in multipart parts named 'files'")
                if len(self._uploads) >= self._room:
                    raise PayloadTooLarge(
                        f"A message can have at most {limits.max_files_per_message} attachments"
                    )
                upload = Upload(self._files.new_temp(), safe_file_name(event.filename))
                self._uploads.append(upload)
                await upload.open()
                self._open = upload
            elif isinstance(event, Field):
                raise BadRequest("Upload files in multipart parts named 'files'")
            elif isinstance(event, Data) and self._open is not None:
                if self._open.size + len(event.data) > limits.max_attachment_bytes:
                    raise PayloadTooLarge(
                        f"A file is larger than {limits.max_attachment_bytes} bytes"
                    )
                await self._open.write(event.data)
                if not event.more_data:
                    upload, self._open = self._open, None
                    await upload.finish()
            elif isinstance(event, Epilogue):
                self.done = True
                return
            event = self._next_event()

    def _next_event(self) -> Any:
        with _malformed_is_400():
            return self._decoder.next_event()

    async def close_file(self) -> None:
        """Close the file of a part cut short (a no-op once it was finished)."""
        if self._open is not None:
            upload, self._open = self._open, None
            await upload.close()


async def _body_pieces() -> AsyncGenerator[bytes | None, None]:
    """The request body in pieces of at most ``CHUNK`` bytes, then ``None``.

    Quart hands over whatever arrived since the last read, up to the body
    window; slicing keeps the decoder's own buffer small.  A piece counts as
    consumed once the caller comes back for the next one (it has been
    written by then), and whatever was taken but not processed counts when
    the generator closes, so a refused upload can still be drained.  Each
    read must arrive within ``request_timeout`` of the previous one: a large
    upload may take long, a stalled one may not.
    """
    body = aiter(request.body)
    timeout = services().config.server.request_timeout
    held = 0
    try:
        while True:
            with trio.move_on_after(timeout) as scope:
                received = await anext(body, None)
            if scope.cancelled_caught:
                raise RequestTimeout(f"The upload stalled for {timeout:g} seconds")
            if received is None:
                break
            held = len(received)
            for start in range(0, len(received), CHUNK):
                piece = received[start : start + CHUNK]
                yield piece
                held -= len(piece)
                consumed(len(piece))
        yield None
    finally:
        consumed(held)


async def _receive_uploads(
    files: FileStore, boundary: bytes, uploads: list[Upload], room: int
) -> None:
    reader = _UploadReader(files, boundary, uploads, room)
    try:
        async with contextlib.aclosing(_body_pieces()) as pieces:
            async for piece in pieces:
                await reader.feed(piece)
        if reader.total == 0:
            raise BadRequest("The upload is empty")
        if not reader.done or not uploads:
            raise BadRequest("The multipart body is incomplete or has no 'files' part")
    except (BadRequest, PayloadTooLarge):
        await discard_body()
        raise
    finally:
        await reader.close_file()


@blueprint.post("/messages/<int:message_id>/attachments")
async def upload(message_id: int) -> Response:
    principal = await authenticate()
    svc = services()
    room = await svc.attachments.check_upload(principal.user, message_id)
    limits = svc.config.limits
    if request.content_length is not None and request.content_length > limits.max_upload_bytes:
        raise PayloadTooLarge(f"The upload is larger than {limits.max_upload_bytes} bytes")
    mimetype, options = parse_options_header(request.headers.get("Content-Type"))
    boundary = options.get("boundary", "")
    if mimetype != "multipart/form-data" or not boundary or len(boundary) > 200:
        raise BadRequest("Send the files as multipart/form-data")
    files = svc.attachments.files
    uploads: list[Upload] = []
    try:
        await _receive_uploads(files, boundary.encode("latin-1"), uploads, room)
        ids = await svc.attachments.attach(principal.user, message_id, uploads)
    finally:
        for item in uploads:
            files.discard(item.temp_path)  # a no-op for files moved into place
    return ok(attachmentIds=ids)


@blueprint.get("/attachments/<int:attachment_id>")
async def metadata(attachment_id: int) -> Response:
    principal = await authenticate()
    attachment = await services().attachments.get(principal.user, attachment_id)
    return ok(**attachment_json(attachment))


def _file_response(attachment: Attachment, files: FileStore) -> Response:
    path = files.path(attachment.content_hash)
    if not path.exists():
        raise NotFound("Attachment not found")

    async def body() -> AsyncIterator[bytes]:
        async with await trio.open_file(path, "rb") as handle:
            while chunk := await handle.read(CHUNK):
                yield chunk

    guessed, _ = mimetypes.guess_type(attachment.file_name)
    response = Response(body(), status=200, content_type=guessed or "application/octet-stream")
    response.headers["Content-Length"] = str(attachment.file_size)
    response.headers["Content-Disposition"] = content_disposition(attachment.file_name)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "sandbox"
    response.headers["Cache-Control"] = "private, max-age=3600"
    response.headers["ETag"] = f'"{attachment.file_checksum}"'
    return response


@blueprint.get("/attachments/<int:attachment_id>/", defaults={"file_name": ""})
@blueprint.get("/attachments/<int:attachment_id>/<path:file_name>")
async def download(attachment_id: int, file_name: str) -> Response:
    """The bytes; the name in the URL is for the browser, the id decides.

    The name may be empty: the stock Virola web client puts the raw file
    name in the URL, so for ``#1 notes.txt`` the browser asks for
    ``/attachments/<id>/`` (the rest is a fragment, and a ``?`` starts a
    query).  Content-Disposition still names the file.
    """
    principal = await authenticate()
    svc = services()
    attachment = await svc.attachments.get(principal.user, attachment_id)
    return _file_response(attachment, svc.attachments.files)


@blueprint.delete("/attachments/<int:attachment_id>")
async def delete(attachment_id: int) -> Response:
    principal = await authenticate()
    await services().attachments.delete(principal.user, attachment_id)
    return ok()
