"""Resume with ``?since=N`` over the real server (API.md 8, Resume).

Each resumed stream must replay exactly what the user may see in (N, Hello],
judged at each commit (compared with :func:`tests.resume_helpers.oracle`, which
runs the access table forwards), then carry on live with no gap and no
duplicate; ids older than the retained log or too many missed events answer
ResyncRequired; malformed ``since`` is refused with 400 before the upgrade.

The cases of one shape (an id inside the log, the newest, 0, older than
retention, its boundary, in the future, negative, not a number, across a
restart, a membership change while away, concurrent writes) are one table,
``CASES``; what needs another shape (the max_replay boundary, the forced race
over several batches, a trim between a replay's reads, repeated restarts,
query parameters) has its own test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import httpx
import pytest
import trio

import trio_events
from trio_events import replay
from trio_events.model import StoredEvent
from trio_events.retention import trim_once

from .helpers import TEST_TIMEOUT, serving
from .rest_helpers import (
    Actor,
    admin_actor,
    body_of,
    create_room,
    post,
    post_batch,
    user_actors,
)
from .resume_helpers import (
    before_later_reads,
    during_replay,
    latest_id,
    open_resume,
    oracle,
    raw,
    rejected_json,
    rejection_since,
    replayed,
    trimmed_through,
    upgrade,
    whole_log,
)
from .stream_helpers import CREATED, Json, stream_config, wait_routed, wait_subscribers


@attrs.frozen
class Scene:
    admin: Actor
    alice: Actor
    bob: Actor
    lobby: int
    team: int  # Private: admin and alice
    secret: int  # Private: admin only
    mid: int  # an event id in the middle of the log


async def scene(client: httpx.AsyncClient, server: trio_events.RunningServer) -> Scene:
    admin = await admin_actor(client)
    alice, bob = await user_actors(client, server, "alice", "bob")
    lobby = await create_room(client, admin, "lobby", "Public")
    team = await create_room(client, admin, "team", "Private", [alice])
    secret = await create_room(client, admin, "secret", "Private")
    await post(client, admin, lobby, "before")
    mid = await latest_id(server)
    for room in (lobby, team, secret, lobby):
        await post(client, admin, room, f"after {room}")
    await post(client, alice, team, "alice in team")
    await wait_routed(server.services)
    return Scene(admin, alice, bob, lobby, team, secret, mid)


def headers(actor: Actor) -> list[tuple[str, str]]:
    return list(actor.headers.items())


# The table: one resume per case, all of one shape.  Each case runs the scene
# on a fresh server, lets things happen while the client is away (on each
# server, when the case restarts it in between), picks `since` from the
# newest id the client had seen and how far the log is trimmed, and resumes
# alice, bob and admin (or only tries to, for a 400).  A resume must replay
# exactly the oracle's frames for (since, Hello], then carry on live: any
# messages committed during the resume's replay first, then a new one, every
# id above Hello's.  A resync must send ResyncRequired with the oldest
# retained id, then carry on live.


Since = Callable[[Scene, int, int], "int | str"]  # (scene, newest, trimmed) -> since
Away = Callable[[httpx.AsyncClient, trio_events.RunningServer, Scene], Awaitable[None]]


@attrs.frozen
class Case:
    id: str
    since: Since
    expect: str  # "resume", "resync" or "400"
    away: Away | None = None  # done after the client left, before the resumes
    restart: bool = False  # the server restarts while the client is away
    concurrent: bool = False  # messages commit inside each resume's window


async def keep_three(
    client: httpx.AsyncClient, server: trio_events.RunningServer, s: Scene
) -> None:
    events = attrs.evolve(server.services.config.events, retention_events=3)
    assert await trim_once(server.services.store, events) > 0


async def post_while_away(
    client: httpx.AsyncClient, server: trio_events.RunningServer, s: Scene
) -> None:
    await post(client, s.admin, s.team, "while away")
    await post(client, s.admin, s.lobby, "while away")


async def membership_changes(
    client: httpx.AsyncClient, server: trio_events.RunningServer, s: Scene
) -> None:
    """Alice leaves the team and comes back; bob joins it: each sees the team's
    events while a member, with RoomDeleted and RoomCreated at the changes."""
    members = f"/api/v1/rooms/{s.team}/members"
    await post(client, s.admin, s.team, "alice still in")
    body_of(await client.delete(f"{members}/{s.alice.user_id}", headers=s.admin.headers))
    await post(client, s.admin, s.team, "alice out")
    body_of(await client.put(f"{members}/{s.alice.user_id}", json={}, headers=s.admin.headers))
    body_of(await client.put(f"{members}/{s.bob.user_id}", json={}, headers=s.admin.headers))
    await post(client, s.admin, s.team, "both in")


CASES = [
    Case("inside-the-log", lambda s, newest, trimmed: s.mid, "resume"),
    Case("newest", lambda s, newest, trimmed: newest, "resume"),
    Case("zero", lambda s, newest, trimmed: 0, "resume"),
    Case("older-than-retention", lambda s, newest, trimmed: s.mid, "resync", keep_three),
    Case("zero-after-a-trim", lambda s, newest, trimmed: 0, "resync", keep_three),
    Case("just-trimmed", lambda s, newest, trimmed: trimmed - 1, "resync", keep_three),
    Case("oldest-retained", lambda s, newest, trimmed: trimmed, "resume", keep_three),
    Case("future", lambda s, newest, trimmed: newest + 1, "400"),
    Case("negative", lambda s, newest, trimmed: "-1", "400"),
    Case("not-a-number", lambda s, newest, trimmed: "abc", "400"),
    Case("empty", lambda s, newest, trimmed: "", "400"),
    Case("across-a-restart", lambda s, newest, trimmed: s.mid, "resume", post_while_away, True),
    Case("membership-change-while-away", lambda s, n, t: n, "resume", membership_changes),
    Case("during-concurrent-writes", lambda s, n, t: s.mid, "resume", concurrent=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Case) -> None:
    config = stream_config(tmp_path)
    with trio.fail_after(TEST_TIMEOUT):
        async with contextlib.AsyncExitStack() as stack:
            server, client = await stack.enter_async_context(serving(config))
            s = await scene(client, server)
            newest = await latest_id(server)  # what the client had seen when it left
            history = await whole_log(server.services.store)  # before any trim
            if case.away is not None:
                await case.away(client, server, s)
            if case.restart:
                await wait_subscribers(server, 0)
                await stack.aclose()
                server, client = await stack.enter_async_context(serving(config))
                if case.away is not None:
                    await case.away(client, server, s)
            since = case.since(s, newest, await trimmed_through(server.services.store))
            if case.expect == "400":
                rejected = await rejection_since(server, headers(s.alice), f"since={since}")
                assert "since" in rejected_json(rejected, 400)["errorText"]
                return
            assert isinstance(since, int)
            windows = await commit_in_each_window(monkeypatch, server, s) if case.concurrent else []
            for user in (s.alice, s.bob, s.admin):
                await check_resume(server, client, s, user, since, case.expect, windows, history)
            await wait_subscribers(server, 0)


async def commit_in_each_window(
    monkeypatch: pytest.MonkeyPatch, server: trio_events.RunningServer, s: Scene
) -> list[list[int]]:
    """Commit a lobby message inside each later resume's window (before and
    after its replay); return, per resume, the ids committed."""
    admin = await server.services.users.find_user("admin")
    assert admin is not None
    windows: list[list[int]] = []

    async def commit() -> None:
        if not windows or len(windows[-1]) == 2:
            windows.append([])
        (message_id,) = await server.services.messages.post(admin, s.lobby, {"content": "race"})
        windows[-1].append(message_id)

    during_replay(monkeypatch, commit)
    return windows


async def check_resume(
    server: trio_events.RunningServer,
    client: httpx.AsyncClient,
    s: Scene,
    user: Actor,
    since: int,
    expect: str,
    windows: list[list[int]],
    history: list[StoredEvent],
) -> None:
    store = server.services.store
    async with open_resume(server, headers(user), since) as stream:
        hello = stream.hello
        assert hello["resumed"] is (expect == "resume"), (hello, user)
        assert hello["eventId"] <= await latest_id(server)
        if expect == "resume":
            got = await replayed(stream)
            expected = await oracle(store, user.user_id, since, hello["eventId"], history)
            assert got == expected, user
            assert len(got) == hello["replayed"]
            assert hello["replayed"] > 0 or since == hello["eventId"]
        else:
            assert hello["replayed"] == 0
            assert await raw(stream) == {
                "type": "ResyncRequired",
                "data": {"oldestEventId": await trimmed_through(store) + 1},
            }
        live = await post(client, s.admin, s.lobby, "live")
        live_ones = [*(windows[-1] if windows else []), live]
        frames: list[Json] = []
        while not frames or frames[-1]["data"].get("messages", [{}])[0].get("messageId") != live:
            frames.append(await stream.frame())
        ids = [f["eventId"] for f in frames]
        assert ids == sorted(set(ids)), ids
        assert ids[0] > hello["eventId"], ids
        messages = [
            m["messageId"] for f in frames if f["type"] == CREATED for m in f["data"]["messages"]
        ]
        assert messages == live_ones, (messages, live_ones)


@pytest.mark.parametrize("reused", [False, True], ids=["new-connection", "reused-connection"])
async def test_query_parameters_of_the_stream(tmp_path: Path, reused: bool) -> None:
    """As in catch-up: parameters the stream does not know are ignored (clients
    and proxies add cache-busters such as ``_=``); ``since`` given twice is
    refused with 400 before the upgrade, once the credentials are checked.
    On both transports: a new connection's and a reused one's."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            s = await scene(client, server)
            newest = await latest_id(server)
            missed = await oracle(server.services.store, s.alice.user_id, s.mid, newest)
            alice = headers(s.alice)
            for query in (f"since={s.mid}&_=1700000000", f"_=1&since={s.mid}&limit=3&x"):
                status, hello = await upgrade(server, alice, query, reused)
                assert status == 101, hello
                assert (hello["resumed"], hello["replayed"]) == (True, len(missed)), query
            status, hello = await upgrade(server, alice, "_=1700000000", reused)
            assert (status, hello["resumed"], hello["eventId"]) == (101, False, newest)
            for query in (f"since={s.mid}&since={s.mid}", f"since={s.mid}&since=x", "since&since"):
                status, body = await upgrade(server, alice, query, reused)
                assert (status, body["httpStatusCode"]) == (400, 400), (query, body)
                assert "'since'" in body["errorText"], body
            status, body = await upgrade(server, [], "since=1&since=2", reused)
            assert (status, body["httpStatusCode"]) == (401, 401), body
            await wait_subscribers(server, 0)


async def test_bad_since_without_credentials_is_401(tmp_path: Path) -> None:
    """Credentials are checked first (API.md 8): an anonymous client learns nothing,
    not even the newest event id that a 'since in the future' error would reveal."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            await scene(client, server)
            for query in ("since=abc", f"since={await latest_id(server) + 5}"):
                rejected_json(await rejection_since(server, [], query), 401)


async def pin(client: httpx.AsyncClient, actor: Actor, room_id: int) -> None:
    """One frame for ``actor`` alone (RoomUpdated to the caller, API.md 8)."""
    body_of(await client.put(f"/api/v1/rooms/{room_id}/pin", headers=actor.headers))


@pytest.mark.parametrize(("over", "resumed"), [(0, True), (1, False)])
async def test_max_replay_boundary(tmp_path: Path, over: int, resumed: bool) -> None:
    """Exactly ``max_replay`` missed frames resume, even when events the user may
    not see follow them; one more asks for a resync; either way the stream then
    carries on live (README, Delivery guarantees 6: "more than max_replay")."""
    max_replay = 4
    with trio.fail_after(TEST_TIMEOUT):
        config = stream_config(tmp_path, events={"max_replay": max_replay})
        async with serving(config) as (server, client):
            s = await scene(client, server)
            mark = await latest_id(server)
            for i in range(2):  # two frames each for alice: the message and its room
                await post(client, s.admin, s.lobby, f"m{i}")
            if over:
                await pin(client, s.alice, s.lobby)
            await post(client, s.admin, s.secret, "alice may not see this one")
            newest = await wait_routed(server.services)
            missed = await oracle(server.services.store, s.alice.user_id, mark, newest)
            assert len(missed) == max_replay + over
            async with open_resume(server, headers(s.alice), mark) as stream:
                assert stream.hello["resumed"] is resumed
                assert stream.hello["eventId"] == newest
                if resumed:
                    assert stream.hello["replayed"] == max_replay
                    assert await replayed(stream) == missed
                else:
                    assert stream.hello["replayed"] == 0
                    assert await raw(stream) == {
                        "type": "ResyncRequired",
                        "data": {"oldestEventId": await trimmed_through(server.services.store) + 1},
                    }
                live = await post(client, s.admin, s.lobby, "live")
                frame = await stream.frame()
                assert frame["type"] == CREATED
                assert frame["eventId"] > newest
                assert frame["data"]["messages"][0]["messageId"] == live
            await wait_subscribers(server, 0)


async def test_resume_races_with_concurrent_posts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Subscribe-then-replay: every message exactly once, in order, no gap.

    Messages commit inside the resume's window every time: after it subscribed
    and before its replay is read, between the replay's batches (three of
    them), and after the replay was computed but before it is sent.
    """
    monkeypatch.setattr(replay, "BATCH", 80)  # 200 events: three reads
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            s = await scene(client, server)
            svc = server.services
            mark = await latest_id(server)
            first_new: list[int] = []
            for batch in range(100):
                ids = await post_batch(
                    client, s.admin, s.lobby, [f"b{batch}.{i}" for i in range(5)]
                )
                first_new.extend(ids)
            await wait_routed(svc)
            admin = await svc.users.find_user("admin")
            assert admin is not None
            in_window: list[int] = []

            async def commit() -> None:
                (message_id,) = await svc.messages.post(
                    admin, s.lobby, {"content": f"in the window {len(in_window)}"}
                )
                in_window.append(message_id)

            hellos = during_replay(monkeypatch, commit)
            reads = before_later_reads(monkeypatch, svc.store, commit)
            received: list[Json] = []
            async with open_resume(server, headers(s.bob), mark) as stream:
                hello = stream.hello
                assert hello["resumed"] is True
                assert hellos == [hello["eventId"]]
                assert len(reads) == 2, "the replay took three reads"
                assert len(in_window) == 4
                for i in range(3):
                    await post(client, s.alice, s.lobby, f"live {i}")
                target = await wait_routed(svc)
                while stream.last_event_id < target:
                    received.append(await stream.frame())
            ids = [f["eventId"] for f in received]
            assert ids == sorted(set(ids))
            replay_count = hello["replayed"]
            assert replay_count == len(await oracle(svc.store, s.bob.user_id, mark, hellos[0]))
            assert replay_count >= 200, "the batches posted beforehand were replayed"
            assert all(i <= hello["eventId"] for i in ids[:replay_count])
            assert all(i > hello["eventId"] for i in ids[replay_count:])
            got = [
                m["messageId"]
                for f in received
                if f["type"] == CREATED
                for m in f["data"]["messages"]
            ]
            assert len(got) == len(set(got)), "a message was delivered twice"
            live = got[len(first_new) :]
            assert live[: len(in_window)] == in_window, "committed in the window, then live"
            in_db = await svc.store.read(
                lambda tx: tx.page_messages(s.lobby, 0, None, 100_000, False)
            )
            assert got == [m.message_id for m in in_db if m.message_id >= first_new[0]]
            await wait_subscribers(server, 0)


async def test_replay_longer_than_one_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over ``replay.BATCH`` events: read in several batches, the access table
    carried across them (alice leaves the team in the second batch)."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(stream_config(tmp_path)) as (server, client):
            s = await scene(client, server)
            svc = server.services
            admin = await svc.users.find_user("admin")
            assert admin is not None
            mark = await latest_id(server)
            for i in range(550):  # two events each
                await svc.messages.post(
                    admin, (s.lobby, s.team, s.secret)[i % 3], {"content": f"{i}"}
                )
            await svc.rooms.remove_member(admin, s.team, s.alice.user_id)
            for i in range(20):
                await svc.messages.post(admin, (s.lobby, s.team)[i % 2], {"content": f"late {i}"})
            newest = await wait_routed(svc)
            assert newest - mark > replay.BATCH
            reads = before_later_reads(monkeypatch, svc.store, trio.lowlevel.checkpoint)
            async with open_resume(server, headers(s.alice), mark) as stream:
                assert stream.hello["resumed"] is True
                got = await replayed(stream)
            assert reads == [mark + replay.BATCH]
            assert got == await oracle(svc.store, s.alice.user_id, mark, newest)
            assert stream.hello["replayed"] == len(got) > 700
            await wait_subscribers(server, 0)


@pytest.mark.parametrize(("keep", "resumed"), [("after since", False), ("since on", True)])
async def test_trim_between_the_reads_of_a_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: str, resumed: bool
) -> None:
    """Retention runs while a replay reads its second batch.  If it trimmed past
    ``since``, what the later reads return may have a hole: ResyncRequired with
    the new oldest id, then live.  If it trimmed only up to ``since``, nothing
    the replay needs is gone: a whole resume."""
    monkeypatch.setattr(replay, "BATCH", 3)
    with trio.fail_after(TEST_TIMEOUT):
        config = stream_config(tmp_path)
        async with serving(config) as (server, client):
            s = await scene(client, server)
            store = server.services.store
            since = await latest_id(server)
            for i in range(5):
                await post(client, s.admin, s.lobby, f"m{i}")
            newest = await wait_routed(server.services)
            expected = await oracle(store, s.alice.user_id, since, newest)
            kept = 2 if keep == "after since" else newest - since
            events = attrs.evolve(config.events, retention_events=kept)

            async def trim() -> None:
                await trim_once(store, events)  # the first call trims, later ones find nothing

            reads = before_later_reads(monkeypatch, store, trim)
            async with open_resume(server, headers(s.alice), since) as stream:
                assert reads, "the replay read more than one batch"
                assert await trimmed_through(store) == newest - kept
                assert stream.hello["resumed"] is resumed
                if resumed:
                    assert await replayed(stream) == expected
                else:
                    assert stream.hello["replayed"] == 0
                    assert await raw(stream) == {
                        "type": "ResyncRequired",
                        "data": {"oldestEventId": newest - kept + 1},
                    }
                live = await post(client, s.admin, s.lobby, "live")
                frame = await stream.frame()
                assert frame["eventId"] > newest
                assert frame["data"]["messages"][0]["messageId"] == live
            await wait_subscribers(server, 0)


async def test_resume_from_hello_after_two_restarts(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        config = stream_config(tmp_path)
        posted: list[int] = []
        async with serving(config) as (server, client):
            s = await scene(client, server)
            async with open_resume(server, headers(s.bob), None) as stream:
                hello_id = int(stream.hello["eventId"])
            posted.append(await post(client, s.admin, s.lobby, "first run"))
        for run in ("second run", "third run"):
            async with serving(config) as (server, client):
                posted.append(await post(client, s.alice, s.lobby, run))
                newest = await wait_routed(server.services)
        async with serving(config) as (server, client):
            async with open_resume(server, headers(s.bob), hello_id) as stream:
                assert stream.hello["resumed"] is True
                got = await replayed(stream)
                assert got == await oracle(server.services.store, s.bob.user_id, hello_id, newest)
                assert [
                    m["messageId"] for f in got for m in f["data"].get("messages", [])
                ] == posted
            await wait_subscribers(server, 0)


async def test_resume_after_everything_expired_and_restart(tmp_path: Path) -> None:
    """Age may trim the whole log; a client up to date must still resume, and the
    event ids it sees must never go down (API.md 8: never a decrease)."""
    with trio.fail_after(TEST_TIMEOUT):
        config = stream_config(tmp_path)
        async with serving(config) as (server, client):
            s = await scene(client, server)
            seen = await wait_routed(server.services)
            far_future = 10**15
            assert await trim_once(server.services.store, config.events, now=far_future) == seen
            assert await trimmed_through(server.services.store) == seen
        async with serving(config) as (server, client):
            status = await client.get(
                "/api/v1/events", params={"since": seen}, headers=s.alice.headers
            )
            assert status.status_code == 200, f"catch-up from {seen}: {status.text}"
            async with open_resume(server, headers(s.alice), seen) as stream:
                assert stream.hello["eventId"] >= seen
                assert stream.hello["resumed"] is True
                assert stream.hello["replayed"] == 0
                live = await post(client, s.admin, s.lobby, "after restart")
                frame = await stream.frame()
                assert frame["eventId"] > seen
                assert frame["data"]["messages"][0]["messageId"] == live
            await wait_subscribers(server, 0)
