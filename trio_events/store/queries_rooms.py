"""SQL for rooms, memberships, pins and read counters (both dialects)."""

from __future__ import annotations

from ..errors import NotFound
from ..model import LastMessage, Room, RoomState, RoomType, RoomUserFields
from .dialect import Db

__all__ = ["RoomQueries"]

_ROOM_COLUMNS = (
    "room_id, display_name, room_type, is_archived, message_count, created_utc, last_modified_utc"
)


def _room(row: tuple[int, str, str, int, int, int, int]) -> Room:
    return Room(
        room_id=row[0],
        display_name=row[1],
        room_type=RoomType(row[2]),
        is_archived=bool(row[3]),
        message_count=row[4],
        created_utc=row[5],
        last_modified_utc=row[6],
    )


class RoomQueries:
    _conn: Db

    def get_room(self, room_id: int) -> Room | None:
        row = self._conn.execute(
            f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room_id = ?", (room_id,)
        ).fetchone()
        return _room(row) if row else None

    def list_rooms(self) -> list[Room]:
        return [
            _room(row)
            for row in self._conn.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms ORDER BY room_id")
        ]

    def insert_room(self, display_name: str, room_type: RoomType, now: int) -> Room:
        room_id = self._conn.insert(
            "INSERT INTO rooms (display_name, room_type, created_utc, last_modified_utc)"
            " VALUES (?, ?, ?, ?) RETURNING room_id",
            (display_name, str(room_type), now, now),
        )
        room = self.get_room(room_id)
        assert room is not None
        return room

    def update_room(
        self,
        room_id: int,
        now: int,
        *,
        display_name: str | None = None,
        room_type: RoomType | None = None,
        is_archived: bool | None = None,
    ) -> Room:
        sets = ["last_modified_utc = ?"]
        values: list[object] = [now]
        if display_name is not None:
            sets.append("display_name = ?")
            values.append(display_name)
        if room_type is not None:
            sets.append("room_type = ?")
            values.append(str(room_type))
        if is_archived is not None:
            sets.append("is_archived = ?")
            values.append(int(is_archived))
        self._conn.execute(
            f"UPDATE rooms SET {', '.join(sets)} WHERE room_id = ?", (*values, room_id)
        )
        room = self.get_room(room_id)
        if room is None:
            raise NotFound("Room not found")
        return room

    def delete_room(self, room_id: int) -> None:
        self._conn.execute("DELETE FROM avatars WHERE owner = 'room' AND owner_id = ?", (room_id,))
        self._conn.execute("DELETE FROM rooms WHERE room_id = ?", (room_id,))

    def add_message_count(self, room_id: int, delta: int) -> None:
        self._conn.execute(
            "UPDATE rooms SET message_count = message_count + ? WHERE room_id = ?",
            (delta, room_id),
        )

    # members and pins

    def members(self, room_id: int) -> dict[int, bool]:
        rows = self._conn.execute(
            "SELECT user_id, is_moderator FROM room_members WHERE room_id = ? ORDER BY user_id",
            (room_id,),
        )
        return {user_id: bool(is_moderator) for user_id, is_moderator in rows}

    def membership(self, room_id: int, user_id: int) -> bool | None:
        """``None`` when not a member, else whether the member moderates."""
        row = self._conn.execute(
            "SELECT is_moderator FROM room_members WHERE room_id = ? AND user_id = ?",
            (room_id, user_id),
        ).fetchone()
        return None if row is None else bool(row[0])

    def set_member(self, room_id: int, user_id: int, is_moderator: bool, now: int) -> None:
        self._conn.execute(
            "INSERT INTO room_members (room_id, user_id, is_moderator, added_utc)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (room_id, user_id)"
            " DO UPDATE SET is_moderator = excluded.is_moderator",
            (room_id, user_id, int(is_moderator), now),
        )

    def remove_member(self, room_id: int, user_id: int) -> bool:
        cursor = self._conn.execute(
            "DELETE FROM room_members WHERE room_id = ? AND user_id = ?", (room_id, user_id)
        )
        return cursor.rowcount == 1

    def set_pin(self, room_id: int, user_id: int, pinned: bool) -> bool:
        """Pin or unpin; return whether anything changed."""
        if pinned:
            cursor = self._conn.execute(
                "INSERT INTO room_pins (room_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (room_id, user_id),
            )
        else:
            cursor = self._conn.execute(
                "DELETE FROM room_pins WHERE room_id = ? AND user_id = ?", (room_id, user_id)
            )
        return cursor.rowcount == 1

    # who may see a room

    def room_audience(self, room: Room) -> set[int]:
        """Active users who may access the room: admins, members, or all if Public."""
        if room.room_type is RoomType.PUBLIC:
            rows = self._conn.execute("SELECT user_id FROM users WHERE status = 'Active'")
        else:
            rows = self._conn.execute(
                "SELECT user_id FROM users WHERE status = 'Active' AND (is_admin = 1"
                " OR user_id IN (SELECT user_id FROM room_members WHERE room_id = ?))",
                (room.room_id,),
            )
        return {row[0] for row in rows}

    def accessible_room_ids(self, user_id: int, is_admin: bool) -> list[int]:
        if is_admin:
            rows = self._conn.execute("SELECT room_id FROM rooms ORDER BY room_id")
        else:
            rows = self._conn.execute(
                "SELECT room_id FROM rooms WHERE room_type = 'Public' OR room_id IN"
                " (SELECT room_id FROM room_members WHERE user_id = ?) ORDER BY room_id",
                (user_id,),
            )
        return [row[0] for row in rows]

    # reads and the state needed to render a room for anyone

    def add_room_reads(self, room_id: int, user_ids: list[int], delta: int) -> None:
        self._conn.executemany(
            "INSERT INTO room_reads (room_id, user_id, read_count) VALUES (?, ?, ?)"
            " ON CONFLICT (room_id, user_id) DO UPDATE SET read_count = room_reads.read_count + ?",
            [(room_id, user_id, max(delta, 0), delta) for user_id in user_ids],
        )

    def last_message(self, room_id: int) -> LastMessage | None:
        row = self._conn.execute(
            "SELECT message_id, user_id, created_utc FROM messages"
            " WHERE room_id = ? AND parent_message_id = 0 ORDER BY message_id DESC LIMIT 1",
            (room_id,),
        ).fetchone()
        return LastMessage(message_id=row[0], user_id=row[1], created_utc=row[2]) if row else None

    def room_state(self, room_id: int, only_user: int | None = None) -> RoomState:
        """The room and its per-user fields (for everyone, or just ``only_user``)."""
        room = self.get_room(room_id)
        if room is None:
            raise NotFound("Room not found")
        reads: dict[int, int] = {}
        moderators: set[int] = set()
        pins: set[int] = set()
        user_filter = "" if only_user is None else " AND user_id = ?"
        params: tuple[int, ...] = (room_id,) if only_user is None else (room_id, only_user)
        for user_id, count in self._conn.execute(
            f"SELECT user_id, read_count FROM room_reads WHERE room_id = ?{user_filter}", params
        ):
            reads[user_id] = count
        for (user_id,) in self._conn.execute(
            f"SELECT user_id FROM room_members WHERE room_id = ? AND is_moderator = 1{user_filter}",
            params,
        ):
            moderators.add(user_id)
        for (user_id,) in self._conn.execute(
            f"SELECT user_id FROM room_pins WHERE room_id = ?{user_filter}", params
        ):
            pins.add(user_id)
        per_user = {
            user_id: RoomUserFields(
                read_count=reads.get(user_id, 0),
                is_moderator=user_id in moderators,
                is_pinned=user_id in pins,
            )
            for user_id in reads.keys() | moderators | pins
        }
        return RoomState(room=room, last_message=self.last_message(room_id), per_user=per_user)
