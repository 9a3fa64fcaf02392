"""Rooms: listing, administration, membership, pins, avatars and permissions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import LimitsConfig
from ..errors import BadRequest, Forbidden, NotFound
from ..events import EventType
from ..files import FileStore
from ..model import Avatar, Room, RoomType, User, now_ms
from ..store import Store, Tx
from ..wire import JsonObject, room_json
from . import validate as v
from .access import RoomAccess, can_access, permissions, room_for
from .attachments import release_files
from .images import check_image
from .outbox import Outbox

__all__ = ["RoomService"]

MAX_INITIAL_MEMBERS = 10_000


def _user_ids(body: Mapping[str, Any], name: str) -> list[int]:
    return v.optional_id_list(body, name, MAX_INITIAL_MEMBERS) or []


class RoomService:
    def __init__(self, store: Store, files: FileStore, limits: LimitsConfig) -> None:
        self._store = store
        self._files = files
        self._limits = limits

    async def list_rooms(self, user: User) -> list[JsonObject]:
        def read(tx: Tx) -> list[JsonObject]:
            return [
                room_json(tx.room_state(room_id, only_user=user.user_id), user.user_id)
                for room_id in tx.accessible_room_ids(user.user_id, user.is_admin)
            ]

        return await self._store.read(read)

    async def get_room(self, user: User, room_id: int) -> JsonObject:
        def read(tx: Tx) -> JsonObject:
            room_for(tx, user, room_id)
            return room_json(tx.room_state(room_id, only_user=user.user_id), user.user_id)

        return await self._store.read(read)

    async def create(self, user: User | None, body: Mapping[str, Any]) -> JsonObject:
        """Create a room (admins; ``user`` None is the trusted CLI)."""
        if user is not None and not user.is_admin:
            raise Forbidden("Only administrators can create rooms")
        v.reject_unknown(body, {"displayName", "roomType", "memberIds", "moderatorIds"})
        name = v.check_display_name(
            v.required_str(body, "displayName"), self._limits.max_name_length
        )
        room_type = v.optional_enum(body, "roomType", RoomType)
        if room_type is None:
            raise BadRequest("Field 'roomType' is required: Private or Public")
        moderators = _user_ids(body, "moderatorIds")
        members = list(dict.fromkeys([*_user_ids(body, "memberIds"), *moderators]))
        now = now_ms()

        def write(tx: Tx) -> JsonObject:
            for member_id in members:
                if tx.get_user(member_id) is None:
                    raise BadRequest(f"User {member_id} does not exist")
            room = tx.insert_room(name, room_type, now)
            out = Outbox(tx, now)
            out.acl_room(room.room_id, str(room_type), None)
            for member_id in members:
                tx.set_member(room.room_id, member_id, member_id in moderators, now)
                out.acl_member(room.room_id, member_id, True)
            state = tx.room_state(room.room_id)
            out.room(EventType.ROOM_CREATED, state)  # everyone who now has access
            return room_json(state, user.user_id if user else 0)

        return await self._store.write(write)

    async def update(self, user: User, room_id: int, body: Mapping[str, Any]) -> JsonObject:
        v.reject_unknown(body, {"displayName", "roomType", "isArchived"})
        name = v.optional_str(body, "displayName")
        if name is not None:
            name = v.check_display_name(name, self._limits.max_name_length)
        room_type = v.optional_enum(body, "roomType", RoomType)
        archived = v.optional_bool(body, "isArchived")
        if name is None and room_type is None and archived is None:
            raise BadRequest("Nothing to change")
        now = now_ms()

        def write(tx: Tx) -> JsonObject:
            access = room_for(tx, user, room_id)
            access.require_moderator()
            before = tx.room_audience(access.room)
            room = tx.update_room(
                room_id, now, display_name=name, room_type=room_type, is_archived=archived
            )
            out = Outbox(tx, now)
            if room.room_type is not access.room.room_type:
                out.acl_room(room_id, str(room.room_type), str(access.room.room_type))
            after = tx.room_audience(room)
            state = tx.room_state(room_id)
            if before == after:
                out.room(EventType.ROOM_UPDATED, state)
            else:
                out.room(EventType.ROOM_UPDATED, state, audience=before & after)
                out.room(EventType.ROOM_CREATED, state, audience=after - before)
                out.room_deleted(room_id, before - after)
                for lost in before - after:
                    tx.set_pin(room_id, lost, False)
            return room_json(state, user.user_id)

        return await self._store.write(write)

    async def delete(self, user: User, room_id: int) -> None:
        now = now_ms()

        def write(tx: Tx) -> None:
            access = room_for(tx, user, room_id)  # 404 before 403: ids do not leak
            if not user.is_admin:
                raise Forbidden("Only administrators can delete rooms")
            audience = tx.room_audience(access.room)
            out = Outbox(tx, now)
            out.room_deleted(room_id, audience)
            out.acl_room_deleted(room_id, str(access.room.room_type), list(tx.members(room_id)))
            hashes = tx.room_content_hashes(room_id)
            tx.delete_room(room_id)
            release_files(tx, self._files, hashes)

        await self._store.write(write)

    async def members(self, user: User, room_id: int) -> list[JsonObject]:
        def read(tx: Tx) -> list[JsonObject]:
            room_for(tx, user, room_id)
            return [
                {"userId": member_id, "isModerator": moderator}
                for member_id, moderator in tx.members(room_id).items()
            ]

        return await self._store.read(read)

    async def put_member(
        self, user: User, room_id: int, member_id: int, body: Mapping[str, Any]
    ) -> None:
        v.reject_unknown(body, {"isModerator"})
        moderator = v.optional_bool(body, "isModerator")
        now = now_ms()

        def write(tx: Tx) -> None:
            access = room_for(tx, user, room_id)
            access.require_moderator()
            member = tx.get_user(member_id)
            if member is None:
                raise NotFound("User not found")
            previous = tx.membership(room_id, member_id)
            had_access = can_access(member, access.room, previous)
            is_moderator = moderator if moderator is not None else bool(previous)
            if previous is not None and previous == is_moderator:
                return  # nothing changes, nothing is announced
            tx.set_member(room_id, member_id, is_moderator, now)
            out = Outbox(tx, now)
            if previous is None:
                out.acl_member(room_id, member_id, True)
            state = tx.room_state(room_id, only_user=member_id)
            if not member.is_active:
                return
            kind = EventType.ROOM_UPDATED if had_access else EventType.ROOM_CREATED
            out.room(kind, state, audience=[member_id])

        await self._store.write(write)

    async def remove_member(self, user: User, room_id: int, member_id: int) -> None:
        now = now_ms()

        def write(tx: Tx) -> None:
            access = room_for(tx, user, room_id)
            access.require_moderator()
            member = tx.get_user(member_id)
            if member is None or not tx.remove_member(room_id, member_id):
                raise NotFound("The user is not a member of this room")
            out = Outbox(tx, now)
            out.acl_member(room_id, member_id, False)
            if not member.is_active:
                return
            if can_access(member, access.room, None):
                state = tx.room_state(room_id, only_user=member_id)
                out.room(EventType.ROOM_UPDATED, state, audience=[member_id])
            else:
                tx.set_pin(room_id, member_id, False)
                out.room_deleted(room_id, [member_id])

        await self._store.write(write)

    async def set_pin(self, user: User, room_id: int, pinned: bool) -> None:
        now = now_ms()

        def write(tx: Tx) -> None:
            room_for(tx, user, room_id)
            if tx.set_pin(room_id, user.user_id, pinned):
                state = tx.room_state(room_id, only_user=user.user_id)
                Outbox(tx, now).room(EventType.ROOM_UPDATED, state, audience=[user.user_id])

        await self._store.write(write)

    async def permissions(self, user: User, room_id: int) -> dict[str, bool]:
        def read(tx: Tx) -> dict[str, bool]:
            return permissions(room_for(tx, user, room_id))

        return await self._store.read(read)

    async def access(self, user: User, room_id: int) -> RoomAccess:
        return await self._store.read(lambda tx: room_for(tx, user, room_id))

    async def get_avatar(self, user: User, room_id: int) -> Avatar:
        def read(tx: Tx) -> Avatar | None:
            room_for(tx, user, room_id)
            return tx.get_avatar("room", room_id)

        avatar = await self._store.read(read)
        if avatar is None:
            raise NotFound("The room has no avatar")
        return avatar

    async def put_avatar(self, user: User, room_id: int, data: bytes) -> None:
        content_type = check_image(data, self._limits.max_avatar_bytes)
        now = now_ms()

        def write(tx: Tx) -> None:
            access = room_for(tx, user, room_id)
            access.require_moderator()
            tx.put_avatar("room", room_id, content_type, data, now)
            tx.update_room(room_id, now)
            Outbox(tx, now).room(EventType.ROOM_UPDATED, tx.room_state(room_id))

        await self._store.write(write)

    async def find(self, name: str) -> Room:
        """A room by exact display name or id, for the CLI."""

        def read(tx: Tx) -> Room:
            rooms = tx.list_rooms()
            for room in rooms:
                if str(room.room_id) == name or room.display_name == name:
                    return room
            raise NotFound(f"No room named {name!r}")

        return await self._store.read(read)
