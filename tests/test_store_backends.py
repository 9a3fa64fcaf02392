"""Backend conformance: every query of the ``Tx`` protocol, on SQLite and on
PostgreSQL, with the same asserted results; then what only PostgreSQL needs
proving: event ids become visible in commit order across processes, and why
that takes the cluster-wide write lock.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import trio

from trio_events.acl import AclSnapshot
from trio_events.config import Config, ConfigError, StorageConfig
from trio_events.errors import Conflict, NotFound, ServiceUnavailable
from trio_events.model import (
    Attachment,
    Avatar,
    CredentialKind,
    IssueProperties,
    IssueStatus,
    IssueType,
    LastMessage,
    MarkupType,
    MeetingProperties,
    Message,
    MessageType,
    NewMessage,
    Priority,
    ReadTimestamp,
    Room,
    RoomType,
    RoomUserFields,
    StoredEvent,
    User,
    UserStatus,
)
from trio_events.store import Store, Tx, UserUpdate, open_store
from trio_events.store.postgres import WRITE_LOCK, PostgresStore, open_postgres_store

from .pg_helpers import backend_config_fixture, pg_url_fixture  # noqa: F401

TIMEOUT = 30.0


@pytest.fixture
async def store(backend_config: Config) -> AsyncIterator[Store]:
    async with contextlib.AsyncExitStack() as stack:
        with trio.fail_after(TIMEOUT):
            opened = await stack.enter_async_context(open_store(backend_config))
        yield opened


def integrity_error(store: Store) -> type[Exception]:
    return psycopg.IntegrityError if isinstance(store, PostgresStore) else sqlite3.IntegrityError


def new_user(tx: Tx, name: str, *, admin: bool = False, now: int = 10) -> User:
    return tx.insert_user(name, name.title(), f"hash-{name}", admin, now)


# users


async def test_users(store: Store) -> None:
    def setup(tx: Tx) -> tuple[User, User]:
        assert tx.count_users() == 0
        assert tx.list_users() == []
        return new_user(tx, "Alice", admin=True, now=5), new_user(tx, "bob")

    def duplicate(tx: Tx) -> None:
        new_user(tx, "carol")
        new_user(tx, "BOB")

    with trio.fail_after(TIMEOUT):
        alice, bob = await store.write(setup)
        assert alice == User(
            user_id=alice.user_id,
            user_name="Alice",
            display_name="Alice",
            is_admin=True,
            status=UserStatus.ACTIVE,
            created_utc=5,
            last_modified_utc=5,
        )
        assert bob.user_id > alice.user_id
        assert not bob.is_admin

        def lookups(tx: Tx) -> list[object]:
            return [
                tx.count_users(),
                tx.count_active_admins(),
                tx.get_user(alice.user_id),
                tx.get_user(bob.user_id + 100),
                tx.get_user_by_name("alice"),
                tx.get_user_by_name("BOB"),
                tx.get_user_by_name("bo"),
                tx.get_user_by_name("bob%"),
                tx.get_password_hash(bob.user_id),
                tx.get_password_hash(bob.user_id + 100),
                tx.list_users(),
            ]

        assert await store.read(lookups) == [
            2,
            1,
            alice,
            None,
            alice,
            bob,
            None,
            None,
            "hash-bob",
            None,
            [alice, bob],
        ]
        with pytest.raises(Conflict):
            await store.write(duplicate)
        assert await store.read(lambda tx: tx.list_users()) == [alice, bob]

        change = UserUpdate(display_name="Robert", password_hash="new", is_admin=True)
        updated = await store.write(lambda tx: tx.update_user(bob.user_id, change, 50))
        assert updated == User(
            user_id=bob.user_id,
            user_name="bob",
            display_name="Robert",
            is_admin=True,
            status=UserStatus.ACTIVE,
            created_utc=10,
            last_modified_utc=50,
        )
        assert await store.read(lambda tx: tx.get_password_hash(bob.user_id)) == "new"
        assert await store.read(lambda tx: tx.count_active_admins()) == 2
        suspend = UserUpdate(status=UserStatus.SUSPENDED)
        await store.write(lambda tx: tx.update_user(alice.user_id, suspend, 60))
        assert await store.read(lambda tx: tx.count_active_admins()) == 1
        # An empty update still touches last_modified_utc, and nothing else.
        touched = await store.write(lambda tx: tx.update_user(bob.user_id, UserUpdate(), 70))
        assert touched == attrs.evolve(updated, last_modified_utc=70)
        with pytest.raises(NotFound):
            await store.write(lambda tx: tx.update_user(bob.user_id + 100, change, 1))


# credentials


async def test_credentials(store: Store) -> None:
    def setup(tx: Tx) -> tuple[int, int, list[int]]:
        alice, bob = new_user(tx, "alice"), new_user(tx, "bob")
        ids = [
            tx.insert_credential(alice.user_id, CredentialKind.SESSION, "s1", 1, 100).credential_id,
            tx.insert_credential(alice.user_id, CredentialKind.SESSION, "s2", 2, 200).credential_id,
            tx.insert_credential(
                alice.user_id, CredentialKind.SESSION, "s3", 3, None
            ).credential_id,
            tx.insert_credential(alice.user_id, CredentialKind.TOKEN, "t", 4, None).credential_id,
            tx.insert_credential(bob.user_id, CredentialKind.SESSION, "b1", 5, 100).credential_id,
        ]
        return alice.user_id, bob.user_id, ids

    with trio.fail_after(TIMEOUT):
        alice, bob, (s1, s2, s3, token, b1) = await store.write(setup)
        assert len({s1, s2, s3, token, b1}) == 5
        found = await store.read(lambda tx: (tx.get_credential("t"), tx.get_credential("x")))
        assert found[1] is None
        assert found[0] is not None
        assert (found[0].credential_id, found[0].user_id, found[0].kind) == (
            token,
            alice,
            CredentialKind.TOKEN,
        )
        assert (found[0].secret_hash, found[0].created_utc, found[0].expires_utc) == ("t", 4, None)

        # expiry: "expires at or before now" goes, no expiry never goes
        assert await store.write(lambda tx: tx.delete_expired_credentials(99)) == 0
        assert await store.write(lambda tx: tx.delete_expired_credentials(100)) == 2  # s1, b1
        assert await store.read(lambda tx: tx.get_credential("s1")) is None
        assert await store.read(lambda tx: tx.get_credential("b1")) is None

        # kind and keep_id narrow a bulk delete, which reports the ids it deleted
        sessions = CredentialKind.SESSION
        assert await store.write(lambda tx: tx.delete_credentials(alice, sessions, s3)) == [s2]
        assert await store.write(lambda tx: tx.delete_credentials(bob)) == []
        b2 = await store.write(
            lambda tx: tx.insert_credential(bob, CredentialKind.SESSION, "b2", 6, None)
        )
        assert await store.write(lambda tx: tx.delete_credentials(alice)) == [s3, token]
        assert await store.read(lambda tx: tx.get_credential("b2")) == b2

        assert await store.write(lambda tx: tx.delete_credential(b2.credential_id)) is True
        assert await store.write(lambda tx: tx.delete_credential(b2.credential_id)) is False

        def two_tokens(tx: Tx) -> None:
            tx.insert_credential(bob, CredentialKind.TOKEN, "t1", 1, None)
            tx.insert_credential(bob, CredentialKind.TOKEN, "t2", 1, None)

        with pytest.raises(integrity_error(store)):
            await store.write(two_tokens)
        assert await store.read(lambda tx: tx.get_credential("t1")) is None


# avatars


async def test_avatars(store: Store) -> None:
    png = bytes(range(256)) + b"\x00\xff"  # every byte value survives the round trip

    def setup(tx: Tx) -> int:
        room = tx.insert_room("r", RoomType.PUBLIC, 1)
        tx.put_avatar("room", room.room_id, "image/png", png, 10)
        tx.put_avatar("user", room.room_id, "image/gif", b"GIF", 11)
        return room.room_id

    with trio.fail_after(TIMEOUT):
        assert await store.read(lambda tx: tx.get_avatar("user", 1)) is None
        room_id = await store.write(setup)
        assert await store.read(lambda tx: tx.get_avatar("room", room_id)) == Avatar(
            "image/png", png, 10
        )
        assert await store.read(lambda tx: tx.get_avatar("user", room_id)) == Avatar(
            "image/gif", b"GIF", 11
        )
        # a second put replaces
        await store.write(lambda tx: tx.put_avatar("room", room_id, "image/webp", b"W", 12))
        assert await store.read(lambda tx: tx.get_avatar("room", room_id)) == Avatar(
            "image/webp", b"W", 12
        )
        # deleting the room deletes its avatar, not the user's with the same id
        await store.write(lambda tx: tx.delete_room(room_id))
        assert await store.read(lambda tx: tx.get_avatar("room", room_id)) is None
        assert await store.read(lambda tx: tx.get_avatar("user", room_id)) is not None


# rooms, members, pins, reads


async def test_rooms(store: Store) -> None:
    with trio.fail_after(TIMEOUT):
        room = await store.write(lambda tx: tx.insert_room("Lobby", RoomType.PRIVATE, 7))
        assert room == Room(
            room_id=room.room_id,
            display_name="Lobby",
            room_type=RoomType.PRIVATE,
            is_archived=False,
            message_count=0,
            created_utc=7,
            last_modified_utc=7,
        )
        other = await store.write(lambda tx: tx.insert_room("Other", RoomType.PUBLIC, 8))
        assert await store.read(lambda tx: tx.list_rooms()) == [room, other]
        assert await store.read(lambda tx: tx.get_room(other.room_id + 100)) is None

        def update(tx: Tx) -> Room:
            return tx.update_room(
                room.room_id, 9, display_name="Hall", room_type=RoomType.PUBLIC, is_archived=True
            )

        updated = await store.write(update)
        assert (updated.display_name, updated.room_type, updated.is_archived) == (
            "Hall",
            RoomType.PUBLIC,
            True,
        )
        assert (updated.created_utc, updated.last_modified_utc) == (7, 9)
        # only what is given changes
        unarchived = await store.write(
            lambda tx: tx.update_room(room.room_id, 10, is_archived=False)
        )
        assert (unarchived.display_name, unarchived.is_archived) == ("Hall", False)
        with pytest.raises(NotFound):
            await store.write(lambda tx: tx.update_room(other.room_id + 100, 1, display_name="x"))

        await store.write(lambda tx: tx.add_message_count(room.room_id, 3))
        await store.write(lambda tx: tx.add_message_count(room.room_id, -1))
        got = await store.read(lambda tx: tx.get_room(room.room_id))
        assert got is not None
        assert got.message_count == 2
        with pytest.raises(integrity_error(store)):  # CHECK (message_count >= 0)
            await store.write(lambda tx: tx.add_message_count(room.room_id, -3))

        await store.write(lambda tx: tx.delete_room(room.room_id))
        assert await store.read(lambda tx: tx.list_rooms()) == [other]


async def test_members_pins_and_audience(store: Store) -> None:
    def setup(tx: Tx) -> tuple[list[int], int, int]:
        users = [
            new_user(tx, "admin", admin=True).user_id,
            new_user(tx, "alice").user_id,
            new_user(tx, "bob").user_id,
            new_user(tx, "carol").user_id,
        ]
        private = tx.insert_room("p", RoomType.PRIVATE, 1).room_id
        public = tx.insert_room("q", RoomType.PUBLIC, 1).room_id
        return users, private, public

    with trio.fail_after(TIMEOUT):
        (admin, alice, bob, carol), private, public = await store.write(setup)

        def members(tx: Tx) -> None:
            tx.set_member(private, bob, False, 1)
            tx.set_member(private, alice, False, 1)
            tx.set_member(private, alice, True, 2)  # upsert: now a moderator

        await store.write(members)

        def membership(tx: Tx) -> list[object]:
            return [
                tx.members(private),
                tx.members(public),
                tx.membership(private, alice),
                tx.membership(private, bob),
                tx.membership(private, carol),
            ]

        assert await store.read(membership) == [{alice: True, bob: False}, {}, True, False, None]
        private_room = await store.read(lambda tx: tx.get_room(private))
        public_room = await store.read(lambda tx: tx.get_room(public))
        assert private_room is not None
        assert public_room is not None
        assert await store.read(lambda tx: tx.room_audience(private_room)) == {admin, alice, bob}
        assert await store.read(lambda tx: tx.room_audience(public_room)) == {
            admin,
            alice,
            bob,
            carol,
        }
        assert await store.read(lambda tx: tx.accessible_room_ids(carol, False)) == [public]
        assert await store.read(lambda tx: tx.accessible_room_ids(bob, False)) == [
            private,
            public,
        ]
        assert await store.read(lambda tx: tx.accessible_room_ids(carol, True)) == [
            private,
            public,
        ]

        # suspended users are no audience
        suspend = UserUpdate(status=UserStatus.SUSPENDED)
        await store.write(lambda tx: tx.update_user(bob, suspend, 3))
        assert await store.read(lambda tx: tx.room_audience(private_room)) == {admin, alice}
        assert await store.read(lambda tx: tx.room_audience(public_room)) == {admin, alice, carol}

        assert await store.write(lambda tx: tx.remove_member(private, bob)) is True
        assert await store.write(lambda tx: tx.remove_member(private, bob)) is False
        assert await store.read(lambda tx: tx.members(private)) == {alice: True}

        # pins are idempotent: the return says whether anything changed
        pin = [
            await store.write(lambda tx: tx.set_pin(private, carol, True)),
            await store.write(lambda tx: tx.set_pin(private, carol, True)),
            await store.write(lambda tx: tx.set_pin(private, carol, False)),
            await store.write(lambda tx: tx.set_pin(private, carol, False)),
            await store.write(lambda tx: tx.set_pin(private, alice, True)),
        ]
        assert pin == [True, False, True, False, True]


async def test_room_reads_last_message_and_state(store: Store) -> None:
    def setup(tx: Tx) -> tuple[list[int], int]:
        users = [new_user(tx, name).user_id for name in ("alice", "bob", "carol", "dave")]
        return users, tx.insert_room("r", RoomType.PUBLIC, 1).room_id

    with trio.fail_after(TIMEOUT):
        (alice, bob, carol, dave), room_id = await store.write(setup)
        empty = await store.read(lambda tx: tx.room_state(room_id))
        assert (empty.last_message, empty.per_user) == (None, {})

        def fill(tx: Tx) -> int:
            first = tx.insert_message(room_id, 0, alice, NewMessage("one"), 100)
            second = tx.insert_message(room_id, 0, bob, NewMessage("two"), 200)
            tx.insert_message(room_id, second, carol, NewMessage("a comment"), 300)
            tx.add_room_reads(room_id, [alice, bob], 2)  # inserts
            tx.add_room_reads(room_id, [alice], 1)  # adds
            tx.add_room_reads(room_id, [bob], -1)  # subtracts
            tx.add_room_reads(room_id, [carol], -1)  # a new row starts at 0, not -1
            tx.add_room_reads(room_id, [], 5)  # nobody: nothing
            tx.set_member(room_id, dave, True, 1)
            tx.set_pin(room_id, carol, True)
            assert first < second
            return second

        second = await store.write(fill)
        state = await store.read(lambda tx: tx.room_state(room_id))
        room = await store.read(lambda tx: tx.get_room(room_id))
        assert state.room == room
        # the newest top-level message; comments do not count
        assert state.last_message == LastMessage(message_id=second, user_id=bob, created_utc=200)
        assert state.per_user == {
            alice: RoomUserFields(read_count=3),
            bob: RoomUserFields(read_count=1),
            carol: RoomUserFields(read_count=0, is_pinned=True),
            dave: RoomUserFields(is_moderator=True),
        }
        only = await store.read(lambda tx: tx.room_state(room_id, only_user=carol))
        assert only.per_user == {carol: RoomUserFields(read_count=0, is_pinned=True)}
        nobody = await store.read(lambda tx: tx.room_state(room_id, only_user=carol + 100))
        assert (nobody.per_user, nobody.last_message) == ({}, state.last_message)
        assert await store.read(lambda tx: tx.last_message(room_id + 100)) is None
        with pytest.raises(NotFound):
            await store.read(lambda tx: tx.room_state(room_id + 100))

        # deleting the room takes its members, pins, reads and messages along
        await store.write(lambda tx: tx.delete_room(room_id))

        def leftovers(tx: Tx) -> list[object]:
            return [tx.members(room_id), tx.get_message(second), tx.last_message(room_id)]

        assert await store.read(leftovers) == [{}, None, None]
        room_id2 = await store.write(lambda tx: tx.insert_room("again", RoomType.PUBLIC, 1).room_id)
        assert (await store.read(lambda tx: tx.room_state(room_id2))).per_user == {}


# messages, comments, reads


ISSUE = IssueProperties(type=IssueType.BUG, status=IssueStatus.IN_PROGRESS, assignees=(2, 1))
MEETING = MeetingProperties(time_utc=1_700_000_000_000, duration=3_600_000)


async def test_messages(store: Store) -> None:
    def setup(tx: Tx) -> tuple[int, int, int, list[int]]:
        alice, bob = new_user(tx, "alice").user_id, new_user(tx, "bob").user_id
        room_id = tx.insert_room("r", RoomType.PUBLIC, 1).room_id
        other_room = tx.insert_room("s", RoomType.PUBLIC, 1).room_id
        ids = [tx.insert_message(room_id, 0, alice, NewMessage(f"m{i}"), 100 + i) for i in range(6)]
        tx.insert_message(other_room, 0, alice, NewMessage("elsewhere"), 1)
        return alice, bob, room_id, ids

    with trio.fail_after(TIMEOUT):
        alice, bob, room_id, ids = await store.write(setup)
        assert ids == sorted(ids)

        def rich(tx: Tx) -> int:
            new = NewMessage(
                "**issue** 100% done? _yes_",
                markup_type=MarkupType.TEXT_MARKDOWN,
                message_type=MessageType.ISSUE,
                priority=Priority.HIGH,
                issue_properties=ISSUE,
                meeting_properties=MEETING,
            )
            return tx.insert_message(room_id, ids[0], bob, new, 500)

        comment = await store.write(rich)
        got = await store.read(lambda tx: tx.get_message(comment))
        assert got == Message(
            message_id=comment,
            parent_message_id=ids[0],
            user_id=bob,
            room_id=room_id,
            text="**issue** 100% done? _yes_",
            markup_type=MarkupType.TEXT_MARKDOWN,
            message_type=MessageType.ISSUE,
            priority=Priority.HIGH,
            comment_count=0,
            created_utc=500,
            last_modified_utc=500,
            last_edited_utc=0,
            issue_properties=ISSUE,
            meeting_properties=MEETING,
        )
        assert await store.read(lambda tx: tx.get_message(comment + 100)) is None
        assert await store.read(lambda tx: tx.get_messages([])) == []
        picked = await store.read(lambda tx: tx.get_messages([ids[3], comment + 100, ids[1]]))
        assert [m.message_id for m in picked] == [ids[1], ids[3]]  # ascending, missing skipped
        assert [m.text for m in picked] == ["m1", "m3"]

        async def page(
            cursor: int | None, limit: int, backward: bool, parent: int = 0
        ) -> list[int]:
            key = (room_id, parent, cursor, limit, backward)
            return [m.message_id for m in await store.read(partial(page_of, key))]

        assert await page(None, 4, False) == ids[:4]
        assert await page(ids[3], 4, False) == ids[4:]
        assert await page(None, 4, True) == ids[2:]  # the newest 4, still ascending
        assert await page(ids[2], 4, True) == ids[:2]
        assert await page(ids[5], 100, False) == []
        assert await page(None, 10, False, parent=ids[0]) == [comment]
        assert await page(None, 10, True, parent=ids[1]) == []

        # edits
        def edit(tx: Tx) -> None:
            message = tx.get_message(ids[0])
            assert message is not None
            tx.update_message(
                attrs.evolve(
                    message,
                    text="edited",
                    markup_type=MarkupType.TEXT_HTML,
                    priority=Priority.LOW,
                    issue_properties=None,
                    meeting_properties=MeetingProperties(time_utc=5),
                    last_modified_utc=600,
                    last_edited_utc=600,
                    # not editable: must not change
                    user_id=bob,
                    message_type=MessageType.MEETING,
                    created_utc=1,
                )
            )
            tx.add_comment_count(ids[0], 2, 610)
            tx.add_comment_count(ids[0], -1, 620)

        await store.write(edit)
        edited = await store.read(lambda tx: tx.get_message(ids[0]))
        assert edited is not None
        assert (edited.text, edited.markup_type, edited.priority) == (
            "edited",
            MarkupType.TEXT_HTML,
            Priority.LOW,
        )
        assert (edited.issue_properties, edited.meeting_properties) == (
            None,
            MeetingProperties(time_utc=5, duration=0),
        )
        assert (edited.last_edited_utc, edited.last_modified_utc, edited.comment_count) == (
            600,
            620,
            1,
        )
        assert (edited.user_id, edited.message_type, edited.created_utc) == (
            alice,
            MessageType.REGULAR,
            100,
        )
        assert await store.read(lambda tx: tx.comment_ids(ids[0])) == [comment]
        assert await store.read(lambda tx: tx.comment_ids(ids[1])) == []

        # reads: the first mark counts, a second one is ignored
        assert await store.write(lambda tx: tx.mark_read(ids[0], bob, 700)) is True
        assert await store.write(lambda tx: tx.mark_read(ids[0], bob, 800)) is False
        assert await store.write(lambda tx: tx.mark_read(ids[0], alice, 650)) is True
        assert sorted(await store.read(lambda tx: tx.readers(ids[0]))) == [alice, bob]
        assert await store.read(lambda tx: tx.readers(ids[1])) == []
        read = await store.read(lambda tx: tx.get_message(ids[0]))
        assert read is not None
        assert read.read_timestamps == (ReadTimestamp(alice, 650), ReadTimestamp(bob, 700))

        # deleting a message takes its reads along (not its comments: the
        # service deletes those itself, by comment_ids)
        await store.write(lambda tx: tx.delete_messages([ids[0], ids[5]]))
        assert await store.read(lambda tx: tx.get_messages([ids[0], ids[5]])) == []
        assert await store.read(lambda tx: tx.readers(ids[0])) == []
        assert await store.read(lambda tx: tx.get_message(comment)) is not None
        await store.write(lambda tx: tx.delete_messages([]))
        assert len(await store.read(partial(page_of, (room_id, 0, None, 100, False)))) == 4


def page_of(key: tuple[int, int, int | None, int, bool], tx: Tx) -> list[Message]:
    return tx.page_messages(*key)


# attachments


async def test_attachments(store: Store) -> None:
    def setup(tx: Tx) -> tuple[int, list[int], list[int]]:
        alice = new_user(tx, "alice").user_id
        room_id = tx.insert_room("r", RoomType.PUBLIC, 1).room_id
        other = tx.insert_room("s", RoomType.PUBLIC, 1).room_id
        messages = [tx.insert_message(room_id, 0, alice, NewMessage("m"), 1) for _ in range(3)]
        elsewhere = tx.insert_message(other, 0, alice, NewMessage("m"), 1)
        files = [
            tx.insert_attachment(messages[0], room_id, "a.txt", 3, "sha1-a", "hash-a", 10),
            tx.insert_attachment(messages[0], room_id, "b.txt", 0, "sha1-b", "hash-b", 11),
            tx.insert_attachment(messages[1], room_id, "a2.txt", 3, "sha1-a", "hash-a", 12),
            tx.insert_attachment(elsewhere, other, "c.txt", 5, "sha1-c", "hash-c", 13),
        ]
        return room_id, messages, files

    with trio.fail_after(TIMEOUT):
        room_id, (m0, m1, m2), (a, b, a2, c) = await store.write(setup)
        first = Attachment(a, m0, room_id, "a.txt", 3, "sha1-a", "hash-a", 10, 10)
        assert await store.read(lambda tx: tx.get_attachment(a)) == first
        assert await store.read(lambda tx: tx.get_attachment(c + 100)) is None
        of = await store.read(lambda tx: tx.attachments_of([m0, m1, m2]))
        assert {k: [x.attachment_id for x in v] for k, v in of.items()} == {
            m0: [a, b],
            m1: [a2],
            m2: [],
        }
        assert of[m0][0] == first
        assert await store.read(lambda tx: tx.attachments_of([])) == {}
        message = await store.read(lambda tx: tx.get_message(m0))
        assert message is not None
        assert [x.attachment_id for x in message.attachments] == [a, b]

        assert await store.read(lambda tx: tx.room_content_hashes(room_id)) == {"hash-a", "hash-b"}
        assert await store.read(lambda tx: tx.room_content_hashes(room_id + 100)) == set()
        assert await store.read(lambda tx: tx.content_refs([])) == set()
        assert await store.read(lambda tx: tx.content_refs(["hash-a", "hash-c", "hash-z"])) == {
            "hash-a",
            "hash-c",
        }

        await store.write(lambda tx: tx.delete_attachment(b))
        assert await store.read(lambda tx: tx.get_attachment(b)) is None
        assert await store.read(lambda tx: tx.content_refs(["hash-b"])) == set()
        # deleting a message deletes its attachments; other references survive
        await store.write(lambda tx: tx.delete_messages([m0]))
        assert await store.read(lambda tx: tx.get_attachment(a)) is None
        assert await store.read(lambda tx: tx.content_refs(["hash-a"])) == {"hash-a"}
        await store.write(lambda tx: tx.delete_messages([m1]))
        assert await store.read(lambda tx: tx.content_refs(["hash-a"])) == set()
        assert await store.read(lambda tx: tx.room_content_hashes(room_id)) == set()


# the event log


def stored_ids(events: list[StoredEvent]) -> list[int]:
    return [event.event_id for event in events]


async def test_event_log(store: Store) -> None:
    def append(tx: Tx) -> list[int]:
        return [
            tx.append_event("RoomCreated", '{"n": 1}', 5, None, 100),
            tx.append_event("acl.member", '{"n": 2}', 5, [9, 3, 7], 100),
            tx.append_event("aclish", "{}", None, [], 200),  # not internal: no dot
            tx.append_event("acl.room", '{"n": 4}', 6, None, 300),
            tx.append_event("RoomDeleted", "{}", None, None, 400),
        ]

    with trio.fail_after(TIMEOUT):
        assert await store.read(lambda tx: (tx.latest_event_id(), tx.trimmed_through())) == (0, 0)
        assert await store.read(lambda tx: tx.events_after(0, 10)) == []
        e1, e2, e3, e4, e5 = await store.write(append)
        assert e1 < e2 < e3 < e4 < e5
        log = await store.read(lambda tx: tx.events_after(0, 10))
        assert log[1] == StoredEvent(
            event_id=e2,
            event_type="acl.member",
            room_id=5,
            audience=(3, 7, 9),  # sorted
            payload='{"n": 2}',
            created_utc=100,
        )
        assert (log[2].audience, log[2].room_id) == ((), None)
        assert (log[0].audience, log[0].room_id) == (None, 5)
        assert stored_ids(log) == [e1, e2, e3, e4, e5]
        assert stored_ids(await store.read(lambda tx: tx.events_after(e1, 2))) == [e2, e3]
        assert await store.read(lambda tx: tx.events_after(e5, 10)) == []
        assert stored_ids(await store.read(lambda tx: tx.events_between(e1, e4, 10))) == [
            e2,
            e3,
            e4,
        ]
        assert stored_ids(await store.read(lambda tx: tx.events_between(e1, e4, 1))) == [e2]
        assert await store.read(lambda tx: tx.events_between(e2, e2, 10)) == []
        assert await store.read(lambda tx: tx.acl_events_between(0, e5)) == [log[1], log[3]]
        assert stored_ids(await store.read(lambda tx: tx.acl_events_between(e2, e5))) == [e4]
        assert await store.read(lambda tx: tx.acl_events_between(e2, e3)) == []
        assert await store.read(lambda tx: tx.latest_event_id()) == e5

        # trimming: a prefix, old enough or at most keep_after_id, up to limit
        assert await store.write(lambda tx: tx.trim_events(100, 0, 10)) == 0  # none older
        assert await store.write(lambda tx: tx.trim_events(201, e1, 1)) == 1  # limit
        assert await store.read(lambda tx: tx.trimmed_through()) == e1
        assert await store.write(lambda tx: tx.trim_events(201, 0, 10)) == 2  # by age: e2, e3
        assert await store.read(lambda tx: tx.trimmed_through()) == e3
        assert await store.write(lambda tx: tx.trim_events(0, e4, 10)) == 1  # by id: e4
        assert stored_ids(await store.read(lambda tx: tx.events_after(0, 10))) == [e5]
        assert await store.write(lambda tx: tx.trim_events(1000, 0, 10)) == 1
        assert await store.read(lambda tx: tx.events_after(0, 10)) == []
        # the newest id survives the trim of everything: ids never go back
        assert await store.read(lambda tx: (tx.latest_event_id(), tx.trimmed_through())) == (
            e5,
            e5,
        )
        assert await store.write(lambda tx: tx.trim_events(1000, 0, 10)) == 0
        e6 = await store.write(lambda tx: tx.append_event("T", "{}", None, None, 1))
        assert e6 > e5
        assert await store.read(lambda tx: tx.latest_event_id()) == e6


async def test_acl_snapshot(store: Store) -> None:
    def setup(tx: Tx) -> tuple[list[int], list[int]]:
        users = [
            new_user(tx, "admin", admin=True).user_id,
            new_user(tx, "alice").user_id,
            new_user(tx, "bob").user_id,
        ]
        tx.update_user(users[2], UserUpdate(status=UserStatus.SUSPENDED), 2)
        rooms = [
            tx.insert_room("p", RoomType.PRIVATE, 1).room_id,
            tx.insert_room("q", RoomType.PUBLIC, 1).room_id,
            tx.insert_room("r", RoomType.PRIVATE, 1).room_id,
        ]
        tx.set_member(rooms[0], users[1], False, 1)
        tx.set_member(rooms[0], users[2], True, 1)
        tx.set_member(rooms[1], users[1], False, 1)
        tx.append_event("acl.room", "{}", rooms[0], None, 1)
        return users, rooms

    with trio.fail_after(TIMEOUT):
        empty = await store.read(lambda tx: tx.acl_snapshot())
        assert empty == AclSnapshot(event_id=0, users={}, rooms={}, members={})
        (admin, alice, bob), (p, q, r) = await store.write(setup)
        latest = await store.read(lambda tx: tx.latest_event_id())
        snapshot = await store.read(lambda tx: tx.acl_snapshot())
    assert snapshot == AclSnapshot(
        event_id=latest,
        users={admin: (True, True), alice: (False, True), bob: (False, False)},
        rooms={p: RoomType.PRIVATE, q: RoomType.PUBLIC, r: RoomType.PRIVATE},
        members={p: {alice, bob}, q: {alice}},
    )


# transactions


async def test_callbacks_run_after_the_outcome(store: Store) -> None:
    calls: list[str] = []

    def ok(tx: Tx) -> None:
        tx.after_commit(lambda: calls.append("committed"))
        tx.after_rollback(lambda: calls.append("not this"))
        new_user(tx, "alice")

    def fails(tx: Tx) -> None:
        tx.after_rollback(lambda: calls.append("rolled back"))
        tx.after_commit(lambda: calls.append("not this either"))
        new_user(tx, "bob")
        raise KeyError("x")

    with trio.fail_after(TIMEOUT):
        await store.write(ok)
        assert calls == ["committed"]
        with pytest.raises(KeyError):
            await store.write(fails)
        assert calls == ["committed", "rolled back"]


async def test_a_failing_write_changes_nothing(store: Store) -> None:
    """Everything a write can touch, undone together when it raises at the end."""

    def setup(tx: Tx) -> tuple[int, int, int, int]:
        alice = new_user(tx, "alice").user_id
        room_id = tx.insert_room("r", RoomType.PRIVATE, 1).room_id
        message = tx.insert_message(room_id, 0, alice, NewMessage("m"), 1)
        event = tx.append_event("Old", "{}", None, None, 1)
        return alice, room_id, message, event

    def everything(ids: tuple[int, int, int, int], tx: Tx) -> dict[str, Any]:
        alice, room_id, message, _ = ids
        return {
            "users": tx.list_users(),
            "admins": tx.count_active_admins(),
            "hash": tx.get_password_hash(alice),
            "credential": tx.get_credential("s"),
            "avatar": tx.get_avatar("user", alice),
            "rooms": tx.list_rooms(),
            "members": tx.members(room_id),
            "state": tx.room_state(room_id),
            "messages": tx.page_messages(room_id, 0, None, 100, False),
            "comments": tx.comment_ids(message),
            "readers": tx.readers(message),
            "refs": tx.content_refs(["h"]),
            "log": tx.events_after(0, 100),
            "latest": tx.latest_event_id(),
            "trimmed": tx.trimmed_through(),
        }

    def doomed(ids: tuple[int, int, int, int], tx: Tx) -> None:
        alice, room_id, message, event = ids
        bob = new_user(tx, "bob", admin=True).user_id
        tx.update_user(alice, UserUpdate(password_hash="changed", is_admin=True), 2)
        tx.insert_credential(alice, CredentialKind.SESSION, "s", 2, None)
        tx.put_avatar("user", alice, "image/png", b"x", 2)
        tx.insert_room("new", RoomType.PUBLIC, 2)
        tx.update_room(room_id, 2, display_name="renamed")
        tx.set_member(room_id, bob, True, 2)
        tx.set_pin(room_id, alice, True)
        tx.add_room_reads(room_id, [alice], 1)
        tx.add_message_count(room_id, 1)
        comment = tx.insert_message(room_id, message, bob, NewMessage("c"), 2)
        tx.add_comment_count(message, 1, 2)
        tx.insert_attachment(comment, room_id, "f", 1, "c", "h", 2)
        tx.mark_read(message, bob, 2)
        tx.trim_events(10, event, 10)
        tx.append_event("New", "{}", None, None, 2)
        raise RuntimeError("at the very end")

    with trio.fail_after(TIMEOUT):
        ids = await store.write(setup)
        before = await store.read(partial(everything, ids))
        with pytest.raises(RuntimeError, match="at the very end"):
            await store.write(partial(doomed, ids))
        after = await store.read(partial(everything, ids))
        assert after == before
        assert before["trimmed"] == 0
        assert len(before["log"]) == 1
        # the store goes on: the next event gets a higher id (maybe past a hole)
        event = await store.write(lambda tx: tx.append_event("Next", "{}", None, None, 3))
        assert event > ids[3]


async def test_a_read_is_one_snapshot(store: Store) -> None:
    """A write that commits in the middle of a read is not seen by that read."""

    def read(tx: Tx) -> tuple[int, int]:
        before = tx.count_users()
        trio.from_thread.run(store.write, lambda wtx: new_user(wtx, "alice"))
        return before, tx.count_users()

    with trio.fail_after(TIMEOUT):
        await store.write(lambda tx: new_user(tx, "zed"))
        assert await store.read(read) == (1, 1)
        assert await store.read(lambda tx: tx.count_users()) == 2


def test_every_tx_method_is_exercised_here() -> None:
    """A query added to ``Tx`` must get its conformance test in this module."""
    source = Path(__file__).read_text(encoding="utf-8")
    methods = [name for name in vars(Tx) if not name.startswith("_") and callable(vars(Tx)[name])]
    assert len(methods) > 50
    assert [name for name in methods if f"tx.{name}(" not in source] == []


# PostgreSQL only


def storage(url: str, **changes: Any) -> StorageConfig:
    return StorageConfig(backend="postgresql", url=url, **changes)


@contextlib.contextmanager
def raw(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain autocommit connection, every statement bounded."""
    with psycopg.connect(
        url, autocommit=True, connect_timeout=3, options="-c statement_timeout=10000"
    ) as conn:
        yield conn


class Boom(Exception):
    pass


def events_of(tag: str, count: int, fail: bool) -> Callable[[Tx], list[int]]:
    """A write appending ``count`` events tagged ``tag``; it raises at the end if ``fail``."""

    def write(tx: Tx) -> list[int]:
        ids = [
            tx.append_event("Test", json.dumps({"tag": tag, "k": k}), None, None, k)
            for k in range(count)
        ]
        # Under the write lock nobody else appends: after our first id, only ours.
        assert stored_ids(tx.events_after(ids[0] - 1, 100)) == ids
        if fail:
            raise Boom(tag)
        return ids

    return write


def poll(after: int, tx: Tx) -> tuple[list[StoredEvent], list[int]]:
    """New events after the cursor, and (same snapshot) every id at or below it."""
    return tx.events_after(after, 1000), stored_ids(tx.events_between(0, after, 100_000))


async def test_event_ids_become_visible_in_commit_order(pg_url: str) -> None:
    """Three processes (stores) write concurrently, 20% of the writes roll back;
    a broker-like reader moves a cursor forward.  It must never find an event
    appear below its cursor (it would have skipped it for ever), and in the end
    it has seen every committed event, exactly once, in id order."""
    stores_count, tasks, writes = 3, 4, 25
    committed: dict[str, list[int]] = {}
    rolled_back: set[str] = set()
    listened: list[list[int]] = [[] for _ in range(stores_count)]
    seen: list[int] = []
    writers_done = trio.Event()

    def listen(s: int, events: list[StoredEvent]) -> None:
        listened[s].extend(stored_ids(events))

    async def writer(store: PostgresStore, s: int, t: int) -> None:
        for i in range(writes):
            tag, count, fail = f"{s}.{t}.{i}", 1 + (s + t + i) % 3, (s + 2 * t + i) % 5 == 0
            if fail:
                with pytest.raises(Boom):
                    await store.write(events_of(tag, count, fail))
                rolled_back.add(tag)
            else:
                committed[tag] = await store.write(events_of(tag, count, fail))

    async def reader(store: PostgresStore) -> None:
        polls = 0
        while True:
            last_round = writers_done.is_set()
            new, below = await store.read(partial(poll, seen[-1] if seen else 0))
            polls += 1
            late = sorted(set(below) - set(seen))
            assert below == seen, f"events {late} appeared below the cursor after it passed them"
            ids = stored_ids(new)
            assert ids == sorted(set(ids))
            assert not ids or not seen or ids[0] > seen[-1]
            seen.extend(ids)
            if last_round and len(new) < 1000:
                assert polls > 10  # it did poll while the writers ran
                return

    with trio.fail_after(TIMEOUT):
        async with contextlib.AsyncExitStack() as stack:
            stores = [
                await stack.enter_async_context(
                    open_postgres_store(pg_url, storage(pg_url, read_connections=2))
                )
                for _ in range(stores_count + 1)
            ]
            for s in range(stores_count):
                stores[s].add_commit_listener(partial(listen, s))
            async with trio.open_nursery() as readers:
                readers.start_soon(reader, stores[-1])
                async with trio.open_nursery() as nursery:
                    for s in range(stores_count):
                        for t in range(tasks):
                            nursery.start_soon(writer, stores[s], s, t)
                writers_done.set()
            log = await stores[0].read(lambda tx: tx.events_after(0, 100_000))

    assert len(committed) + len(rolled_back) == stores_count * tasks * writes
    assert 0 < len(rolled_back) < len(committed)
    ids = stored_ids(log)
    assert ids == sorted(set(ids))
    assert seen == ids
    by_tag: dict[str, list[int]] = {}
    for event in log:
        by_tag.setdefault(json.loads(event.payload)["tag"], []).append(event.event_id)
    assert by_tag == committed  # every committed event once, no rolled-back one
    for write_ids in committed.values():  # one write's events are consecutive
        assert write_ids == list(range(write_ids[0], write_ids[0] + len(write_ids)))
    for s in range(stores_count):  # each process's listener: its commits, in order
        mine = sorted(i for tag, w in committed.items() if tag.startswith(f"{s}.") for i in w)
        assert listened[s] == mine


INSERT_EVENT = (
    "INSERT INTO events (event_type, payload, created_utc) VALUES ('Raw', '{}', 0)"
    " RETURNING event_id"
)


def inserted(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(INSERT_EVENT).fetchone()
    assert row is not None
    return int(row[0])


def visible(conn: psycopg.Connection[Any]) -> list[int]:
    return [int(row[0]) for row in conn.execute("SELECT event_id FROM events ORDER BY event_id")]


def test_a_plain_identity_column_reveals_ids_out_of_commit_order(pg_url: str) -> None:
    """Why every write takes ``pg_advisory_xact_lock(WRITE_LOCK)``.

    Without it: A takes id n and has not committed yet, B takes n + 1 and
    commits.  A reader now sees n + 1 but not n; a broker that moved its
    cursor to n + 1 would never deliver n, which becomes visible a moment later.
    With the lock, B cannot even start appending until A has committed.
    """
    with raw(pg_url) as a, raw(pg_url) as b, raw(pg_url) as reader:
        a.execute("BEGIN")
        n = inserted(a)
        m = inserted(b)  # autocommit: committed
        assert m == n + 1
        assert visible(reader) == [m]  # n + 1 is visible, n is not
        a.execute("COMMIT")
        assert visible(reader) == [n, m]  # n appears below a cursor already at n + 1

        # the same two writers, taking the lock as the store does
        a.execute("BEGIN")
        a.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        n2 = inserted(a)
        b.execute("BEGIN")
        b.execute("SET LOCAL lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            b.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        b.execute("ROLLBACK")
        assert visible(reader) == [n, m]
        a.execute("COMMIT")
        b.execute("BEGIN")
        b.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        m2 = inserted(b)
        b.execute("COMMIT")
        assert n2 < m2
        assert visible(reader) == [n, m, n2, m2]


async def test_waiting_for_the_write_lock_is_bounded(pg_url: str) -> None:
    """Another process holding the lock past busy_timeout: 503, not a hang."""

    def add(tx: Tx) -> int:
        return new_user(tx, "alice").user_id

    with trio.fail_after(TIMEOUT):
        async with open_postgres_store(pg_url, storage(pg_url, busy_timeout=0.2)) as store:
            with raw(pg_url) as other:
                other.execute("BEGIN")
                other.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                with pytest.raises(ServiceUnavailable, match="busy"):
                    await store.write(add)
                assert await store.read(lambda tx: tx.count_users()) == 0  # reads go on
                other.execute("COMMIT")
            await store.write(add)
            assert store.statistics().failed_writes == 1


async def test_read_transactions_are_read_only(pg_url: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_postgres_store(pg_url, storage(pg_url)) as store:
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                await store.read(lambda tx: new_user(tx, "alice"))
            await store.ping()
            assert await store.read(lambda tx: tx.count_users()) == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://postgres@127.0.0.1:1/nothing", "cannot connect to PostgreSQL"),
        ("postgresql://postgres@127.0.0.1:5432", "expected postgresql://"),
        ("mysql://postgres@127.0.0.1:5432/test", "expected postgresql://"),
    ],
)
async def test_unusable_url_is_a_config_error(url: str, message: str) -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(ConfigError, match=message):
        async with open_postgres_store(url, storage(url)):
            pass


async def test_callbacks_run_under_the_cluster_wide_write_lock(pg_url: str) -> None:
    """SqlTx promises its callbacks run "still under the write lock"; with
    several processes that must be the cluster-wide lock.  Otherwise another
    process can attach a file with the same content hash between our commit and
    our callback, and the callback deletes the bytes its committed row needs."""
    free_during: list[str] = []

    def lock_is_free(label: str) -> Callable[[], None]:
        def probe() -> None:
            with raw(pg_url) as other:
                row = other.execute("SELECT pg_try_advisory_lock(%s)", (WRITE_LOCK,)).fetchone()
                if row and row[0]:
                    free_during.append(label)

        return probe

    def commits(tx: Tx) -> None:
        tx.after_commit(lock_is_free("after_commit"))

    def rolls_back(tx: Tx) -> None:
        tx.after_rollback(lock_is_free("after_rollback"))
        raise Boom

    with trio.fail_after(TIMEOUT):
        async with open_postgres_store(pg_url, storage(pg_url)) as store:
            await store.write(commits)
            with pytest.raises(Boom):
                await store.write(rolls_back)
    assert free_during == []


async def test_deployment_id(store: Store, backend_config: Config) -> None:
    """A random id per database, stable across openings, in the JavaScript-safe range."""
    with trio.fail_after(TIMEOUT):
        first = await store.read(lambda tx: tx.deployment_id())
        async with open_store(backend_config) as again:
            assert await again.read(lambda tx: tx.deployment_id()) == first
    assert 1 <= first < 2**53
