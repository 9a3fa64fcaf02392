"""No user ever receives an event of a room they could not access (API.md 8), by hypothesis.

Random sequences of administration and posting run through the real services
and broker (no sockets), with every user subscribed.  A brute-force model kept
next to the operations says who may access which room after each one and, from
the table of API.md 8, which events each user must receive for it.  Each
subscriber must receive exactly that, grouped by operation through the log's
event ids, in strictly increasing eventId order; independently, no frame may
be about a room its recipient could not access when it committed (a
RoomDeleted goes only to a user who had access and lost it).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from unittest import mock

import attrs
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_events import passwords
from trio_events.broker import Subscriber
from trio_events.errors import ApiError
from trio_events.model import User
from trio_events.services import Services

from .helpers import USER_PASSWORD, make_config
from .stream_helpers import (
    Json,
    assert_increasing,
    drain,
    latest,
    parse,
    room_id_of,
    running_services,
    wait_routed,
)

KINDS = (
    "create_room",
    "add_member",
    "remove_member",
    "set_type",
    "post",
    "suspend",
    "delete_room",
    "create_user",
    "set_admin",
)
TYPES = ("Private", "Public")
Expected = dict[int, list[tuple[str, int]]]  # user -> (type, room) of one operation


@attrs.frozen
class Op:
    kind: str
    x: int  # a room or a user, by index modulo the count
    y: int  # a user by index, or a room type (even: Private)
    members: frozenset[int]


indices = st.integers(0, 7)
members = st.frozensets(indices, max_size=3)
first_room = st.builds(Op, st.just("create_room"), indices, st.just(0), members)
ops = st.tuples(
    first_room,
    st.lists(st.builds(Op, st.sampled_from(KINDS), indices, indices, members), max_size=10),
).map(lambda drawn: [drawn[0], *drawn[1]])


@attrs.define
class Model:
    """Who may access what: admins everything, Public everyone active, Private members."""

    admins: set[int] = attrs.field(factory=set)
    active: set[int] = attrs.field(factory=set)
    types: dict[int, str] = attrs.field(factory=dict)  # existing rooms only
    members: dict[int, set[int]] = attrs.field(factory=dict)

    def access(self, user: int, room: int) -> bool:
        return (
            room in self.types
            and user in self.active
            and (self.types[room] == "Public" or user in self.admins or user in self.members[room])
        )

    def audience(self, room: int) -> set[int]:
        return {user for user in self.active if self.access(user, room)}

    def copy(self) -> Model:
        members = {room: set(users) for room, users in self.members.items()}
        return Model(set(self.admins), set(self.active), dict(self.types), members)


@attrs.define
class Run:
    svc: Services
    model: Model
    users: list[User]
    rooms: list[int]  # every room ever created, deleted ones included
    subscriptions: contextlib.ExitStack
    subscribers: dict[int, Subscriber] = attrs.field(factory=dict)
    marks: list[int] = attrs.field(factory=list)  # latest event id before the first op, after each
    befores: list[Model] = attrs.field(factory=list)
    afters: list[Model] = attrs.field(factory=list)
    expected: list[Expected] = attrs.field(factory=list)

    async def add_user(self, is_admin: bool) -> None:
        name = f"user{len(self.users)}"
        user = await self.svc.users.create_user(None, name, USER_PASSWORD, None, is_admin)
        self.users.append(user)
        self.model.active.add(user.user_id)
        if is_admin:
            self.model.admins.add(user.user_id)

    def subscribe(self, user: int) -> None:
        inbox = self.subscriptions.enter_context(self.svc.broker.subscribe(user, user))
        self.subscribers[user] = inbox

    async def apply(self, op: Op) -> Expected:
        """Run ``op`` through the services; return what the model says each user receives."""
        m, admin = self.model, self.users[0]
        user = self.users[op.y % len(self.users)].user_id
        room = self.rooms[op.x % len(self.rooms)] if self.rooms else None
        if op.kind == "create_room":
            member_ids = sorted({self.users[i % len(self.users)].user_id for i in op.members})
            body = {"displayName": "r", "roomType": TYPES[op.x % 2], "memberIds": member_ids}
            room = (await self.svc.rooms.create(None, body))["roomId"]
            assert isinstance(room, int)
            self.rooms.append(room)
            m.types[room], m.members[room] = TYPES[op.x % 2], set(member_ids)
            return {u: [("RoomCreated", room)] for u in m.audience(room)}
        if op.kind == "create_user":
            await self.add_user(op.x % 2 == 1)
            await wait_routed(self.svc)
            self.subscribe(self.users[-1].user_id)
            return {}
        if op.kind in ("suspend", "set_admin"):
            return await self._user_op(op)
        if room is None:
            return {}
        exists = room in m.types
        try:
            return await self._room_op(op, room, user, admin)
        except ApiError:
            assert not exists or (op.kind == "remove_member" and user not in m.members[room])
            return {}

    async def _user_op(self, op: Op) -> Expected:
        """Suspend a user, or promote or demote one (never user 0, the last admin)."""
        m = self.model
        if len(self.users) == 1:
            return {}
        target = self.users[1 + op.x % (len(self.users) - 1)].user_id
        if op.kind == "suspend":
            await self.svc.users.update_user(None, target, {"status": "Suspended"})
            m.active.discard(target)
            return {}
        promote, was_admin = op.y % 2 == 1, target in m.admins
        await self.svc.users.update_user(None, target, {"isAdmin": promote})
        (m.admins.add if promote else m.admins.discard)(target)
        if target not in m.active or promote == was_admin:
            return {}
        kind = "RoomCreated" if promote else "RoomDeleted"
        private = [r for r, t in m.types.items() if t == "Private" and target not in m.members[r]]
        return {target: [(kind, room) for room in sorted(private)]}

    async def _room_op(self, op: Op, room: int, user: int, admin: User) -> Expected:
        m, before = self.model, self.model.copy()
        if op.kind == "post":
            author = next(u for u in self.users if u.user_id == user)
            await self.svc.messages.post(
                author if m.access(user, room) else admin, room, {"content": "x"}
            )
            return {
                u: [("TextMessagesCreated", room), ("RoomUpdated", room)] for u in m.audience(room)
            }
        if op.kind == "delete_room":
            await self.svc.rooms.delete(admin, room)
            del m.types[room], m.members[room]
            return {u: [("RoomDeleted", room)] for u in before.audience(room)}
        if op.kind == "set_type":
            await self.svc.rooms.update(admin, room, {"roomType": TYPES[op.y % 2]})
            m.types[room] = TYPES[op.y % 2]
            kept, now = before.audience(room), m.audience(room)
            return (
                {u: [("RoomUpdated", room)] for u in kept & now}
                | {u: [("RoomCreated", room)] for u in now - kept}
                | {u: [("RoomDeleted", room)] for u in kept - now}
            )
        if op.kind == "add_member":
            await self.svc.rooms.put_member(admin, room, user, {})
            if user in m.members[room]:
                return {}
            m.members[room].add(user)
            if user not in m.active:
                return {}
            return {user: [("RoomUpdated" if before.access(user, room) else "RoomCreated", room)]}
        assert op.kind == "remove_member"
        await self.svc.rooms.remove_member(admin, room, user)
        m.members[room].discard(user)
        if user not in m.active:
            return {}
        return {user: [("RoomUpdated" if m.access(user, room) else "RoomDeleted", room)]}


async def scenario(data_dir: Path, extra_users: list[bool], operations: list[Op]) -> None:
    config = make_config(data_dir)
    with trio.fail_after(30):
        async with running_services(config) as svc:
            with contextlib.ExitStack() as subscriptions:
                run = Run(svc, Model(), [], [], subscriptions)
                await run_all(run, extra_users, operations)
                received = {
                    user: [parse(f) for f in drain(sub)] for user, sub in run.subscribers.items()
                }
            assert svc.broker.statistics().subscribers == 0
    check(run, received)


async def run_all(run: Run, extra_users: list[bool], operations: list[Op]) -> None:
    svc = run.svc
    for is_admin in [True, *extra_users]:
        await run.add_user(is_admin)
    await wait_routed(svc)
    for user in run.users:
        run.subscribe(user.user_id)
    run.marks.append(await latest(svc))
    for op in operations:
        run.befores.append(run.model.copy())
        run.expected.append(await run.apply(op))
        run.afters.append(run.model.copy())
        run.marks.append(await latest(svc))
    await wait_routed(svc)


def check(run: Run, received: dict[int, list[Json]]) -> None:
    for user, frames in received.items():
        assert_increasing(frames)
        by_op: list[list[tuple[str, int]]] = [[] for _ in run.expected]
        for frame in frames:
            event_id = frame["eventId"]
            assert isinstance(event_id, int)
            k = next(i for i in range(len(run.expected)) if event_id <= run.marks[i + 1])
            assert event_id > run.marks[k]
            room = room_id_of(frame)
            assert room is not None
            kind = str(frame["type"])
            had, has = run.befores[k].access(user, room), run.afters[k].access(user, room)
            if kind == "RoomDeleted":
                assert had, (user, frame)
                assert not has, (user, frame)
            else:
                assert has, (user, frame)
            by_op[k].append((kind, room))
        first_op = next(
            (k for k, mark in enumerate(run.marks) if mark >= run.subscribers[user].hello_event_id),
            0,
        )
        expected = [e.get(user, []) if k >= first_op else [] for k, e in enumerate(run.expected)]
        assert by_op == expected, (user, run.users)


@settings(max_examples=25, deadline=None)
@given(extra_users=st.lists(st.booleans(), min_size=1, max_size=3), operations=ops)
def test_no_event_reaches_a_user_without_access(
    extra_users: list[bool], operations: list[Op]
) -> None:
    async def fast_hash(password: str) -> str:
        return "not-a-real-hash"

    with (
        tempfile.TemporaryDirectory() as data_dir,
        mock.patch.object(passwords, "hash_password", fast_hash),
    ):
        trio.run(scenario, Path(data_dir), extra_users, operations)
