"""The storage interface every backend implements.

A service never holds a connection.  It hands the store a plain synchronous
function of one :class:`Tx`; the store runs it in a worker thread inside one
transaction and commits, or rolls back if the function raises.  So a change is
all-or-nothing by construction, business rules stay ordinary synchronous code
(easy to test, impossible to interleave with other tasks half-way), and the
event loop never blocks on the database.

A backend supplies the :class:`Store` (threads, connections, transactions) and
its :class:`Tx` (the queries).  The SQLite backend is in :mod:`.sqlite`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import attrs

from ..acl import AclSnapshot
from ..model import (
    Attachment,
    Avatar,
    Credential,
    CredentialKind,
    LastMessage,
    Message,
    NewMessage,
    Room,
    RoomState,
    RoomType,
    StoredEvent,
    User,
    UserStatus,
)

__all__ = ["AvatarOwner", "CommitListener", "Store", "StoreStatistics", "Tx", "UserUpdate"]

T = TypeVar("T")

AvatarOwner = str  # "user" or "room"
# Called, without awaiting, with the events of each committed write in order.
CommitListener = Callable[[list[StoredEvent]], None]


@attrs.frozen
class UserUpdate:
    """The columns of a user that a PATCH may change; ``None`` keeps the value."""

    display_name: str | None = None
    password_hash: str | None = None
    is_admin: bool | None = None
    status: UserStatus | None = None


@attrs.frozen
class StoreStatistics:
    reads: int
    writes: int
    failed_writes: int


class Tx(Protocol):
    """The queries a service may run inside one transaction."""

    # users
    def count_users(self) -> int: ...
    def count_active_admins(self) -> int: ...
    def get_user(self, user_id: int) -> User | None: ...
    def get_user_by_name(self, user_name: str) -> User | None: ...
    def get_password_hash(self, user_id: int) -> str | None: ...
    def list_users(self) -> list[User]: ...
    def insert_user(
        self, user_name: str, display_name: str, password_hash: str, is_admin: bool, now: int
    ) -> User: ...
    def update_user(self, user_id: int, update: UserUpdate, now: int) -> User: ...

    # credentials (sessions and Web API tokens)
    def insert_credential(
        self,
        user_id: int,
        kind: CredentialKind,
        secret_hash: str,
        now: int,
        expires_utc: int | None,
    ) -> Credential: ...
    def get_credential(self, secret_hash: str) -> Credential | None: ...
    def delete_credential(self, credential_id: int) -> bool: ...
    def delete_credentials(
        self, user_id: int, kind: CredentialKind | None = None, keep_id: int | None = None
    ) -> list[int]: ...
    def delete_expired_credentials(self, now: int) -> int: ...

    # avatars
    def get_avatar(self, owner: AvatarOwner, owner_id: int) -> Avatar | None: ...
    def put_avatar(
        self, owner: AvatarOwner, owner_id: int, content_type: str, data: bytes, now: int
    ) -> None: ...

    # rooms, members, pins, read counters
    def get_room(self, room_id: int) -> Room | None: ...
    def list_rooms(self) -> list[Room]: ...
    def insert_room(self, display_name: str, room_type: RoomType, now: int) -> Room: ...
    def update_room(
        self,
        room_id: int,
        now: int,
        *,
        display_name: str | None = None,
        room_type: RoomType | None = None,
        is_archived: bool | None = None,
    ) -> Room: ...
    def delete_room(self, room_id: int) -> None: ...
    def add_message_count(self, room_id: int, delta: int) -> None: ...
    def members(self, room_id: int) -> dict[int, bool]: ...
    def membership(self, room_id: int, user_id: int) -> bool | None: ...
    def set_member(self, room_id: int, user_id: int, is_moderator: bool, now: int) -> None: ...
    def remove_member(self, room_id: int, user_id: int) -> bool: ...
    def set_pin(self, room_id: int, user_id: int, pinned: bool) -> bool: ...
    def room_audience(self, room: Room) -> set[int]: ...
    def accessible_room_ids(self, user_id: int, is_admin: bool) -> list[int]: ...
    def add_room_reads(self, room_id: int, user_ids: list[int], delta: int) -> None: ...
    def last_message(self, room_id: int) -> LastMessage | None: ...
    def room_state(self, room_id: int, only_user: int | None = None) -> RoomState: ...

    # messages, comments, reads
    def get_message(self, message_id: int) -> Message | None: ...
    def get_messages(self, message_ids: Sequence[int]) -> list[Message]: ...
    def page_messages(
        self, room_id: int, parent_id: int, cursor: int | None, limit: int, backward: bool
    ) -> list[Message]: ...
    def insert_message(
        self, room_id: int, parent_id: int, user_id: int, new: NewMessage, now: int
    ) -> int: ...
    def update_message(self, message: Message) -> None: ...
    def add_comment_count(self, message_id: int, delta: int, now: int) -> None: ...
    def comment_ids(self, parent_id: int) -> list[int]: ...
    def readers(self, message_id: int) -> list[int]: ...
    def delete_messages(self, message_ids: Sequence[int]) -> None: ...
    def mark_read(self, message_id: int, user_id: int, now: int) -> bool: ...

    # attachments
    def attachments_of(self, message_ids: Sequence[int]) -> dict[int, list[Attachment]]: ...
    def get_attachment(self, attachment_id: int) -> Attachment | None: ...
    def insert_attachment(
        self,
        message_id: int,
        room_id: int,
        file_name: str,
        file_size: int,
        file_checksum: str,
        content_hash: str,
        now: int,
    ) -> int: ...
    def delete_attachment(self, attachment_id: int) -> None: ...
    def content_refs(self, content_hashes: Sequence[str]) -> set[str]: ...
    def room_content_hashes(self, room_id: int) -> set[str]: ...
    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (in the writer thread) once this transaction committed."""
        ...

    def after_rollback(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (in the writer thread) if this transaction rolled back."""
        ...

    # the event log
    def append_event(
        self,
        event_type: str,
        payload: str,
        room_id: int | None,
        audience: Sequence[int] | None,
        now: int,
    ) -> int: ...
    def events_after(self, event_id: int, limit: int) -> list[StoredEvent]: ...
    def latest_event_id(self) -> int: ...
    def events_between(self, after: int, until: int, limit: int) -> list[StoredEvent]: ...
    def acl_events_between(self, after: int, until: int) -> list[StoredEvent]: ...
    def trimmed_through(self) -> int: ...
    def trim_events(self, older_than_utc: int, keep_after_id: int, limit: int) -> int: ...
    def acl_snapshot(self) -> AclSnapshot: ...


class Store(Protocol):
    """Runs functions of a :class:`Tx` in transactions, off the event loop."""

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a read-only snapshot."""
        ...

    async def write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a write transaction; commit if it returns, roll back if it raises."""
        ...

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        ...

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call ``listener`` with the events of every committed write, in commit order.

        It runs in the writer's task right after the commit and must not block.
        """
        ...

    def remove_commit_listener(self, listener: CommitListener) -> None: ...

    def statistics(self) -> StoreStatistics: ...

    observe: Callable[[str, float], None] | None
    """Called with ("read" | "write", seconds) after each store call, if set."""
