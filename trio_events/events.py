"""Event types of the stream and of the log.

The six client-facing types are those of the Events API document.  Types
with a dot are internal: they travel through the same log in commit order and
tell the router who may see what (``acl.*``) or whose streams to end
(``session.ended``); they are never sent to a client.

Payloads are stored as JSON.  Room events (RoomCreated, RoomUpdated) store a
room *template* under ``roomTemplate`` that is rendered per recipient, see
:mod:`trio_events.wire`.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from .model import StoredEvent
from .wire import render_room

__all__ = [
    "EventType",
    "client_data",
    "encode_for",
    "encode_shared",
    "is_internal",
    "is_per_recipient",
]


class EventType(enum.StrEnum):
    TEXT_MESSAGES_CREATED = "TextMessagesCreated"
    TEXT_MESSAGES_UPDATED = "TextMessagesUpdated"
    TEXT_MESSAGE_DELETED = "TextMessageDeleted"
    ROOM_CREATED = "RoomCreated"
    ROOM_UPDATED = "RoomUpdated"
    ROOM_DELETED = "RoomDeleted"
    # internal
    ACL_USER = "acl.user"  # {userId, isAdmin, active}
    ACL_ROOM = "acl.room"  # {roomId, roomType} or {roomId, deleted: true}
    ACL_MEMBER = "acl.member"  # {roomId, userId, member}
    SESSION_ENDED = "session.ended"  # {userId, credentialIds}


def is_internal(event_type: str) -> bool:
    return "." in event_type


def encode_shared(event: StoredEvent) -> str:
    """The frame of an event whose data is the same for every recipient.

    The stored payload is already compact JSON, so it is spliced in as it is.
    """
    return f'{{"type":"{event.event_type}","data":{event.payload},"eventId":{event.event_id}}}'


PER_RECIPIENT = frozenset({"RoomCreated", "RoomUpdated"})


def is_per_recipient(event: StoredEvent) -> bool:
    """Room events carry a template rendered per viewer (decided by type, never
    by looking for a key in the payload's text, which users write)."""
    return event.event_type in PER_RECIPIENT


def encode_for(event: StoredEvent, user_id: int) -> str:
    """The frame of ``event`` as ``user_id`` receives it."""
    if not is_per_recipient(event):
        return encode_shared(event)
    return json.dumps(
        {"type": event.event_type, "data": client_data(event, user_id), "eventId": event.event_id},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def client_data(event: StoredEvent, user_id: int) -> dict[str, Any]:
    """The ``data`` of ``event`` as ``user_id`` receives it."""
    payload: dict[str, Any] = json.loads(event.payload)
    template = payload.get("roomTemplate")
    if template is not None:
        return {"room": render_room(template, user_id)}
    return payload
