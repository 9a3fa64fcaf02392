"""The queries of one transaction, in the SQL both backends speak.

:mod:`.sqlite` and :mod:`.postgres` run them over their own connections through
the small :class:`~.dialect.Db` interface: placeholders are written ``?``,
new ids come from ``RETURNING``, and the few differences between the two
dialects live in :mod:`.dialect`, not here.
"""

from __future__ import annotations

from collections.abc import Callable

from ..acl import AclSnapshot
from ..errors import Conflict, NotFound
from ..model import (
    Avatar,
    Credential,
    CredentialKind,
    RoomType,
    StoredEvent,
    User,
    UserStatus,
)
from .base import AvatarOwner, UserUpdate
from .dialect import Db
from .queries_messages import MessageQueries
from .queries_rooms import RoomQueries

__all__ = ["SqlTx"]

_USER_COLUMNS = "user_id, user_name, display_name, is_admin, status, created_utc, last_modified_utc"


def _user(row: tuple[int, str, str, int, str, int, int]) -> User:
    return User(
        user_id=row[0],
        user_name=row[1],
        display_name=row[2],
        is_admin=bool(row[3]),
        status=UserStatus(row[4]),
        created_utc=row[5],
        last_modified_utc=row[6],
    )


def _credential(row: tuple[int, int, str, str, int, int | None]) -> Credential:
    return Credential(
        credential_id=row[0],
        user_id=row[1],
        kind=CredentialKind(row[2]),
        secret_hash=row[3],
        created_utc=row[4],
        expires_utc=row[5],
    )


class SqlTx(RoomQueries, MessageQueries):
    """Implements :class:`~trio_events.store.base.Tx` over one connection."""

    def __init__(self, conn: Db) -> None:
        self._conn = conn
        self.appended: list[StoredEvent] = []  # events this transaction appended
        # Run by the store right after COMMIT / ROLLBACK, still under the write lock.
        self.committed_callbacks: list[Callable[[], None]] = []
        self.rollback_callbacks: list[Callable[[], None]] = []

    # the access table, for the broker (it needs rooms and the event log alike)

    def acl_snapshot(self) -> AclSnapshot:
        """The whole access table, valid at the newest event id (same transaction)."""
        event_id = self.latest_event_id()
        users = {
            user_id: (bool(is_admin), status == "Active")
            for user_id, is_admin, status in self._conn.execute(
                "SELECT user_id, is_admin, status FROM users"
            )
        }
        rooms = {
            room_id: RoomType(room_type)
            for room_id, room_type in self._conn.execute("SELECT room_id, room_type FROM rooms")
        }
        members: dict[int, set[int]] = {}
        for room_id, user_id in self._conn.execute("SELECT room_id, user_id FROM room_members"):
            members.setdefault(room_id, set()).add(user_id)
        return AclSnapshot(event_id=int(event_id), users=users, rooms=rooms, members=members)

    # users

    def count_users(self) -> int:
        (count,) = self._conn.execute("SELECT count(*) FROM users").fetchone()
        return int(count)

    def count_active_admins(self) -> int:
        (count,) = self._conn.execute(
            "SELECT count(*) FROM users WHERE is_admin = 1 AND status = 'Active'"
        ).fetchone()
        return int(count)

    def get_user(self, user_id: int) -> User | None:
        row = self._conn.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = ?", (user_id,)
        ).fetchone()
        return _user(row) if row else None

    def get_user_by_name(self, user_name: str) -> User | None:
        row = self._conn.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE {self._conn.user_name_equals}",
            (user_name,),
        ).fetchone()
        return _user(row) if row else None

    def get_password_hash(self, user_id: int) -> str | None:
        row = self._conn.execute(
            "SELECT password_hash FROM users WHERE user_id = ?", (user_id,)
        ).fetchone()
        return str(row[0]) if row else None

    def list_users(self) -> list[User]:
        rows = self._conn.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY user_id")
        return [_user(row) for row in rows]

    def insert_user(
        self, user_name: str, display_name: str, password_hash: str, is_admin: bool, now: int
    ) -> User:
        if self.get_user_by_name(user_name) is not None:
            raise Conflict(f"A user named {user_name!r} already exists")
        user_id = self._conn.insert(
            "INSERT INTO users (user_name, display_name, password_hash, is_admin,"
            " created_utc, last_modified_utc) VALUES (?, ?, ?, ?, ?, ?) RETURNING user_id",
            (user_name, display_name, password_hash, int(is_admin), now, now),
        )
        user = self.get_user(user_id)
        assert user is not None
        return user

    def update_user(self, user_id: int, update: UserUpdate, now: int) -> User:
        assignments: list[str] = []
        values: list[object] = []
        for column, value in (
            ("display_name", update.display_name),
            ("password_hash", update.password_hash),
            ("is_admin", None if update.is_admin is None else int(update.is_admin)),
            ("status", None if update.status is None else str(update.status)),
        ):
            if value is not None:
                assignments.append(f"{column} = ?")
                values.append(value)
        assignments.append("last_modified_utc = ?")
        values.append(now)
        cursor = self._conn.execute(
            f"UPDATE users SET {', '.join(assignments)} WHERE user_id = ?", (*values, user_id)
        )
        if cursor.rowcount != 1:
            raise NotFound("User not found")
        user = self.get_user(user_id)
        assert user is not None
        return user

    # credentials

    def insert_credential(
        self,
        user_id: int,
        kind: CredentialKind,
        secret_hash: str,
        now: int,
        expires_utc: int | None,
    ) -> Credential:
        credential_id = self._conn.insert(
            "INSERT INTO credentials (user_id, kind, secret_hash, created_utc, expires_utc)"
            " VALUES (?, ?, ?, ?, ?) RETURNING credential_id",
            (user_id, str(kind), secret_hash, now, expires_utc),
        )
        return Credential(
            credential_id=credential_id,
            user_id=user_id,
            kind=kind,
            secret_hash=secret_hash,
            created_utc=now,
            expires_utc=expires_utc,
        )

    def get_credential(self, secret_hash: str) -> Credential | None:
        row = self._conn.execute(
            "SELECT credential_id, user_id, kind, secret_hash, created_utc, expires_utc"
            " FROM credentials WHERE secret_hash = ?",
            (secret_hash,),
        ).fetchone()
        return _credential(row) if row else None

    def delete_credential(self, credential_id: int) -> bool:
        cursor = self._conn.execute(
            "DELETE FROM credentials WHERE credential_id = ?", (credential_id,)
        )
        return cursor.rowcount == 1

    def delete_credentials(
        self, user_id: int, kind: CredentialKind | None = None, keep_id: int | None = None
    ) -> list[int]:
        query = "DELETE FROM credentials WHERE user_id = ?"
        params: list[object] = [user_id]
        if kind is not None:
            query += " AND kind = ?"
            params.append(str(kind))
        if keep_id is not None:
            query += " AND credential_id != ?"
            params.append(keep_id)
        rows = self._conn.execute(query + " RETURNING credential_id", params).fetchall()
        return sorted(int(row[0]) for row in rows)

    def delete_expired_credentials(self, now: int) -> int:
        cursor = self._conn.execute(
            "DELETE FROM credentials WHERE expires_utc IS NOT NULL AND expires_utc <= ?", (now,)
        )
        return cursor.rowcount

    # avatars

    def get_avatar(self, owner: AvatarOwner, owner_id: int) -> Avatar | None:
        row = self._conn.execute(
            "SELECT content_type, data, updated_utc FROM avatars WHERE owner = ? AND owner_id = ?",
            (owner, owner_id),
        ).fetchone()
        return Avatar(content_type=row[0], data=bytes(row[1]), updated_utc=row[2]) if row else None

    def put_avatar(
        self, owner: AvatarOwner, owner_id: int, content_type: str, data: bytes, now: int
    ) -> None:
        self._conn.execute(
            "INSERT INTO avatars (owner, owner_id, content_type, data, updated_utc)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (owner, owner_id) DO UPDATE SET"
            " content_type = excluded.content_type, data = excluded.data,"
            " updated_utc = excluded.updated_utc",
            (owner, owner_id, content_type, data, now),
        )
