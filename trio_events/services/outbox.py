"""Append domain events to the log inside the transaction that caused them.

Because the events are rows written by the same transaction as the change,
an event exists if and only if its change committed (the transactional
outbox).  These helpers only build payloads; they never do I/O of their own.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

from ..events import EventType
from ..model import Message, RoomState
from ..store import Tx
from ..wire import message_json, room_template

__all__ = ["Outbox"]


class Outbox:
    def __init__(self, tx: Tx, now: int) -> None:
        self._tx = tx
        self._now = now

    def emit(
        self,
        event_type: EventType | str,
        data: dict[str, Any],
        room_id: int | None = None,
        audience: Collection[int] | None = None,
    ) -> int:
        """Append one event; ``audience`` None means the room's audience."""
        if audience is not None and not audience:
            return 0
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        members = None if audience is None else sorted(audience)
        return self._tx.append_event(str(event_type), payload, room_id, members, self._now)

    def messages(self, event_type: EventType, messages: Iterable[Message], room_id: int) -> None:
        self.emit(event_type, {"messages": [message_json(m) for m in messages]}, room_id)

    def room(
        self, event_type: EventType, state: RoomState, audience: Collection[int] | None = None
    ) -> None:
        only = None if audience is None else set(audience)
        self.emit(
            event_type, {"roomTemplate": room_template(state, only)}, state.room.room_id, audience
        )

    def room_deleted(self, room_id: int, audience: Collection[int]) -> None:
        self.emit(EventType.ROOM_DELETED, {"roomId": room_id}, room_id, audience)

    # Every acl.* event also records the state it replaces, so that the access
    # table can be run backwards from now to any retained event id (resume).

    def acl_user(
        self, user_id: int, is_admin: bool, active: bool, was_admin: bool, was_active: bool
    ) -> None:
        data = {
            "userId": user_id,
            "isAdmin": is_admin,
            "active": active,
            "wasAdmin": was_admin,
            "wasActive": was_active,
        }
        self._internal(EventType.ACL_USER, data, None)

    def acl_room(self, room_id: int, room_type: str, previous_type: str | None) -> None:
        """A room created (``previous_type`` None) or whose type changed."""
        data = {"roomId": room_id, "roomType": room_type, "previousType": previous_type}
        self._internal(EventType.ACL_ROOM, data, room_id)

    def acl_room_deleted(self, room_id: int, room_type: str, members: list[int]) -> None:
        data = {"roomId": room_id, "deleted": True, "roomType": room_type, "members": members}
        self._internal(EventType.ACL_ROOM, data, room_id)

    def acl_member(self, room_id: int, user_id: int, member: bool) -> None:
        self._internal(
            EventType.ACL_MEMBER, {"roomId": room_id, "userId": user_id, "member": member}, room_id
        )

    def session_ended(self, user_id: int, credential_ids: list[int]) -> None:
        if credential_ids:
            self._internal(
                EventType.SESSION_ENDED, {"userId": user_id, "credentialIds": credential_ids}, None
            )

    def _internal(self, event_type: EventType, data: dict[str, Any], room_id: int | None) -> None:
        payload = json.dumps(data, separators=(",", ":"))
        self._tx.append_event(str(event_type), payload, room_id, None, self._now)
