"""The access table run backwards (``AclStore.unapply``) and resume across access changes.

Pure: every ``acl.*`` payload the real :class:`~trio_events.services.outbox.Outbox`
writes is undone exactly by ``unapply``; by hypothesis, running the final table
backwards gives, at every event id, the table that running forwards gave.  Then
the same over the log written by the real services, and three resumes over the
real server where the user's access changed while they were away.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import httpx
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_events
from trio_events.acl import AclSnapshot, AclStore
from trio_events.model import RoomType, StoredEvent, UserStatus
from trio_events.services.outbox import Outbox
from trio_events.store import Tx

from .helpers import TEST_TIMEOUT, make_config, serving
from .rest_helpers import Actor, admin_actor, body_of, create_room, post, user_actors
from .resume_helpers import kinds, latest_id, open_resume, oracle, replayed, whole_log
from .stream_helpers import (
    CREATED,
    ROOM_CREATED,
    ROOM_DELETED,
    ROOM_UPDATED,
    running_services,
    stream_config,
    wait_routed,
    wait_subscribers,
)

USERS = range(1, 9)
ROOMS = range(1, 9)
Table = tuple[frozenset[tuple[int, int]], frozenset[int], frozenset[int]]


def table(acl: AclStore) -> Table:
    """Everything the router asks of the table, over a grid of users x rooms."""
    return (
        frozenset((u, r) for u in USERS for r in ROOMS if acl.may_access(u, r)),
        frozenset(u for u in USERS if acl.is_active(u)),
        frozenset(r for r in ROOMS if acl.room_exists(r)),
    )


class FakeTx:
    """Just enough of a transaction for :class:`Outbox`: it collects the events."""

    def __init__(self, first_id: int = 1) -> None:
        self.events: list[StoredEvent] = []
        self._next = first_id

    def append_event(
        self, event_type: str, payload: str, room_id: int | None, audience: object, now: int
    ) -> int:
        event = StoredEvent(self._next, event_type, room_id, None, payload, now)
        self.events.append(event)
        self._next += 1
        return event.event_id


def outbox(tx: FakeTx) -> Outbox:
    return Outbox(cast(Tx, tx), 0)


def base() -> AclStore:
    users = {1: (True, True), 2: (False, True), 3: (False, True), 4: (False, False)}
    rooms = {1: RoomType.PRIVATE, 2: RoomType.PUBLIC, 3: RoomType.PRIVATE}
    members = {1: {2, 3}, 3: {3}}
    return AclStore(AclSnapshot(event_id=100, users=users, rooms=rooms, members=members))


KINDS: dict[str, Callable[[Outbox], None]] = {
    "user created": lambda o: o.acl_user(6, False, True, False, False),
    "admin created": lambda o: o.acl_user(7, True, True, False, False),
    "user promoted": lambda o: o.acl_user(2, True, True, False, True),
    "user demoted": lambda o: o.acl_user(1, False, True, True, True),
    "user suspended": lambda o: o.acl_user(3, False, False, False, True),
    "user reactivated": lambda o: o.acl_user(4, False, True, False, False),
    "room created": lambda o: o.acl_room(5, "Private", None),
    "public room created": lambda o: o.acl_room(5, "Public", None),
    "room made public": lambda o: o.acl_room(3, "Public", "Private"),
    "room made private": lambda o: o.acl_room(2, "Private", "Public"),
    "room deleted with members": lambda o: o.acl_room_deleted(1, "Private", [2, 3]),
    "public room deleted": lambda o: o.acl_room_deleted(2, "Public", []),
    "member added": lambda o: o.acl_member(3, 2, True),
    "member removed": lambda o: o.acl_member(1, 2, False),
}


def test_unapply_inverts_apply_for_every_kind() -> None:
    for name, emit in KINDS.items():
        acl, tx = base(), FakeTx(first_id=101)
        before = table(acl)
        emit(outbox(tx))
        (event,) = tx.events
        acl.apply(event)
        assert table(acl) != before, f"{name}: the event changed nothing"
        assert acl.event_id == 101
        acl.unapply(event)
        assert table(acl) == before, name
        assert acl.event_id == 100, name


def test_unapply_room_created_with_members() -> None:
    acl, tx = base(), FakeTx(first_id=101)
    before = table(acl)
    o = outbox(tx)
    o.acl_room(6, "Private", None)
    o.acl_member(6, 2, True)
    o.acl_member(6, 4, True)
    for event in tx.events:
        acl.apply(event)
    assert acl.may_access(2, 6)
    for event in reversed(tx.events):
        acl.unapply(event)
    assert table(acl) == before
    assert acl.copy().event_id == 100


class Model:
    """The access state as plain data, emitting what the services would emit."""

    def __init__(self) -> None:
        self.users: dict[int, tuple[bool, bool]] = {}
        self.rooms: dict[int, str] = {}
        self.members: dict[int, set[int]] = {}

    def step(self, o: Outbox, kind: int, a: int, b: int, flag1: bool, flag2: bool) -> None:
        users, rooms = sorted(self.users), sorted(self.rooms)
        if kind == 0 or not users:
            user = len(self.users) + 1
            if user in USERS:
                self.users[user] = (flag1, True)
                o.acl_user(user, flag1, True, False, False)
        elif kind == 1:
            user = users[a % len(users)]
            was = self.users[user]
            if was != (flag1, flag2):
                self.users[user] = (flag1, flag2)
                o.acl_user(user, flag1, flag2, *was)
        elif kind == 2 or not rooms:
            room = max([0, *self.rooms]) + 1
            if room in ROOMS:
                room_type = "Public" if flag1 else "Private"
                self.rooms[room], self.members[room] = room_type, set()
                o.acl_room(room, room_type, None)
                for user in users[: a % 3]:
                    self.members[room].add(user)
                    o.acl_member(room, user, True)
        elif kind == 3:
            room = rooms[a % len(rooms)]
            new = "Public" if self.rooms[room] == "Private" else "Private"
            o.acl_room(room, new, self.rooms[room])
            self.rooms[room] = new
        elif kind == 4:
            room = rooms[a % len(rooms)]
            o.acl_room_deleted(room, self.rooms.pop(room), sorted(self.members.pop(room)))
        else:
            room, user = rooms[a % len(rooms)], users[b % len(users)]
            member = user in self.members[room]
            o.acl_member(room, user, not member)
            (self.members[room].discard if member else self.members[room].add)(user)

    def table(self) -> Table:
        def access(u: int, r: int) -> bool:
            if r not in self.rooms or u not in self.users or not self.users[u][1]:
                return False
            return self.rooms[r] == "Public" or self.users[u][0] or u in self.members[r]

        return (
            frozenset((u, r) for u in USERS for r in ROOMS if access(u, r)),
            frozenset(u for u in USERS if u in self.users and self.users[u][1]),
            frozenset(self.rooms),
        )


OPS = st.lists(
    st.tuples(
        st.integers(0, 6), st.integers(0, 50), st.integers(0, 50), st.booleans(), st.booleans()
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_backwards_equals_forwards(ops: list[tuple[int, int, int, bool, bool]]) -> None:
    model, tx = Model(), FakeTx()
    forward = AclStore()
    tables = {0: table(forward)}
    for op in ops:
        start = len(tx.events)
        model.step(outbox(tx), *op)
        for event in tx.events[start:]:
            forward.apply(event)
            tables[event.event_id] = table(forward)
        assert table(forward) == model.table()
    backward = forward.copy()
    for event in reversed(tx.events):
        backward.unapply(event)
        assert table(backward) == tables[event.event_id - 1], event
        assert backward.event_id == event.event_id - 1


async def test_backwards_over_the_services_log(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_services(make_config(tmp_path)) as svc:
            admin = await svc.users.create_user(None, "root", "pw-123456789", None, True)
            u = [
                await svc.users.create_user(None, f"u{i}", "pw-123456789", None, False)
                for i in range(3)
            ]
            ids = [x.user_id for x in u]
            team = (
                await svc.rooms.create(
                    None, {"displayName": "t", "roomType": "Private", "memberIds": ids[:2]}
                )
            )["roomId"]
            hall = (await svc.rooms.create(None, {"displayName": "h", "roomType": "Public"}))[
                "roomId"
            ]
            await svc.rooms.put_member(admin, team, ids[2], {})
            await svc.rooms.remove_member(admin, team, ids[0])
            await svc.rooms.update(admin, hall, {"roomType": "Private"})
            await svc.users.update_user(None, ids[1], {"isAdmin": True})
            await svc.users.update_user(None, ids[2], {"status": str(UserStatus.SUSPENDED)})
            await svc.rooms.update(admin, team, {"roomType": "Public"})
            await svc.rooms.delete(admin, team)
            await svc.users.update_user(None, ids[2], {"status": str(UserStatus.ACTIVE)})
            await wait_routed(svc)
            log = await whole_log(svc.store)
            snapshot = await svc.store.read(lambda tx: tx.acl_snapshot())
        forward, tables = AclStore(), {0: table(AclStore())}
        for event in log:
            forward.apply(event)
            tables[event.event_id] = table(forward)
        backward = AclStore(snapshot)
        assert table(backward) == table(forward)
        for event in reversed(log):
            backward.unapply(event)
            assert table(backward) == tables[event.event_id - 1], event


async def away_scene(
    client: httpx.AsyncClient, server: trio_events.RunningServer
) -> tuple[Actor, Actor, int, int]:
    admin = await admin_actor(client)
    (alice,) = await user_actors(client, server, "alice")
    team = await create_room(client, admin, "team", "Private", [alice])
    await post(client, admin, team, "before")
    return admin, alice, team, await wait_routed(server.services)


async def test_removed_then_readded_while_away(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            admin, alice, team, seen = await away_scene(client, server)
            up_to_removal = await post(client, admin, team, "still a member")
            path = f"/api/v1/rooms/{team}/members/{alice.user_id}"
            body_of(await client.delete(path, headers=admin.headers))
            out = await post(client, admin, team, "said while alice was out")
            removed = await wait_routed(server.services)
            async with open_resume(server, list(alice.headers.items()), seen) as stream:
                got = await replayed(stream)
            assert kinds(got) == [
                (CREATED, up_to_removal),
                (ROOM_UPDATED, team),
                (ROOM_DELETED, team),
            ]
            assert got == await oracle(server.services.store, alice.user_id, seen, removed)
            body_of(await client.put(path, json={}, headers=admin.headers))
            back = await post(client, admin, team, "after re-add")
            newest = await wait_routed(server.services)
            async with open_resume(server, list(alice.headers.items()), seen) as stream:
                got = await replayed(stream)
            assert kinds(got) == [
                (CREATED, up_to_removal),
                (ROOM_UPDATED, team),
                (ROOM_DELETED, team),
                (ROOM_CREATED, team),
                (CREATED, back),
                (ROOM_UPDATED, team),
            ]
            assert out not in [k for _, k in kinds(got)]
            assert got == await oracle(server.services.store, alice.user_id, seen, newest)
            await wait_subscribers(server, 0)


async def test_public_made_private_while_away(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            admin = await admin_actor(client)
            (bob,) = await user_actors(client, server, "bob")
            hall = await create_room(client, admin, "hall", "Public")
            seen = await wait_routed(server.services)
            visible = await post(client, admin, hall, "public still")
            patch = {"roomType": "Private"}
            body_of(await client.patch(f"/api/v1/rooms/{hall}", json=patch, headers=admin.headers))
            await post(client, admin, hall, "private now")
            newest = await wait_routed(server.services)
            assert newest == await latest_id(server)
            async with open_resume(server, list(bob.headers.items()), seen) as stream:
                got = await replayed(stream)
            assert kinds(got) == [(CREATED, visible), (ROOM_UPDATED, hall), (ROOM_DELETED, hall)]
            assert got == await oracle(server.services.store, bob.user_id, seen, newest)
            await wait_subscribers(server, 0)
