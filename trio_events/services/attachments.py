"""Attachments: who may add, read and remove files of a message.

The HTTP layer streams an upload into temporary files (:mod:`trio_events.files`)
only after :meth:`AttachmentService.check_upload` said yes, so a stranger's
upload is refused before its body is read.  :meth:`attach` then checks again
and records everything in one transaction, which also moves the files into
place; if the transaction rolls back, files nobody refers to are removed.
At start-up, :meth:`AttachmentService.prepare` sweeps away files that no
attachment refers to (left by a crash; see :mod:`trio_events.files`).
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Sequence

import trio

from ..config import LimitsConfig
from ..errors import NotFound, PayloadTooLarge
from ..events import EventType
from ..files import DEPLOYMENT_MARKER, FileStore, Upload
from ..model import Attachment, Message, User, now_ms
from ..store import Store, Tx
from .access import RoomAccess, room_for
from .outbox import Outbox

__all__ = ["ORPHAN_GRACE", "AttachmentService", "release_files", "safe_file_name"]

log = logging.getLogger("trio_events.files")

MAX_FILE_NAME = 255
MAX_EXTENSION = 16  # a longer "extension" is just part of the name
# A file younger than this is never swept: another process sharing the data
# directory may have just placed it for a row it has yet to commit.
ORPHAN_GRACE = 3600.0
SWEEP_BATCH = 500
SWEEP_GUARD = 10  # more unreferenced files than this and none referenced: wrong database?


def safe_file_name(raw: str | None) -> str:
    """A display name from a client's file name: no directories, no control
    characters, at most 255 characters.  It is never used as a path."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    name = _shorten(name, MAX_FILE_NAME)
    return "file" if name in ("", ".", "..") else name


def _shorten(name: str, limit: int) -> str:
    """``name`` in at most ``limit`` characters, keeping its extension (the
    download's Content-Type is guessed from it) and whole characters."""
    if len(name) <= limit:
        return name
    stem, dot, extension = name.rpartition(".")
    if stem and dot and 0 < len(extension) < MAX_EXTENSION:
        return _cut(stem, limit - 1 - len(extension)) + dot + extension
    return _cut(name, limit)


def _cut(text: str, length: int) -> str:
    """The first ``length`` code points of ``text``, or fewer so as not to
    split a character: a letter from its combining marks, an emoji from its
    skin-tone modifier, a flag's two regional indicators.  A single
    character longer than ``length`` is cut anyway."""
    end = length
    while 0 < end < len(text) and _joins_previous(text, end):
        end -= 1
    return text[: end or length]


def _joins_previous(text: str, index: int) -> bool:
    """Whether ``text[index]`` belongs to the same character as the code point before it."""
    ch = text[index]
    if unicodedata.category(ch) in ("Mn", "Mc", "Me") or "\U0001f3fb" <= ch <= "\U0001f3ff":
        return True
    if not _is_regional(ch):
        return False
    run = 0  # regional indicators pair up from the start of their run
    while index - run > 0 and _is_regional(text[index - run - 1]):
        run += 1
    return run % 2 == 1


def _is_regional(ch: str) -> bool:
    return "\U0001f1e6" <= ch <= "\U0001f1ff"


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

    async def prepare(self) -> None:
        """At start-up: clear stale temporary files, then sweep orphans, but
        only in a files directory marked as this database's (``FileStore.claim``)."""
        await trio.to_thread.run_sync(self._files.prepare)
        deployment = await self._store.read(lambda tx: tx.deployment_id())
        if not await trio.to_thread.run_sync(self._files.claim, deployment):
            log.warning(
                "not sweeping: %s belongs to another database (deployment id in %s is not %d)",
                self._files.root,
                DEPLOYMENT_MARKER,
                deployment,
            )
            return
        removed = await self.sweep_orphans()
        if removed:
            log.info("removed files no attachment refers to count=%d", removed)

    async def sweep_orphans(self, grace: float = ORPHAN_GRACE) -> int:
        """Remove content files that no attachment refers to and that were
        last modified more than ``grace`` seconds ago; return how many.

        Each batch is checked and removed inside a write transaction, so no
        upload of this or another process can place (or commit a row for)
        one of those files in between; a file placed again since it was
        listed has a fresh modification time and is kept.  Avatars live in
        the database, not here.  If many files are there and none is
        referred to, the data directory most likely belongs to another
        database (a worker started on an empty one): nothing is removed.
        """
        cutoff = time.time() - grace
        candidates = await trio.to_thread.run_sync(self._files.stale_content, cutoff)
        batches = [
            candidates[start : start + SWEEP_BATCH]
            for start in range(0, len(candidates), SWEEP_BATCH)
        ]
        if len(candidates) > SWEEP_GUARD and not await self._any_referenced(batches):
            log.warning(
                "not sweeping: no attachment refers to any of %d files under %s;"
                " is this the data directory of this database?",
                len(candidates),
                self._files.root,
            )
            return 0
        removed = 0
        for batch in batches:

            def sweep(tx: Tx, batch: list[str] = batch) -> int:
                orphans = set(batch) - tx.content_refs(batch)
                return sum(self._files.remove_orphan(h, cutoff) for h in sorted(orphans))

            removed += await self._store.write(sweep)
        return removed

    async def _any_referenced(self, batches: list[list[str]]) -> bool:
        for batch in batches:

            def refs(tx: Tx, batch: list[str] = batch) -> set[str]:
                return tx.content_refs(batch)

            if await self._store.read(refs):
                return True
        return False

    def _check(self, tx: Tx, user: User, message_id: int, adding: int) -> Message:
        message, access = _message_access(tx, user, message_id)
        access.require_writable()
        access.require_author_or_moderator(message.user_id)
        if len(message.attachments) + adding > self._limits.max_files_per_message:
            raise PayloadTooLarge(
                f"A message can have at most {self._limits.max_files_per_message} attachments"
            )
        return message

    async def check_upload(self, user: User, message_id: int) -> int:
        """Refuse (404/403/413) before any byte of the body is read; return
        how many files the message may still get, so that the upload is
        refused at the first part past that, not after all were written.
        :meth:`attach` checks again (another upload may come first)."""

        def room(tx: Tx) -> int:
            message = self._check(tx, user, message_id, 1)
            return self._limits.max_files_per_message - len(message.attachments)

        return await self._store.read(room)

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
