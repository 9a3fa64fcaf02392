"""SQL for messages, comments, read receipts and the event log (both dialects)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ..model import (
    Attachment,
    IssueProperties,
    IssueStatus,
    IssueType,
    MarkupType,
    MeetingProperties,
    Message,
    MessageType,
    NewMessage,
    Priority,
    ReadTimestamp,
    StoredEvent,
)
from .dialect import Db

__all__ = ["MessageQueries"]

_ATTACHMENT_COLUMNS = (
    "attachment_id, message_id, room_id, file_name, file_size, file_checksum, content_hash,"
    " created_utc, last_modified_utc"
)
_MESSAGE_COLUMNS = (
    "message_id, parent_message_id, user_id, room_id, text, markup_type, message_type,"
    " priority, comment_count, created_utc, last_modified_utc, last_edited_utc,"
    " issue_properties, meeting_properties"
)


def _issue_json(value: IssueProperties | None) -> str | None:
    if value is None:
        return None
    return json.dumps(
        {"type": str(value.type), "status": str(value.status), "assignees": list(value.assignees)}
    )


def _meeting_json(value: MeetingProperties | None) -> str | None:
    if value is None:
        return None
    return json.dumps({"timeUtc": value.time_utc, "duration": value.duration})


def _message(row: Sequence[Any], reads: tuple[ReadTimestamp, ...]) -> Message:
    issue = json.loads(row[12]) if row[12] else None
    meeting = json.loads(row[13]) if row[13] else None
    return Message(
        message_id=row[0],
        parent_message_id=row[1],
        user_id=row[2],
        room_id=row[3],
        text=row[4],
        markup_type=MarkupType(row[5]),
        message_type=MessageType(row[6]),
        priority=Priority(row[7]),
        comment_count=row[8],
        created_utc=row[9],
        last_modified_utc=row[10],
        last_edited_utc=row[11],
        read_timestamps=reads,
        issue_properties=IssueProperties(
            type=IssueType(issue["type"]),
            status=IssueStatus(issue["status"]),
            assignees=tuple(issue["assignees"]),
        )
        if issue
        else None,
        meeting_properties=MeetingProperties(
            time_utc=meeting["timeUtc"], duration=meeting["duration"]
        )
        if meeting
        else None,
    )


def _stored(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(
        event_id=row[0],
        event_type=row[1],
        room_id=row[2],
        audience=None if row[3] is None else tuple(json.loads(row[3])),
        payload=row[4],
        created_utc=row[5],
    )


class MessageQueries:
    _conn: Db
    appended: list[StoredEvent]
    committed_callbacks: list[Callable[[], None]]
    rollback_callbacks: list[Callable[[], None]]

    def _with_reads(self, rows: list[Sequence[Any]]) -> list[Message]:
        ids = [row[0] for row in rows]
        reads: dict[int, list[ReadTimestamp]] = {message_id: [] for message_id in ids}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for message_id, user_id, read_utc in self._conn.execute(
                "SELECT message_id, user_id, read_utc FROM message_reads"
                f" WHERE message_id IN ({marks}) ORDER BY read_utc, user_id",
                chunk,
            ):
                reads[message_id].append(ReadTimestamp(user_id=user_id, read_utc=read_utc))
        files = self.attachments_of(ids)
        return [
            attrs.evolve(_message(row, tuple(reads[row[0]])), attachments=tuple(files[row[0]]))
            for row in rows
        ]

    # attachments

    def attachments_of(self, message_ids: Sequence[int]) -> dict[int, list[Attachment]]:
        found: dict[int, list[Attachment]] = {message_id: [] for message_id in message_ids}
        for start in range(0, len(message_ids), 500):
            chunk = list(message_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(
                f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments"
                f" WHERE message_id IN ({marks}) ORDER BY attachment_id",
                chunk,
            ):
                found[row[1]].append(Attachment(*row))
        return found

    def get_attachment(self, attachment_id: int) -> Attachment | None:
        row = self._conn.execute(
            f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments WHERE attachment_id = ?",
            (attachment_id,),
        ).fetchone()
        return Attachment(*row) if row else None

    def insert_attachment(
        self,
        message_id: int,
        room_id: int,
        file_name: str,
        file_size: int,
        file_checksum: str,
        content_hash: str,
        now: int,
    ) -> int:
        return self._conn.insert(
            "INSERT INTO attachments (message_id, room_id, file_name, file_size, file_checksum,"
            " content_hash, created_utc, last_modified_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING attachment_id",
            (message_id, room_id, file_name, file_size, file_checksum, content_hash, now, now),
        )

    def delete_attachment(self, attachment_id: int) -> None:
        self._conn.execute("DELETE FROM attachments WHERE attachment_id = ?", (attachment_id,))

    def room_content_hashes(self, room_id: int) -> set[str]:
        rows = self._conn.execute(
            "SELECT DISTINCT content_hash FROM attachments WHERE room_id = ?", (room_id,)
        )
        return {row[0] for row in rows}

    def content_refs(self, content_hashes: Sequence[str]) -> set[str]:
        """Which of ``content_hashes`` some attachment still refers to."""
        if not content_hashes:
            return set()
        marks = ",".join("?" * len(content_hashes))
        rows = self._conn.execute(
            f"SELECT DISTINCT content_hash FROM attachments WHERE content_hash IN ({marks})",
            list(content_hashes),
        )
        return {row[0] for row in rows}

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.committed_callbacks.append(callback)

    def after_rollback(self, callback: Callable[[], None]) -> None:
        self.rollback_callbacks.append(callback)

    def get_message(self, message_id: int) -> Message | None:
        row = self._conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE message_id = ?", (message_id,)
        ).fetchone()
        return self._with_reads([row])[0] if row else None

    def get_messages(self, message_ids: Sequence[int]) -> list[Message]:
        if not message_ids:
            return []
        marks = ",".join("?" * len(message_ids))
        rows = self._conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE message_id IN ({marks})"
            " ORDER BY message_id",
            list(message_ids),
        ).fetchall()
        return self._with_reads(rows)

    def page_messages(
        self, room_id: int, parent_id: int, cursor: int | None, limit: int, backward: bool
    ) -> list[Message]:
        """A page of a room's top-level messages (``parent_id`` 0) or of one
        message's comments, in ascending id order, the cursor excluded."""
        where = "room_id = ? AND parent_message_id = ?"
        params: list[object] = [room_id, parent_id]
        if cursor is not None:
            where += " AND message_id < ?" if backward else " AND message_id > ?"
            params.append(cursor)
        order = "DESC" if backward else "ASC"
        rows = self._conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {where}"
            f" ORDER BY message_id {order} LIMIT ?",
            (*params, limit),
        ).fetchall()
        if backward:
            rows.reverse()
        return self._with_reads(rows)

    def insert_message(
        self, room_id: int, parent_id: int, user_id: int, new: NewMessage, now: int
    ) -> int:
        return self._conn.insert(
            "INSERT INTO messages (room_id, parent_message_id, user_id, text, markup_type,"
            " message_type, priority, issue_properties, meeting_properties, created_utc,"
            " last_modified_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING message_id",
            (
                room_id,
                parent_id,
                user_id,
                new.text,
                str(new.markup_type),
                str(new.message_type),
                str(new.priority),
                _issue_json(new.issue_properties),
                _meeting_json(new.meeting_properties),
                now,
                now,
            ),
        )

    def update_message(self, message: Message) -> None:
        """Write back the editable fields of ``message``."""
        self._conn.execute(
            "UPDATE messages SET text = ?, markup_type = ?, priority = ?, issue_properties = ?,"
            " meeting_properties = ?, last_modified_utc = ?, last_edited_utc = ?"
            " WHERE message_id = ?",
            (
                message.text,
                str(message.markup_type),
                str(message.priority),
                _issue_json(message.issue_properties),
                _meeting_json(message.meeting_properties),
                message.last_modified_utc,
                message.last_edited_utc,
                message.message_id,
            ),
        )

    def add_comment_count(self, message_id: int, delta: int, now: int) -> None:
        self._conn.execute(
            "UPDATE messages SET comment_count = comment_count + ?, last_modified_utc = ?"
            " WHERE message_id = ?",
            (delta, now, message_id),
        )

    def comment_ids(self, parent_id: int) -> list[int]:
        rows = self._conn.execute(
            "SELECT message_id FROM messages WHERE parent_message_id = ?", (parent_id,)
        )
        return [row[0] for row in rows]

    def readers(self, message_id: int) -> list[int]:
        rows = self._conn.execute(
            "SELECT user_id FROM message_reads WHERE message_id = ?", (message_id,)
        )
        return [row[0] for row in rows]

    def delete_messages(self, message_ids: Sequence[int]) -> None:
        self._conn.executemany(
            "DELETE FROM messages WHERE message_id = ?", [(mid,) for mid in message_ids]
        )

    def mark_read(self, message_id: int, user_id: int, now: int) -> bool:
        """Record the first read; return False when it was already recorded."""
        cursor = self._conn.execute(
            "INSERT INTO message_reads (message_id, user_id, read_utc) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (message_id, user_id, now),
        )
        return cursor.rowcount == 1

    # the event log

    def append_event(
        self,
        event_type: str,
        payload: str,
        room_id: int | None,
        audience: Sequence[int] | None,
        now: int,
    ) -> int:
        members = None if audience is None else sorted(audience)
        event_id = self._conn.insert(
            "INSERT INTO events (event_type, room_id, audience_user_ids, payload, created_utc)"
            " VALUES (?, ?, ?, ?, ?) RETURNING event_id",
            (event_type, room_id, None if members is None else json.dumps(members), payload, now),
        )
        self.appended.append(
            StoredEvent(
                event_id=event_id,
                event_type=event_type,
                room_id=room_id,
                audience=None if members is None else tuple(members),
                payload=payload,
                created_utc=now,
            )
        )
        return event_id

    def events_after(self, event_id: int, limit: int) -> list[StoredEvent]:
        rows = self._conn.execute(
            "SELECT event_id, event_type, room_id, audience_user_ids, payload, created_utc"
            " FROM events WHERE event_id > ? ORDER BY event_id LIMIT ?",
            (event_id, limit),
        )
        return [_stored(row) for row in rows]

    def events_between(self, after: int, until: int, limit: int) -> list[StoredEvent]:
        rows = self._conn.execute(
            "SELECT event_id, event_type, room_id, audience_user_ids, payload, created_utc"
            " FROM events WHERE event_id > ? AND event_id <= ? ORDER BY event_id LIMIT ?",
            (after, until, limit),
        )
        return [_stored(row) for row in rows]

    def acl_events_between(self, after: int, until: int) -> list[StoredEvent]:
        rows = self._conn.execute(
            "SELECT event_id, event_type, room_id, audience_user_ids, payload, created_utc"
            " FROM events WHERE event_id > ? AND event_id <= ? AND event_type LIKE 'acl.%'"
            " ORDER BY event_id",
            (after, until),
        )
        return [_stored(row) for row in rows]

    def trimmed_through(self) -> int:
        (value,) = self._conn.execute(
            "SELECT value FROM log_meta WHERE name = 'trimmed_through'"
        ).fetchone()
        return int(value)

    def deployment_id(self) -> int:
        (value,) = self._conn.execute(
            "SELECT value FROM log_meta WHERE name = 'deployment_id'"
        ).fetchone()
        return int(value)

    def trim_events(self, older_than_utc: int, keep_after_id: int, limit: int) -> int:
        """Delete up to ``limit`` of the oldest events, stopping at the first one
        that is both newer than ``older_than_utc`` and after ``keep_after_id``.
        Only a prefix of the log is ever deleted.  Return how many went."""
        rows = self._conn.execute(
            "SELECT event_id, created_utc FROM events ORDER BY event_id LIMIT ?", (limit,)
        ).fetchall()
        last = 0
        for event_id, created_utc in rows:
            if created_utc >= older_than_utc and event_id > keep_after_id:
                break
            last = event_id
        if not last:
            return 0
        cursor = self._conn.execute("DELETE FROM events WHERE event_id <= ?", (last,))
        self._conn.execute(
            "UPDATE log_meta SET value = ? WHERE name = 'trimmed_through' AND value < ?",
            (last, last),
        )
        return cursor.rowcount

    def latest_event_id(self) -> int:
        # The newest id ever committed, even if retention has trimmed it away.
        newest, trimmed = self._conn.execute(
            "SELECT (SELECT max(event_id) FROM events),"
            " (SELECT value FROM log_meta WHERE name = 'trimmed_through')"
        ).fetchone()
        return max(int(newest or 0), int(trimmed))
