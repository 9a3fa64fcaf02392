"""Attachments over HTTP (API.md section 6): streamed uploads and downloads.

An upload is authorized before its body is read, then decoded with
werkzeug's sans-I/O multipart decoder as the bytes arrive; each part named
``files`` is written to a temporary file and hashed on the way, so a file is
never held whole in memory.  Limits (per file, per request, files per
message) are checked as bytes arrive; a refused upload leaves no file and no
row behind.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from urllib.parse import quote

import trio
from quart import Blueprint, Response, request
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from ..errors import BadRequest, NotFound, PayloadTooLarge
from ..files import FileStore, Upload
from ..model import Attachment
from ..services.attachments import safe_file_name
from ..wire import attachment_json
from .common import authenticate, ok, services

__all__ = ["blueprint", "content_disposition"]

blueprint = Blueprint("attachments", __name__, url_prefix="/api/v1")
CHUNK = 64 * 1024


def content_disposition(file_name: str) -> str:
    """RFC 6266: an ASCII fallback and the exact UTF-8 name."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\%;' else "_" for ch in file_name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"


async def _receive_uploads(files: FileStore, boundary: bytes, uploads: list[Upload]) -> None:
    """Stream the multipart body into temporary files, appended to ``uploads``
    as they start (so the caller can remove them whatever happens)."""
    limits = services().config.limits
    decoder = MultipartDecoder(boundary, max_form_memory_size=4 * CHUNK)
    current: trio.abc.AsyncResource | None = None
    handle = None
    total = 0
    done = False

    async def chunks() -> AsyncIterator[bytes | None]:
        # Quart hands over whatever arrived since the last read, which can be
        # megabytes; the decoder gets it in slices so that its own buffer
        # (bounded by max_form_memory_size) never holds more than one.
        async for received in request.body:
            for start in range(0, len(received), CHUNK):
                yield received[start : start + CHUNK]
        yield None  # end of input: lets the decoder finish the last part

    try:
        async for chunk in chunks():
            if done:
                continue  # past the closing boundary: nothing more to decode
            total += len(chunk or b"")
            if total > limits.max_upload_bytes:
                raise PayloadTooLarge(f"The upload is larger than {limits.max_upload_bytes} bytes")
            decoder.receive_data(chunk)
            event = decoder.next_event()
            while not isinstance(event, NeedData):
                if isinstance(event, File):
                    if event.name != "files":
                        raise BadRequest("Upload files in multipart parts named 'files'")
                    if len(uploads) >= limits.max_files_per_message:
                        raise PayloadTooLarge(
                            f"At most {limits.max_files_per_message} files per message"
                        )
                    upload = Upload(files.new_temp(), safe_file_name(event.filename))
                    uploads.append(upload)
                    handle = await trio.open_file(upload.temp_path, "wb")
                    current = handle
                elif isinstance(event, Field):
                    raise BadRequest("Upload files in multipart parts named 'files'")
                elif isinstance(event, Data) and handle is not None:
                    upload = uploads[-1]
                    upload.add(event.data)
                    if upload.size > limits.max_attachment_bytes:
                        raise PayloadTooLarge(
                            f"A file is larger than {limits.max_attachment_bytes} bytes"
                        )
                    await handle.write(event.data)
                    if not event.more_data:
                        await handle.aclose()
                        handle = current = None
                elif isinstance(event, Epilogue):
                    done = True
                    break
                event = decoder.next_event()
        if total == 0:
            raise BadRequest("The upload is empty")
    except ValueError as exc:  # the decoder's word for a malformed body
        raise BadRequest(f"Malformed multipart body: {exc}") from None
    finally:
        if current is not None:
            with trio.CancelScope(shield=True):
                await current.aclose()
    if not done or not uploads:
        raise BadRequest("The multipart body is incomplete or has no 'files' part")


@blueprint.post("/messages/<int:message_id>/attachments")
async def upload(message_id: int) -> Response:
    principal = await authenticate()
    svc = services()
    await svc.attachments.check_upload(principal.user, message_id)
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
        await _receive_uploads(files, boundary.encode("latin-1"), uploads)
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


@blueprint.get("/attachments/<int:attachment_id>/<path:file_name>")
async def download(attachment_id: int, file_name: str) -> Response:
    """The bytes; the name in the URL is for the browser, the id decides."""
    principal = await authenticate()
    svc = services()
    attachment = await svc.attachments.get(principal.user, attachment_id)
    return _file_response(attachment, svc.attachments.files)


@blueprint.delete("/attachments/<int:attachment_id>")
async def delete(attachment_id: int) -> Response:
    principal = await authenticate()
    await services().attachments.delete(principal.user, attachment_id)
    return ok()
