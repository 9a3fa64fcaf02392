"""Messages, comments and read receipts.

Each public method validates its input, then runs one function of a
:class:`Tx` that authorizes, changes the store and appends the events of
API.md section 8's table; the store commits it all or nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..config import LimitsConfig
from ..errors import BadRequest, NotFound
from ..events import EventType
from ..files import FileStore
from ..model import Message, MessageType, NewMessage, User, now_ms
from ..store import Store, Tx
from .access import RoomAccess, room_for
from .attachments import release_files
from .message_input import parse_batch, parse_issue, parse_meeting, parse_new_message, parse_patch
from .outbox import Outbox
from .validate import MAX_ID, page_limit, query_value

__all__ = ["MessageService", "Page"]

PAGING = ("cursor", "limit", "direction")
CURSOR_RANGE = (
    f"Query parameter 'cursor' must be -1 or a message id (an integer from 0 to {MAX_ID})"
)


@attrs.frozen
class Page:
    room_id: int
    messages: list[Message]


def _message_for(tx: Tx, user: User, message_id: int) -> tuple[Message, RoomAccess]:
    message = tx.get_message(message_id)
    if message is None:
        raise NotFound("Message not found")
    try:
        access = room_for(tx, user, message.room_id)
    except NotFound:
        raise NotFound("Message not found") from None
    return message, access


def _check_assignees(tx: Tx, new: NewMessage) -> None:
    if new.issue_properties is not None:
        for user_id in new.issue_properties.assignees:
            if tx.get_user(user_id) is None:
                raise BadRequest(f"Assignee {user_id} is not a user")


class MessageService:
    def __init__(self, store: Store, files: FileStore, limits: LimitsConfig) -> None:
        self._store = store
        self._files = files
        self._limits = limits

    def parse_paging(self, args: Mapping[str, Sequence[str]]) -> tuple[int | None, int, bool]:
        """``cursor``, ``limit`` and ``direction`` from the query (each name
        with every value given for it), checked.

        Other parameters are ignored, so a cache-buster such as ``?_=123`` is
        no error; a known one given twice is, as picking one would be a guess.
        """
        cursor, limit, direction = (query_value(args.get(name, ()), name) for name in PAGING)
        direction = direction or "forward"
        if direction not in ("forward", "backward"):
            raise BadRequest("Query parameter 'direction' must be 'forward' or 'backward'")
        return _cursor(cursor), page_limit(limit, self._limits.max_page), direction == "backward"

    async def history(self, user: User, room_id: int, args: Mapping[str, Sequence[str]]) -> Page:
        cursor, limit, backward = self.parse_paging(args)

        def read(tx: Tx) -> Page:
            room_for(tx, user, room_id)
            return Page(room_id, tx.page_messages(room_id, 0, cursor, limit, backward))

        return await self._store.read(read)

    async def comments(
        self, user: User, message_id: int, args: Mapping[str, Sequence[str]]
    ) -> tuple[Message, list[Message]]:
        cursor, limit, backward = self.parse_paging(args)

        def read(tx: Tx) -> tuple[Message, list[Message]]:
            parent, _ = _message_for(tx, user, message_id)
            if parent.parent_message_id != 0:
                raise BadRequest("Comments have no comments; comments are one level deep")
            return parent, tx.page_messages(parent.room_id, message_id, cursor, limit, backward)

        return await self._store.read(read)

    async def post(self, user: User, room_id: int, body: Mapping[str, Any]) -> list[int]:
        """Post one message or an atomic batch; return the new ids in order."""
        items = parse_batch(body, self._limits.max_message_bytes)
        now = now_ms()

        def write(tx: Tx) -> list[int]:
            access = room_for(tx, user, room_id)
            access.require_writable()
            for new in items:
                _check_assignees(tx, new)
            ids = [tx.insert_message(room_id, 0, user.user_id, new, now) for new in items]
            for message_id in ids:
                tx.mark_read(message_id, user.user_id, now)  # the author has read it
            tx.add_message_count(room_id, len(ids))
            tx.add_room_reads(room_id, [user.user_id], len(ids))
            out = Outbox(tx, now)
            out.messages(EventType.TEXT_MESSAGES_CREATED, tx.get_messages(ids), room_id)
            out.room(EventType.ROOM_UPDATED, tx.room_state(room_id))
            return ids

        return await self._store.write(write)

    async def comment(self, user: User, parent_id: int, body: Mapping[str, Any]) -> int:
        new = parse_new_message(body, self._limits.max_message_bytes)
        now = now_ms()

        def write(tx: Tx) -> int:
            parent, access = _message_for(tx, user, parent_id)
            if parent.parent_message_id != 0:
                raise BadRequest("Cannot comment on a comment; comments are one level deep")
            access.require_writable()
            _check_assignees(tx, new)
            comment_id = tx.insert_message(parent.room_id, parent_id, user.user_id, new, now)
            tx.mark_read(comment_id, user.user_id, now)
            tx.add_comment_count(parent_id, 1, now)
            out = Outbox(tx, now)
            out.messages(
                EventType.TEXT_MESSAGES_CREATED, tx.get_messages([comment_id]), parent.room_id
            )
            out.messages(
                EventType.TEXT_MESSAGES_UPDATED, tx.get_messages([parent_id]), parent.room_id
            )
            return comment_id

        return await self._store.write(write)

    async def edit(self, user: User, message_id: int, body: Mapping[str, Any]) -> Message:
        patch = parse_patch(body, self._limits.max_message_bytes)
        now = now_ms()

        def write(tx: Tx) -> Message:
            message, access = _message_for(tx, user, message_id)
            access.require_writable()
            if patch.only_issue_properties and message.issue_properties is not None:
                assignees = message.issue_properties.assignees
                access.require_involved_or_moderator(message.user_id, assignees)
            else:
                access.require_author_or_moderator(message.user_id)
            changes: dict[str, Any] = {"last_modified_utc": now}
            if patch.text is not None:
                changes.update(text=patch.text, last_edited_utc=now)
            if patch.markup_type is not None:
                changes["markup_type"] = patch.markup_type
            if patch.priority is not None:
                changes["priority"] = patch.priority
            if patch.issue is not None:
                if message.message_type is not MessageType.ISSUE:
                    raise BadRequest("Field 'issueProperties' is only for messages of type Issue")
                changes["issue_properties"] = parse_issue(patch.issue, message.issue_properties)
            if patch.meeting is not None:
                if message.message_type is not MessageType.MEETING:
                    raise BadRequest(
                        "Field 'meetingProperties' is only for messages of type Meeting"
                    )
                changes["meeting_properties"] = parse_meeting(
                    patch.meeting, message.meeting_properties
                )
            updated = attrs.evolve(message, **changes)
            if updated.issue_properties is not None:
                _check_assignees(tx, NewMessage(text="", issue_properties=updated.issue_properties))
            tx.update_message(updated)
            Outbox(tx, now).messages(
                EventType.TEXT_MESSAGES_UPDATED, tx.get_messages([message_id]), message.room_id
            )
            return tx.get_messages([message_id])[0]

        return await self._store.write(write)

    async def delete(self, user: User, message_id: int) -> None:
        now = now_ms()

        def write(tx: Tx) -> None:
            message, access = _message_for(tx, user, message_id)
            access.require_writable()
            access.require_author_or_moderator(message.user_id)
            room_id = message.room_id
            out = Outbox(tx, now)
            deleted = {
                "parentMessageId": message.parent_message_id,
                "roomId": room_id,
                "messageId": message_id,
            }
            if message.parent_message_id:
                tx.delete_messages([message_id])
                release_files(tx, self._files, {a.content_hash for a in message.attachments})
                tx.add_comment_count(message.parent_message_id, -1, now)
                out.emit(EventType.TEXT_MESSAGE_DELETED, deleted, room_id)
                out.messages(
                    EventType.TEXT_MESSAGES_UPDATED,
                    tx.get_messages([message.parent_message_id]),
                    room_id,
                )
                return
            last = tx.last_message(room_id)
            readers = tx.readers(message_id)
            audience = tx.room_audience(access.room)
            tx.add_room_reads(room_id, readers, -1)
            tx.add_message_count(room_id, -1)
            doomed = [*tx.comment_ids(message_id), message_id]
            hashes = {a.content_hash for f in tx.attachments_of(doomed).values() for a in f}
            tx.delete_messages(doomed)
            release_files(tx, self._files, hashes)
            out.emit(EventType.TEXT_MESSAGE_DELETED, deleted, room_id)
            was_last = last is not None and last.message_id == message_id
            if was_last or not audience <= set(readers):
                out.room(EventType.ROOM_UPDATED, tx.room_state(room_id))

        await self._store.write(write)

    async def mark_read(self, user: User, message_id: int) -> bool:
        """Record the caller's first read; return False if it was already recorded."""
        now = now_ms()

        def write(tx: Tx) -> bool:
            message, _ = _message_for(tx, user, message_id)
            if not tx.mark_read(message_id, user.user_id, now):
                return False
            out = Outbox(tx, now)
            out.messages(
                EventType.TEXT_MESSAGES_UPDATED, tx.get_messages([message_id]), message.room_id
            )
            if message.parent_message_id == 0:
                tx.add_room_reads(message.room_id, [user.user_id], 1)
                state = tx.room_state(message.room_id, only_user=user.user_id)
                out.room(EventType.ROOM_UPDATED, state, audience=[user.user_id])
            return True

        return await self._store.write(write)


def _cursor(raw: str | None) -> int | None:
    """The exclusive message id to page from; None (from either end) for
    nothing, an empty value or -1."""
    if raw is None or raw in ("", "-1"):
        return None
    digits = raw.lstrip("0") or "0"
    if not (raw.isascii() and raw.isdigit()) or len(digits) > len(str(MAX_ID)):
        raise BadRequest(CURSOR_RANGE)
    value = int(digits)
    if value > MAX_ID:
        raise BadRequest(CURSOR_RANGE)
    return value
