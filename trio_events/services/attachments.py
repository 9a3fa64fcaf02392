"""Attachments: who may add, read and remove files of a message.

The HTTP layer streams an upload into temporary files (:mod:`trio_events.files`)
only after :meth:`AttachmentService.check_upload` said yes, so a stranger's
upload is refused before its body is read.  :meth:`attach` then checks again
and records everything in one transaction, which also moves the files into
place; if the transaction rolls back, files nobody refers to are removed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from ..config import LimitsConfig
from ..errors import NotFound, PayloadTooLarge
from ..events import EventType
from ..files import FileStore, Upload
from ..model import Attachment, Message, User, now_ms
from ..store import Store, Tx
from .access import RoomAccess, room_for
from .outbox import Outbox

__all__ = ["AttachmentService", "release_files", "safe_file_name"]

MAX_FILE_NAME = 255


def safe_file_name(raw: str | None) -> str:
    """A display name from a client's file name: no directories, no control
    characters, at most 255 characters.  It is never used as a path."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    if name in ("", ".", ".."):
        name = "file"
    return name[:MAX_FILE_NAME]


def release_files(tx: Tx, files: FileStore, content_hashes: set[str]) -> None:
    """After rows were deleted in ``tx``: remove, once it commits, the files
    that no attachment refers to any more."""
    orphans = content_hashes - tx.content_refs(sorted(content_hashes))

    def remove() -> None:
        for content_hash in sorted(orphans):
            files.remove(content_hash)

    if orphans:
        tx.after_commit(remove)


def _message_access(tx: Tx, user: User, message_id: int) -> tuple[Message, RoomAccess]:
    message = tx.get_message(message_id)
    if message is None:
        raise NotFound("Message not found")
    try:
        access = room_for(tx, user, message.room_id)
    except NotFound:
        raise NotFound("Message not found") from None
    return message, access


class AttachmentService:
    def __init__(self, store: Store, files: FileStore, limits: LimitsConfig) -> None:
        self._store = store
        self._files = files
        self._limits = limits

    @property
    def files(self) -> FileStore:
        return self._files

    def _check(self, tx: Tx, user: User, message_id: int, adding: int) -> Message:
        message, access = _message_access(tx, user, message_id)
        access.require_writable()
        access.require_author_or_moderator(message.user_id)
        if len(message.attachments) + adding > self._limits.max_files_per_message:
            raise PayloadTooLarge(
                f"A message can have at most {self._limits.max_files_per_message} attachments"
            )
        return message

    async def check_upload(self, user: User, message_id: int) -> None:
        """Refuse (404/403/413) before any byte of the body is read."""
        await self._store.read(lambda tx: self._check(tx, user, message_id, 1))

    async def attach(self, user: User, message_id: int, uploads: Sequence[Upload]) -> list[int]:
        now = now_ms()

        def write(tx: Tx) -> list[int]:
            message = self._check(tx, user, message_id, len(uploads))
            ids = [
                tx.insert_attachment(
                    message_id,
                    message.room_id,
                    upload.file_name,
                    upload.size,
                    upload.checksum,
                    upload.content_hash,
                    now,
                )
                for upload in uploads
            ]
            Outbox(tx, now).messages(
                EventType.TEXT_MESSAGES_UPDATED, tx.get_messages([message_id]), message.room_id
            )
            hashes = {upload.content_hash for upload in uploads}
            tx.after_rollback(lambda: self._drop_unreferenced(tx, hashes))
            for upload in uploads:  # last: nothing after this can fail but COMMIT
                self._files.place(upload)
            return ids

        return await self._store.write(write)

    def _drop_unreferenced(self, tx: Tx, hashes: set[str]) -> None:
        for content_hash in hashes - tx.content_refs(sorted(hashes)):
            self._files.remove(content_hash)

    async def get(self, user: User, attachment_id: int) -> Attachment:
        def read(tx: Tx) -> Attachment:
            attachment = tx.get_attachment(attachment_id)
            if attachment is None:
                raise NotFound("Attachment not found")
            try:
                _message_access(tx, user, attachment.message_id)
            except NotFound:
                raise NotFound("Attachment not found") from None
            return attachment

        return await self._store.read(read)

    async def delete(self, user: User, attachment_id: int) -> None:
        now = now_ms()

        def write(tx: Tx) -> None:
            attachment = tx.get_attachment(attachment_id)
            if attachment is None:
                raise NotFound("Attachment not found")
            try:
                message, access = _message_access(tx, user, attachment.message_id)
            except NotFound:
                raise NotFound("Attachment not found") from None
            access.require_writable()
            access.require_author_or_moderator(message.user_id)
            tx.delete_attachment(attachment_id)
            release_files(tx, self._files, {attachment.content_hash})
            Outbox(tx, now).messages(
                EventType.TEXT_MESSAGES_UPDATED,
                tx.get_messages([message.message_id]),
                message.room_id,
            )

        await self._store.write(write)
