"""The access table and the routing decision, as pure code (API.md 4 and 8).

Events are built by hand with payloads shaped exactly as
:mod:`trio_events.services.outbox` writes them; no store, no Trio.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from trio_events.acl import AclSnapshot, AclStore, recipients
from trio_events.events import EventType, client_data
from trio_events.model import LastMessage, Room, RoomState, RoomType, RoomUserFields, StoredEvent
from trio_events.wire import room_template

ADMIN, ALICE, BOB, CAROL, SUSPENDED = 1, 2, 3, 4, 5
PUBLIC, PRIVATE, GONE = 10, 11, 12
EVERYONE = (ADMIN, ALICE, BOB, CAROL, SUSPENDED)


def event(
    event_id: int,
    event_type: str,
    data: dict[str, Any],
    room_id: int | None = None,
    audience: tuple[int, ...] | None = None,
) -> StoredEvent:
    payload = json.dumps(data, separators=(",", ":"))
    return StoredEvent(event_id, event_type, room_id, audience, payload, 0)


def acl_user(event_id: int, user_id: int, is_admin: bool, active: bool) -> StoredEvent:
    data = {"userId": user_id, "isAdmin": is_admin, "active": active}
    return event(event_id, EventType.ACL_USER, data)


def acl_room(event_id: int, room_id: int, room_type: str | None) -> StoredEvent:
    data: dict[str, Any] = {"roomId": room_id}
    if room_type is None:
        data["deleted"] = True
    else:
        data["roomType"] = room_type
    return event(event_id, EventType.ACL_ROOM, data, room_id)


def acl_member(event_id: int, room_id: int, user_id: int, member: bool) -> StoredEvent:
    data = {"roomId": room_id, "userId": user_id, "member": member}
    return event(event_id, EventType.ACL_MEMBER, data, room_id)


def snapshot() -> AclSnapshot:
    """An admin, three active users, one suspended; a public and a private room."""
    return AclSnapshot(
        event_id=40,
        users={
            ADMIN: (True, True),
            ALICE: (False, True),
            BOB: (False, True),
            CAROL: (False, True),
            SUSPENDED: (False, False),
        },
        rooms={PUBLIC: RoomType.PUBLIC, PRIVATE: RoomType.PRIVATE},
        members={PRIVATE: {ALICE, SUSPENDED}},
    )


def built_by_events() -> AclStore:
    """The same table as :func:`snapshot`, built only with ``apply``."""
    acl = AclStore()
    log = [
        acl_user(1, ADMIN, True, True),
        acl_user(2, ALICE, False, True),
        acl_user(3, BOB, False, True),
        acl_user(4, CAROL, False, True),
        acl_user(5, SUSPENDED, False, True),
        acl_room(6, PUBLIC, "Public"),
        acl_room(7, PRIVATE, "Private"),
        acl_member(8, PRIVATE, ALICE, True),
        acl_member(9, PRIVATE, SUSPENDED, True),
        acl_room(10, GONE, "Public"),
        acl_member(11, GONE, BOB, True),
        acl_room(12, GONE, None),
        acl_user(40, SUSPENDED, False, False),
    ]
    for item in log:
        acl.apply(item)
    return acl


def access_table(acl: AclStore) -> dict[tuple[int, int], bool]:
    return {
        (user, room): acl.may_access(user, room)
        for user in EVERYONE
        for room in (PUBLIC, PRIVATE, GONE, 99)
    }


EXPECTED_ACCESS = {
    (user, room): (
        user != SUSPENDED and (room == PUBLIC or (room == PRIVATE and user in (ADMIN, ALICE)))
    )
    for user in EVERYONE
    for room in (PUBLIC, PRIVATE, GONE, 99)
}


@pytest.mark.parametrize("make", [lambda: AclStore(snapshot()), built_by_events])
def test_access_rule(make: Any) -> None:
    acl: AclStore = make()
    assert acl.event_id == 40
    assert access_table(acl) == EXPECTED_ACCESS
    assert [acl.is_active(u) for u in EVERYONE] == [True, True, True, True, False]
    assert (acl.room_exists(PUBLIC), acl.room_exists(GONE)) == (True, False)


def test_empty_store_knows_nothing() -> None:
    acl = AclStore()
    assert acl.event_id == 0
    assert not acl.may_access(ALICE, PUBLIC)
    assert not acl.is_active(ALICE)


def test_snapshot_is_copied_not_shared() -> None:
    snap = snapshot()
    acl = AclStore(snap)
    snap.members[PRIVATE].add(BOB)
    snap.rooms[99] = RoomType.PUBLIC
    assert not acl.may_access(BOB, PRIVATE)
    assert not acl.room_exists(99)


def test_apply_changes_and_event_id() -> None:
    acl = AclStore(snapshot())
    acl.apply(acl_member(41, PRIVATE, BOB, True))
    assert acl.may_access(BOB, PRIVATE)
    acl.apply(acl_member(42, PRIVATE, ALICE, False))
    assert not acl.may_access(ALICE, PRIVATE)
    acl.apply(acl_room(43, PRIVATE, "Public"))
    assert acl.may_access(ALICE, PRIVATE)
    acl.apply(acl_user(44, ALICE, True, True))
    acl.apply(acl_room(45, PRIVATE, "Private"))
    assert acl.may_access(ALICE, PRIVATE)  # now an admin
    assert not acl.may_access(CAROL, PRIVATE)
    acl.apply(acl_user(46, SUSPENDED, False, True))
    assert acl.may_access(SUSPENDED, PRIVATE)  # reinstated, still a member
    acl.apply(acl_room(47, PRIVATE, None))
    assert not any(acl.may_access(u, PRIVATE) for u in EVERYONE)
    acl.apply(acl_member(48, PRIVATE, BOB, False))  # late rows for a deleted room are harmless
    assert acl.event_id == 48
    acl.apply(event(30, EventType.TEXT_MESSAGES_CREATED, {"messages": []}, PUBLIC))
    assert acl.event_id == 48  # never goes back
    assert access_table(acl)[(BOB, PUBLIC)] is True


def test_client_events_leave_the_table_alone() -> None:
    acl = AclStore(snapshot())
    before = access_table(acl)
    acl.apply(event(41, EventType.ROOM_DELETED, {"roomId": PUBLIC}, PUBLIC, (ALICE,)))
    acl.apply(event(42, EventType.SESSION_ENDED, {"userId": ALICE, "credentialIds": [1]}))
    assert access_table(acl) == before
    assert acl.event_id == 42


def message_event(room_id: int) -> StoredEvent:
    return event(50, EventType.TEXT_MESSAGES_CREATED, {"messages": []}, room_id)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(acl_user(50, ALICE, False, True), set(), id="acl.user"),
        pytest.param(acl_room(50, PUBLIC, "Public"), set(), id="acl.room"),
        pytest.param(acl_member(50, PUBLIC, ALICE, True), set(), id="acl.member"),
        pytest.param(
            event(50, EventType.SESSION_ENDED, {"userId": ALICE, "credentialIds": [3]}),
            set(),
            id="session.ended",
        ),
        pytest.param(message_event(PUBLIC), {ADMIN, ALICE, BOB}, id="public-room"),
        pytest.param(message_event(PRIVATE), {ADMIN, ALICE}, id="private-room"),
        pytest.param(message_event(GONE), set(), id="deleted-room"),
        pytest.param(message_event(99), set(), id="unknown-room"),
        pytest.param(
            event(50, EventType.TEXT_MESSAGES_CREATED, {"messages": []}), set(), id="no-room"
        ),
        pytest.param(
            event(50, EventType.ROOM_DELETED, {"roomId": GONE}, GONE, (BOB, CAROL, SUSPENDED)),
            {BOB},
            id="explicit-audience-of-deleted-room",
        ),
        pytest.param(
            event(50, EventType.ROOM_UPDATED, {}, PRIVATE, (ALICE,)),
            {ALICE},
            id="explicit-audience-reader-only",
        ),
        pytest.param(
            event(50, EventType.ROOM_CREATED, {}, PRIVATE, (SUSPENDED,)),
            set(),
            id="explicit-audience-suspended",
        ),
        pytest.param(
            event(50, EventType.ROOM_CREATED, {}, PRIVATE, (77,)), set(), id="unknown-user"
        ),
    ],
)
def test_recipients(item: StoredEvent, expected: set[int]) -> None:
    acl = AclStore(snapshot())
    candidates = [ADMIN, ALICE, BOB, SUSPENDED]  # CAROL has no open stream
    assert recipients(item, acl, candidates) == expected
    assert recipients(item, acl, []) == set()


@pytest.mark.parametrize("make", [lambda: AclStore(snapshot()), built_by_events])
@pytest.mark.parametrize("room_id", [PUBLIC, PRIVATE, GONE])
def test_room_audience_matches_may_access(make: Any, room_id: int) -> None:
    acl: AclStore = make()
    expected = {u for u in EVERYONE if EXPECTED_ACCESS[(u, room_id)]}
    assert recipients(message_event(room_id), acl, EVERYONE) == expected


def room_event() -> StoredEvent:
    state = RoomState(
        room=Room(PRIVATE, "team", RoomType.PRIVATE, False, 5, 1000, 2000),
        last_message=LastMessage(123, ALICE, 1500),
        per_user={
            ALICE: RoomUserFields(read_count=5, is_moderator=True),
            BOB: RoomUserFields(read_count=2, is_pinned=True),
            CAROL: RoomUserFields(read_count=9),  # never below zero
        },
    )
    return event(60, EventType.ROOM_UPDATED, {"roomTemplate": room_template(state)}, PRIVATE)


@pytest.mark.parametrize(
    ("user", "unread", "moderator", "pinned"),
    [
        (ALICE, 0, True, False),
        (BOB, 3, False, True),
        (CAROL, 0, False, False),
        (ADMIN, 5, False, False),
    ],
)
def test_room_event_rendered_per_recipient(
    user: int, unread: int, moderator: bool, pinned: bool
) -> None:
    room = client_data(room_event(), user)["room"]
    assert room == {
        "roomId": PRIVATE,
        "displayName": "team",
        "roomType": "Private",
        "createdUtc": 1000,
        "lastModifiedUtc": 2000,
        "isArchived": False,
        "lastMessage": {"messageId": 123, "userId": ALICE, "createdUtc": 1500},
        "discussionMessageId": None,
        "unreadMessageCount": unread,
        "isModerator": moderator,
        "isPinned": pinned,
    }


def test_other_events_rendered_as_stored() -> None:
    deleted = {"parentMessageId": 0, "roomId": PUBLIC, "messageId": 7}
    item = event(61, EventType.TEXT_MESSAGE_DELETED, deleted, PUBLIC)
    assert client_data(item, ALICE) == deleted
    assert client_data(item, BOB) == deleted


# API.md section 8's table, one case per row: the events each REST action
# appends (in log order, with the audience the service chooses: None for
# "the room's members at commit", else exactly those users), routed as the
# broker does (apply, then recipients, event by event) to a stream of every
# user.  That the services append these shapes is checked against the log
# (test_event_log, test_attachments_api) and over the wire (test_stream_e2e).

CREATED, UPDATED, DELETED = "TextMessagesCreated", "TextMessagesUpdated", "TextMessageDeleted"
ROOM_CREATED, ROOM_UPDATED, ROOM_DELETED = "RoomCreated", "RoomUpdated", "RoomDeleted"
NEW = 13  # a room created by the row


def log_of(*items: StoredEvent | tuple[str, int, tuple[int, ...] | None]) -> list[StoredEvent]:
    """Events numbered from 50 on; a tuple is a client event (type, room, audience)."""
    built = []
    for n, item in enumerate(items, start=50):
        if isinstance(item, tuple):
            event_type, room_id, audience = item
            item = event(n, event_type, {}, room_id, audience)
        built.append(attrs.evolve(item, event_id=n))
    return built


def routed(log: list[StoredEvent]) -> dict[int, list[str]]:
    """What each user's stream receives of ``log`` (users receiving nothing left out)."""
    acl = AclStore(snapshot())
    got: dict[int, list[str]] = {}
    for item in log:
        acl.apply(item)
        for user in sorted(recipients(item, acl, EVERYONE)):
            got.setdefault(user, []).append(item.event_type)
    return got


PRIVATE_MEMBERS = (ADMIN, ALICE)  # who may access PRIVATE (SUSPENDED is a member)
PUBLIC_USERS = (ADMIN, ALICE, BOB, CAROL)


def each(users: tuple[int, ...], *types: str) -> dict[int, list[str]]:
    return {user: list(types) for user in users}


SECTION_8_ROWS = [
    pytest.param(
        log_of((CREATED, PRIVATE, None), (ROOM_UPDATED, PRIVATE, None)),
        each(PRIVATE_MEMBERS, CREATED, ROOM_UPDATED),
        id="post message(s)",
    ),
    pytest.param(
        log_of((CREATED, PRIVATE, None), (UPDATED, PRIVATE, None)),
        each(PRIVATE_MEMBERS, CREATED, UPDATED),
        id="post comment",
    ),
    pytest.param(
        log_of((UPDATED, PRIVATE, None)), each(PRIVATE_MEMBERS, UPDATED), id="edit message"
    ),
    pytest.param(
        log_of((DELETED, PRIVATE, None), (ROOM_UPDATED, PRIVATE, None)),
        each(PRIVATE_MEMBERS, DELETED, ROOM_UPDATED),
        id="delete message: lastMessage or unread counts change",
    ),
    pytest.param(
        log_of((DELETED, PRIVATE, None)),
        each(PRIVATE_MEMBERS, DELETED),
        id="delete message: read by everyone, not the newest",
    ),
    pytest.param(
        log_of((DELETED, PRIVATE, None), (UPDATED, PRIVATE, None)),
        each(PRIVATE_MEMBERS, DELETED, UPDATED),
        id="delete message: a comment",
    ),
    pytest.param(
        log_of((UPDATED, PRIVATE, None), (ROOM_UPDATED, PRIVATE, (ALICE,))),
        {ADMIN: [UPDATED], ALICE: [UPDATED, ROOM_UPDATED]},
        id="mark read",
    ),
    pytest.param(
        log_of((UPDATED, PRIVATE, None)),
        each(PRIVATE_MEMBERS, UPDATED),
        id="add/remove attachment",
    ),
    pytest.param(
        log_of(
            acl_room(0, NEW, "Private"),
            acl_member(0, NEW, BOB, True),
            (ROOM_CREATED, NEW, None),
        ),
        each((ADMIN, BOB), ROOM_CREATED),
        id="create room: Private",
    ),
    pytest.param(
        log_of(acl_room(0, NEW, "Public"), (ROOM_CREATED, NEW, None)),
        each(PUBLIC_USERS, ROOM_CREATED),
        id="create room: Public",
    ),
    pytest.param(
        log_of((ROOM_UPDATED, PRIVATE, None)),
        each(PRIVATE_MEMBERS, ROOM_UPDATED),
        id="update room: same access",
    ),
    pytest.param(
        log_of(
            acl_room(0, PUBLIC, "Private"),
            (ROOM_UPDATED, PUBLIC, (ADMIN,)),
            (ROOM_DELETED, PUBLIC, (ALICE, BOB, CAROL)),
        ),
        {ADMIN: [ROOM_UPDATED]} | each((ALICE, BOB, CAROL), ROOM_DELETED),
        id="update room: access narrows",
    ),
    pytest.param(
        log_of(
            acl_room(0, PRIVATE, "Public"),
            (ROOM_UPDATED, PRIVATE, PRIVATE_MEMBERS),
            (ROOM_CREATED, PRIVATE, (BOB, CAROL)),
        ),
        each(PRIVATE_MEMBERS, ROOM_UPDATED) | each((BOB, CAROL), ROOM_CREATED),
        id="update room: access widens",
    ),
    pytest.param(
        log_of(acl_member(0, PRIVATE, BOB, True), (ROOM_CREATED, PRIVATE, (BOB,))),
        {BOB: [ROOM_CREATED]},
        id="add member",
    ),
    pytest.param(
        log_of((ROOM_UPDATED, PRIVATE, (ALICE,))),
        {ALICE: [ROOM_UPDATED]},
        id="add member: an existing member's moderator flag",
    ),
    pytest.param(
        log_of(
            acl_member(0, PRIVATE, ALICE, False),
            (ROOM_DELETED, PRIVATE, (ALICE,)),
            (CREATED, PRIVATE, None),  # not one event of that room afterwards
        ),
        {ADMIN: [CREATED], ALICE: [ROOM_DELETED]},
        id="remove member",
    ),
    pytest.param(
        log_of(
            (ROOM_DELETED, PRIVATE, PRIVATE_MEMBERS),
            acl_room(0, PRIVATE, None),
            (CREATED, PRIVATE, None),  # (a late row of a deleted room reaches nobody)
        ),
        each(PRIVATE_MEMBERS, ROOM_DELETED),
        id="delete room",
    ),
    pytest.param(log_of((ROOM_UPDATED, PUBLIC, (BOB,))), {BOB: [ROOM_UPDATED]}, id="pin/unpin"),
]


@pytest.mark.parametrize(("log", "expected"), SECTION_8_ROWS)
def test_section_8_row(log: list[StoredEvent], expected: dict[int, list[str]]) -> None:
    assert routed(log) == expected
