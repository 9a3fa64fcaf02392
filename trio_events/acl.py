"""Who may access which room, in memory, kept current by the event log.

The broker routes every event with this table and never queries the
database.  It is loaded once from the store (a snapshot taken in the same
read transaction as the event id it is valid at) and then changed only by the
internal ``acl.*`` events, applied in log order.  Because those events are
appended in the same transaction as the change they describe, the table at
event N is exactly the access rule as it stood when event N committed.

The rule (API.md section 4): admins may access every room; a Public room is
open to every active user; a Private room only to its members.  Suspended
users access nothing.

Pure code: no I/O, no Trio.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import attrs

from .events import EventType
from .model import RoomType, StoredEvent

__all__ = ["AclSnapshot", "AclStore", "recipients"]


@attrs.frozen
class AclSnapshot:
    """The access table as stored, valid at ``event_id``."""

    event_id: int
    users: dict[int, tuple[bool, bool]]  # user_id -> (is_admin, active)
    rooms: dict[int, RoomType]
    members: dict[int, set[int]]  # room_id -> member user ids


class AclStore:
    def __init__(self, snapshot: AclSnapshot | None = None) -> None:
        self.event_id = 0
        self._admins: set[int] = set()
        self._active: set[int] = set()
        self._rooms: dict[int, RoomType] = {}
        self._members: dict[int, set[int]] = {}
        if snapshot is not None:
            self.event_id = snapshot.event_id
            for user_id, (is_admin, active) in snapshot.users.items():
                self._set_user(user_id, is_admin, active)
            self._rooms = dict(snapshot.rooms)
            self._members = {room: set(users) for room, users in snapshot.members.items()}

    def _set_user(self, user_id: int, is_admin: bool, active: bool) -> None:
        (self._admins.add if is_admin else self._admins.discard)(user_id)
        (self._active.add if active else self._active.discard)(user_id)

    def apply(self, event: StoredEvent) -> None:
        """Apply an ``acl.*`` event; other events leave the table as it is."""
        self.event_id = max(self.event_id, event.event_id)
        if event.event_type == EventType.ACL_USER:
            data = json.loads(event.payload)
            self._set_user(data["userId"], data["isAdmin"], data["active"])
        elif event.event_type == EventType.ACL_ROOM:
            data = json.loads(event.payload)
            if data.get("deleted"):
                self._rooms.pop(data["roomId"], None)
                self._members.pop(data["roomId"], None)
            else:
                self._rooms[data["roomId"]] = RoomType(data["roomType"])
        elif event.event_type == EventType.ACL_MEMBER:
            data = json.loads(event.payload)
            members = self._members.setdefault(data["roomId"], set())
            (members.add if data["member"] else members.discard)(data["userId"])

    def unapply(self, event: StoredEvent) -> None:
        """Undo an ``acl.*`` event: run the table backwards past ``event``.

        Used by resume to find the table as it stood at an older event id.
        """
        self.event_id = event.event_id - 1
        data = json.loads(event.payload) if event.event_type.startswith("acl.") else None
        if data is None:
            return
        if event.event_type == EventType.ACL_USER:
            self._set_user(data["userId"], data["wasAdmin"], data["wasActive"])
        elif event.event_type == EventType.ACL_ROOM:
            room_id = data["roomId"]
            if data.get("deleted"):
                self._rooms[room_id] = RoomType(data["roomType"])
                self._members[room_id] = set(data["members"])
            elif data.get("previousType") is None:
                self._rooms.pop(room_id, None)
                self._members.pop(room_id, None)
            else:
                self._rooms[room_id] = RoomType(data["previousType"])
        elif event.event_type == EventType.ACL_MEMBER:
            members = self._members.setdefault(data["roomId"], set())
            (members.discard if data["member"] else members.add)(data["userId"])

    def copy(self) -> AclStore:
        clone = AclStore()
        clone.event_id = self.event_id
        clone._admins = set(self._admins)
        clone._active = set(self._active)
        clone._rooms = dict(self._rooms)
        clone._members = {room: set(users) for room, users in self._members.items()}
        return clone

    def is_active(self, user_id: int) -> bool:
        return user_id in self._active

    def may_access(self, user_id: int, room_id: int) -> bool:
        room_type = self._rooms.get(room_id)
        if room_type is None or user_id not in self._active:
            return False
        return (
            room_type is RoomType.PUBLIC
            or user_id in self._admins
            or user_id in self._members.get(room_id, ())
        )

    def room_exists(self, room_id: int) -> bool:
        return room_id in self._rooms


def recipients(event: StoredEvent, acl: AclStore, candidates: Iterable[int]) -> set[int]:
    """Which of ``candidates`` (the users with open streams) receive ``event``.

    Internal events reach nobody.  An explicit audience is taken as it is
    (intersected with active users); a room audience is everyone who may
    access the room per ``acl``, which must be the table as of this event.
    """
    if "." in event.event_type:
        return set()
    if event.audience is not None:
        wanted = set(event.audience)
        return {user for user in candidates if user in wanted and acl.is_active(user)}
    if event.room_id is None:
        return set()
    room_id = event.room_id
    return {user for user in candidates if acl.may_access(user, room_id)}
