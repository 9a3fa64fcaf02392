"""User administration: who may create, change, suspend and picture whom."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .. import passwords
from ..config import LimitsConfig
from ..errors import BadRequest, Conflict, Forbidden, NotFound
from ..events import EventType
from ..model import Avatar, RoomType, User, UserStatus, now_ms
from ..store import Store, Tx, UserUpdate
from . import validate as v
from .images import check_image
from .outbox import Outbox

__all__ = ["UserChange", "UserService"]

_CREATE_FIELDS = {"userName", "password", "displayName", "isAdmin"}
_PATCH_FIELDS = {"displayName", "password", "currentPassword", "isAdmin", "status"}


@attrs.frozen
class UserChange:
    """What a user update did, for the caller to act on (e.g. close streams)."""

    user: User
    revoked_credentials: list[int]


class UserService:
    def __init__(self, store: Store, limits: LimitsConfig) -> None:
        self._store = store
        self._limits = limits

    async def list_users(self) -> list[User]:
        return await self._store.read(lambda tx: tx.list_users())

    async def create_user(
        self,
        actor: User | None,
        user_name: str,
        password: str,
        display_name: str | None = None,
        is_admin: bool = False,
    ) -> User:
        """Create a user; ``actor`` None means a trusted local caller (the CLI)."""
        if actor is not None and not actor.is_admin:
            raise Forbidden("Only administrators can create users")
        v.check_user_name(user_name, self._limits.max_name_length)
        v.check_password(password)
        display = v.check_display_name(display_name or user_name, self._limits.max_name_length)
        password_hash = await passwords.hash_password(password)
        now = now_ms()

        def write(tx: Tx) -> User:
            user = tx.insert_user(user_name, display, password_hash, is_admin, now)
            Outbox(tx, now).acl_user(user.user_id, user.is_admin, user.is_active, False, False)
            return user

        return await self._store.write(write)

    async def create_user_from_json(self, actor: User, body: Mapping[str, Any]) -> User:
        v.reject_unknown(body, _CREATE_FIELDS)
        return await self.create_user(
            actor,
            v.required_str(body, "userName"),
            v.required_str(body, "password"),
            v.optional_str(body, "displayName"),
            v.optional_bool(body, "isAdmin") or False,
        )

    async def update_user(
        self,
        actor: User | None,
        user_id: int,
        body: Mapping[str, Any],
        keep_credential: int | None = None,
    ) -> UserChange:
        """Apply a PATCH.  Admins may change anything; a user only their own name
        and password, proving the current password to change it."""
        v.reject_unknown(body, _PATCH_FIELDS)
        display_name = v.optional_str(body, "displayName")
        password = v.optional_str(body, "password")
        current_password = v.optional_str(body, "currentPassword")
        is_admin = v.optional_bool(body, "isAdmin")
        status = v.optional_enum(body, "status", UserStatus)
        if display_name is not None:
            display_name = v.check_display_name(display_name, self._limits.max_name_length)
        if password is not None:
            v.check_password(password)
        is_self = actor is not None and actor.user_id == user_id
        if actor is not None and not actor.is_admin:
            if not is_self:
                raise Forbidden("Only administrators can change other users")
            if is_admin is not None or status is not None:
                raise Forbidden("Only administrators can change isAdmin or status")
        if display_name is None and password is None and is_admin is None and status is None:
            raise BadRequest("Nothing to change")

        if password is not None and is_self:
            if current_password is None:
                raise BadRequest("Field 'currentPassword' is required to change your own password")
            stored = await self._store.read(lambda tx: tx.get_password_hash(user_id))
            if not await passwords.verify_password(stored, current_password):
                raise Forbidden("The current password is wrong")
        password_hash = await passwords.hash_password(password) if password is not None else None

        now = now_ms()

        def apply(tx: Tx) -> UserChange:
            before = tx.get_user(user_id)
            if before is None:
                raise NotFound("User not found")
            demoted = (
                before.is_admin
                and before.is_active
                and (is_admin is False or (status is not None and status is not UserStatus.ACTIVE))
            )
            if demoted and tx.count_active_admins() <= 1:
                raise Conflict("The last active administrator cannot be demoted or suspended")
            user = tx.update_user(
                user_id,
                UserUpdate(
                    display_name=display_name,
                    password_hash=password_hash,
                    is_admin=is_admin,
                    status=status,
                ),
                now,
            )
            revoked: list[int] = []
            if not user.is_active:
                revoked = tx.delete_credentials(user_id)
            elif password_hash is not None:
                # A new password ends every other session and the API token.
                keep = keep_credential if is_self else None
                revoked = tx.delete_credentials(user_id, keep_id=keep)
            out = Outbox(tx, now)
            if (before.is_admin, before.is_active) != (user.is_admin, user.is_active):
                out.acl_user(
                    user_id, user.is_admin, user.is_active, before.is_admin, before.is_active
                )
                if before.is_active and user.is_active:
                    _announce_admin_change(tx, out, user)
            out.session_ended(user_id, revoked)
            return UserChange(user=user, revoked_credentials=revoked)

        return await self._store.write(apply)

    async def find_user(self, user_name: str) -> User:
        user = await self._store.read(lambda tx: tx.get_user_by_name(user_name))
        if user is None:
            raise NotFound(f"No user named {user_name!r}")
        return user

    async def get_avatar(self, user_id: int) -> Avatar:
        avatar = await self._store.read(lambda tx: tx.get_avatar("user", user_id))
        if avatar is None:
            raise NotFound("The user has no avatar")
        return avatar

    async def put_avatar(self, actor: User, user_id: int, data: bytes) -> None:
        if not actor.is_admin and actor.user_id != user_id:
            raise Forbidden("Only administrators can change other users' avatars")
        content_type = check_image(data, self._limits.max_avatar_bytes)
        now = now_ms()

        def store(tx: Tx) -> None:
            if tx.get_user(user_id) is None:
                raise NotFound("User not found")
            tx.put_avatar("user", user_id, content_type, data, now)
            tx.update_user(user_id, UserUpdate(), now)

        await self._store.write(store)


def _announce_admin_change(tx: Tx, out: Outbox, user: User) -> None:
    """A promoted admin gains every private room; a demoted one loses those
    they are not a member of."""
    for room in tx.list_rooms():
        if (
            room.room_type is not RoomType.PRIVATE
            or tx.membership(room.room_id, user.user_id) is not None
        ):
            continue
        if user.is_admin:
            state = tx.room_state(room.room_id, only_user=user.user_id)
            out.room(EventType.ROOM_CREATED, state, audience=[user.user_id])
        else:
            tx.set_pin(room.room_id, user.user_id, False)
            out.room_deleted(room.room_id, [user.user_id])
