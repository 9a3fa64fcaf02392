"""Cluster mode: several server processes on one PostgreSQL database and one Redis.

Every test runs real ``trio_events serve`` processes (tests/cluster_helpers.py)
on a fresh database and a Redis channel of its own, and compares what each
stream received with the log, read back through the HTTP catch-up
(``GET /api/v1/events?since=0``) of a process: the same events, in the same
order, each once.  A stream reader asserts strictly increasing eventIds on
every frame, so a duplicate or a reordering fails the test where it happens.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from .cluster_helpers import (
    DEGRADED,
    READY,
    Headers,
    Json,
    Streams,
    Supervisor,
    Watcher,
    add_user,
    admin_headers,
    alive,
    catch_up,
    connection_owner,
    create_room,
    metric,
    new_channel,
    open_clients,
    open_cluster,
    open_streams,
    post,
    private_redis,
    readiness,
    redis_url_fixture,  # noqa: F401 - the fixture, by import
    require_redis,
    wait_readiness,
    write_cluster_config,
)
from .helpers import USER_PASSWORD, login, session_headers
from .pg_helpers import pg_url_fixture  # noqa: F401 - the fixture, by import

pytestmark = pytest.mark.slow

WRITERS_PER_PROCESS = 3
POSTS_PER_WRITER = 10  # 3 processes x 3 writers x 10 = 90 concurrent posts
LAG_TRIES = 5  # resumes on a process that is behind (see the last test)
PACE = 0.02  # seconds between two posts of a background writer (pacing, not synchronization)


def ids(frames: Sequence[Json]) -> list[int]:
    return [f["eventId"] for f in frames]


def message_ids(frames: Sequence[Json]) -> list[int]:
    return [
        int(m["messageId"])
        for f in frames
        if f["type"] == "TextMessagesCreated"
        for m in f["data"]["messages"]
    ]


def rooms_in(frames: Sequence[Json]) -> set[int]:
    found = set()
    for frame in frames:
        data = frame["data"]
        if "roomId" in data:
            found.add(int(data["roomId"]))
        elif "room" in data:
            found.add(int(data["room"]["roomId"]))
        for message in data.get("messages", ()):
            found.add(int(message["roomId"]))
    return found


async def write_in_order(
    client: httpx.AsyncClient, headers: Headers, room_id: int, tag: str, count: int, out: list[int]
) -> None:
    for n in range(count):
        out.append(await post(client, headers, room_id, f"{tag}-{n}"))


@attrs.define
class Writer:
    """Posts paced messages in the background until stopped; ``acked`` holds
    every acknowledged message id, in order."""

    client: httpx.AsyncClient
    headers: Headers
    room_id: int
    acked: list[int] = attrs.Factory(list)
    _stop: trio.Event = attrs.Factory(trio.Event)
    _done: trio.Event = attrs.Factory(trio.Event)
    _posted: trio.Event = attrs.Factory(trio.Event)

    async def run(self) -> None:
        try:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                self.acked.append(await post(self.client, self.headers, self.room_id, f"bg-{n}"))
                self._posted.set()
                self._posted = trio.Event()
                await trio.sleep(PACE)
        finally:
            self._done.set()
            self._posted.set()

    async def more(self, count: int) -> None:
        """Until ``count`` more posts are acknowledged."""
        target = len(self.acked) + count
        while len(self.acked) < target:
            assert not self._done.is_set(), "the writer stopped"
            await self._posted.wait()

    async def stop(self) -> list[int]:
        self._stop.set()
        await self._done.wait()
        return self.acked


def assert_same_as_log(
    watchers: Sequence[Watcher], log: list[Json], after: int, through: int
) -> None:
    """Every watcher received exactly ``log`` in (after, through], frame for frame."""
    for watcher in watchers:
        got = watcher.between(after, through)
        assert ids(got) == ids(log), (watcher.label, ids(got), ids(log))
        assert got == log, watcher.label


async def test_writes_on_every_process_reach_every_subscriber_once_in_one_order(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """Three processes, two readers with a stream on each.  One post reaches all
    six streams once; then nine writers (three per process) post 90 messages at
    once: every stream receives the same eventIds in the same order, frame for
    frame what the log (HTTP catch-up of each process) holds, every message
    once and each writer's in its order, and each process heard the others
    through Redis."""
    with trio.fail_after(60):
        async with (
            open_cluster(tmp_path, 3, database_url=pg_url, redis_url=redis_url) as cluster,
            open_clients(cluster.urls) as http,
        ):
            admin = await admin_headers(http[0])
            lobby = await create_room(http[0], admin, "lobby")
            readers = [
                await add_user(http[0], admin, f"reader{r}", token_client=http[r + 1])
                for r in range(2)
            ]
            writers = [
                await add_user(http[p], admin, f"writer{p}", token_client=http[p]) for p in range(3)
            ]
            async with open_streams() as streams:
                watchers = {
                    (r, p): await streams.open(f"reader{r}@node{p}", cluster.url(p), reader.bearer)
                    for r, reader in enumerate(readers)
                    for p in range(3)
                }
                everyone = list(watchers.values())

                # one write on one process reaches every stream, on every process, once
                first = await post(http[1], writers[1].bearer, lobby, "first")
                first_event = {await w.wait_message(first) for w in everyone}
                assert len(first_event) == 1, first_event

                # 90 posts at once, from nine writers on three processes
                acked: dict[tuple[int, int], list[int]] = {}
                async with trio.open_nursery() as nursery:
                    for p, writer in enumerate(writers):
                        for k in range(WRITERS_PER_PROCESS):
                            acked[p, k] = []
                            nursery.start_soon(
                                write_in_order,
                                http[p],
                                writer.bearer,
                                lobby,
                                f"p{p}k{k}",
                                POSTS_PER_WRITER,
                                acked[p, k],
                            )
                sentinel = await post(http[2], admin, lobby, "sentinel")
                ends = {await w.wait_message(sentinel) for w in everyone}
                assert len(ends) == 1, ends
                (start,) = first_event
                (end,) = ends

                # the same events in the same order everywhere, as the log has them
                sequences = {w.label: ids(w.between(start - 1, end)) for w in everyone}
                assert len({tuple(s) for s in sequences.values()}) == 1, sequences
                for r, reader in enumerate(readers):
                    for p in range(3):
                        log = await catch_up(http[p], reader.bearer, start - 1, end)
                        assert_same_as_log([watchers[r, p] for p in range(3)], log, start - 1, end)

                # every acknowledged message exactly once, each writer's in its order
                posted = {first, sentinel, *itertools.chain(*acked.values())}
                assert len(posted) == 2 + 3 * WRITERS_PER_PROCESS * POSTS_PER_WRITER
                for watcher in everyone:
                    got = message_ids(watcher.between(start - 1, end))
                    assert len(got) == len(set(got)), watcher.label
                    assert set(got) == posted, (watcher.label, sorted(posted - set(got)))
                    for order in acked.values():
                        assert [m for m in got if m in set(order)] == order, watcher.label
                # ...carried by the bus: every process heard the others through Redis
                for url in cluster.urls:
                    assert await metric(url, "trio_events_bus_received_total") > 0, url
            await cluster.stop_all()


async def test_a_client_resumes_on_another_process_with_exactly_what_it_missed(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """A reader leaves process A after three messages, five are written on C
    while it is away, it resumes with ``?since=`` on B: Hello says resumed and
    how many were replayed, it gets exactly the missed events, then live ones,
    and its two connections together saw the log once, without a gap."""
    with trio.fail_after(45):
        async with (
            open_cluster(tmp_path, 3, database_url=pg_url, redis_url=redis_url) as cluster,
            open_clients(cluster.urls) as http,
        ):
            admin = await admin_headers(http[2])
            lobby = await create_room(http[2], admin, "lobby")
            reader = await add_user(http[2], admin, "reader", token_client=http[0])
            writer = await add_user(http[2], admin, "writer", token_client=http[2])
            async with open_streams() as streams:
                on_a = await streams.open("reader@A", cluster.url(0), reader.bearer)
                seen = [await post(http[2], writer.bearer, lobby, f"seen-{n}") for n in range(3)]
                for message_id in seen:
                    await on_a.wait_message(message_id)
                await on_a.close()
                assert on_a.close_code == 1000, on_a.close_code
                last = on_a.last

                missed = [await post(http[2], writer.bearer, lobby, f"away-{n}") for n in range(5)]
                on_b = await streams.open("reader@B", cluster.url(1), reader.bearer, since=last)
                assert on_b.hello["resumed"] is True, on_b.hello
                for message_id in missed:
                    await on_b.wait_message(message_id)
                live = [await post(http[2], writer.bearer, lobby, f"live-{n}") for n in range(3)]
                end = max([await on_b.wait_message(message_id) for message_id in live])

                log = await catch_up(http[1], reader.bearer, last, end)
                assert_same_as_log([on_b], log, last, end)
                replayed = [f for f in on_b.frames if f["eventId"] <= on_b.hello["eventId"]]
                assert len(replayed) == on_b.hello["replayed"], (on_b.hello, ids(replayed))
                assert message_ids(on_b.frames) == missed + live
                assert set(message_ids(replayed)) <= set(missed)
                # together, the two connections saw the log once, without a gap
                whole = await catch_up(http[0], reader.bearer, on_a.hello["eventId"], end)
                assert ids(on_a.frames) + ids(on_b.between(last, end)) == ids(whole)
            await cluster.stop_all()


async def test_a_session_made_on_one_process_works_on_the_others(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """A login and a token made on process 0 authenticate REST and streams on
    process 1; a logout on 1 ends the session (and its stream, 4001) on every
    process while the token keeps working."""
    with trio.fail_after(45):
        async with (
            open_cluster(tmp_path, 2, database_url=pg_url, redis_url=redis_url) as cluster,
            open_clients(cluster.urls) as http,
        ):
            admin = await admin_headers(http[0])
            lobby = await create_room(http[0], admin, "lobby")
            alice = await add_user(http[0], admin, "alice", token_client=http[0])
            session_id = await login(http[0], "alice", USER_PASSWORD)
            cookie = session_headers(session_id)

            # REST on the other process, with the cookie and with the token
            for headers in (cookie, alice.bearer):
                status = await http[1].get("/api/v1/status", headers=headers)
                assert status.status_code == 200, status.text
                assert status.json()["userId"] == alice.user_id
                listed = await http[1].get("/api/v1/rooms", headers=headers)
                assert listed.status_code == 200, listed.text
                assert lobby in [room["roomId"] for room in listed.json()["rooms"]]
                if headers is cookie:
                    assert status.json()["userSessionId"] == session_id

            # streams on the other process, with either credential, hear both processes
            async with open_streams() as streams:
                by_cookie = await streams.open("alice-cookie@1", cluster.url(1), cookie)
                by_token = await streams.open("alice-token@1", cluster.url(1), alice.bearer)
                for watcher in (by_cookie, by_token):
                    assert watcher.hello["userId"] == alice.user_id, watcher.hello
                here = await post(http[1], cookie, lobby, "posted on 1 with a session of 0")
                there = await post(http[0], alice.bearer, lobby, "posted on 0")
                for watcher in (by_cookie, by_token):
                    await watcher.wait_message(there)
                    assert message_ids(watcher.frames) == [here, there], watcher.label

                # and the session ends everywhere when it ends on one process
                logout = await http[1].post("/api/v1/logout", headers=cookie)
                assert logout.status_code == 200, logout.text
                assert await by_cookie.wait_closed() == 4001
                for client in http:
                    gone = await client.get("/api/v1/status", headers=cookie)
                    assert gone.status_code == 401, gone.text
                still = await post(http[0], alice.bearer, lobby, "the token still works")
                await by_token.wait_message(still)
            await cluster.stop_all()


async def test_ending_access_on_one_process_closes_streams_on_the_others(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """Changes made on process 0 reach streams on 1 and 2: a new token closes
    the old token's stream (4001) and nothing else, a logout closes the
    session's stream (4001), a suspension closes every stream of the user
    (4001), and removal from a private room sends RoomDeleted and nothing of
    that room afterwards."""
    with trio.fail_after(45):
        async with (
            open_cluster(tmp_path, 3, database_url=pg_url, redis_url=redis_url) as cluster,
            open_clients(cluster.urls) as http,
        ):
            admin = await admin_headers(http[0])
            lobby = await create_room(http[0], admin, "lobby")
            ann = await add_user(http[0], admin, "ann", token_client=http[0])
            sam = await add_user(http[0], admin, "sam", token_client=http[0])
            rex = await add_user(http[0], admin, "rex", token_client=http[0])
            private = await create_room(http[0], admin, "private", "Private", [rex.user_id])
            ann_cookie = session_headers(await login(http[0], "ann", USER_PASSWORD))

            async with open_streams() as streams:
                ann_by_cookie = await streams.open("ann-cookie@1", cluster.url(1), ann_cookie)
                ann_by_token = await streams.open("ann-token@2", cluster.url(2), ann.bearer)
                sam_1 = await streams.open("sam@1", cluster.url(1), sam.bearer)
                sam_2 = await streams.open("sam@2", cluster.url(2), sam.bearer)
                rex_1 = await streams.open("rex@1", cluster.url(1), rex.bearer)

                # a new token (issued on 0) revokes the old one: its stream on 2 ends
                renewed = await http[0].post("/api/v1/token", headers=ann_cookie)
                assert renewed.status_code == 200, renewed.text
                assert await ann_by_token.wait_closed() == 4001
                revoked = await http[2].get("/api/v1/status", headers=ann.bearer)
                assert revoked.status_code == 401, revoked.text
                # ...and nothing else: the session's stream on 1 still hears
                hello = await post(http[0], admin, lobby, "after the new token")
                await ann_by_cookie.wait_message(hello)

                # logout on 0 ends the session's stream on 1
                logout = await http[0].post("/api/v1/logout", headers=ann_cookie)
                assert logout.status_code == 200, logout.text
                assert await ann_by_cookie.wait_closed() == 4001

                # suspending on 0 ends the user's streams on 1 and 2
                suspended = await http[0].patch(
                    f"/api/v1/users/{sam.user_id}", json={"status": "Suspended"}, headers=admin
                )
                assert suspended.status_code == 200, suspended.text
                assert await sam_1.wait_closed() == 4001
                assert await sam_2.wait_closed() == 4001
                for client in http:
                    refused = await client.get("/api/v1/status", headers=sam.bearer)
                    assert refused.status_code == 401, refused.text

                # removal from a private room on 0: RoomDeleted on 1, then nothing of it
                before = await post(http[0], admin, private, "rex may read this")
                await rex_1.wait_message(before)
                removed = await http[0].delete(
                    f"/api/v1/rooms/{private}/members/{rex.user_id}", headers=admin
                )
                assert removed.status_code == 200, removed.text
                after = await post(http[2], admin, private, "rex may not read this")
                sentinel = await post(http[2], admin, lobby, "sentinel")
                end = await rex_1.wait_message(sentinel)
                deleted = [f for f in rex_1.frames if f["type"] == "RoomDeleted"]
                assert [f["data"] for f in deleted] == [{"roomId": private}], rex_1.frames
                cut = deleted[0]["eventId"]
                assert private not in rooms_in(rex_1.between(cut, end)), rex_1.frames
                assert after not in message_ids(rex_1.frames)
                log = await catch_up(http[1], rex.bearer, rex_1.hello["eventId"], end)
                assert_same_as_log([rex_1], log, rex_1.hello["eventId"], end)
            await cluster.stop_all()


async def test_killing_one_process_drops_only_its_streams_and_they_resume_elsewhere(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """SIGKILL of process 2 while process 0 writes: only its two streams drop
    (1006); the four on 0 and 1 keep receiving without a gap; the dropped
    clients resume on 1 and, over both connections, get the log exactly once."""
    with trio.fail_after(45):
        async with (
            open_cluster(tmp_path, 3, database_url=pg_url, redis_url=redis_url) as cluster,
            open_clients(cluster.urls) as http,
        ):
            admin = await admin_headers(http[0])
            lobby = await create_room(http[0], admin, "lobby")
            reader = await add_user(http[0], admin, "reader", token_client=http[1])
            writer = await add_user(http[0], admin, "writer", token_client=http[0])
            async with open_streams() as streams:
                kept = [
                    await streams.open(f"reader{k}@{p}", cluster.url(p), reader.bearer)
                    for p in (0, 1)
                    for k in range(2)
                ]
                doomed = [
                    await streams.open(f"reader{k}@2", cluster.url(2), reader.bearer)
                    for k in range(2)
                ]
                start = max(w.hello["eventId"] for w in [*kept, *doomed])
                background = Writer(http[0], writer.bearer, lobby)
                streams.nursery.start_soon(background.run)
                await background.more(10)
                await cluster.nodes[2].kill()
                codes = [await w.wait_closed() for w in doomed]
                assert codes == [1006, 1006], codes
                await background.more(10)  # written while they are away
                resumed = [
                    await streams.open(f"{w.label}->1", cluster.url(1), reader.bearer, w.last)
                    for w in doomed
                ]
                await background.more(10)  # and live after the resume
                acked = await background.stop()
                sentinel = await post(http[0], writer.bearer, lobby, "sentinel")
                end = max([await w.wait_message(sentinel) for w in [*kept, *resumed]])
                assert not any(w.ended.is_set() for w in kept), "a stream of a survivor ended"

                log = await catch_up(http[1], reader.bearer, start, end)
                assert_same_as_log(kept, log, start, end)
                for old, new in zip(doomed, resumed, strict=True):
                    assert new.hello["resumed"] is True, new.hello
                    frames = old.between(start, end) + new.between(old.last, end)
                    assert ids(frames) == ids(log), (old.label, ids(frames), ids(log))
                    assert frames == log, old.label
                for watcher in [*kept, *resumed]:
                    got = message_ids(watcher.between(start, end))
                    if watcher in resumed:
                        got = message_ids(doomed[resumed.index(watcher)].frames) + got
                    assert got == [*acked, sentinel], watcher.label
            await cluster.stop_all()


async def test_losing_redis_costs_latency_never_an_event(tmp_path: Path, pg_url: str) -> None:
    """A private Redis is SIGKILLed while process 1 keeps writing: /readyz says
    degraded on both processes, the events written while Redis is down reach
    process 0's streams (it can only have read the log), Redis restarts on the
    same port, /readyz says ready again, the bus carries events again, and
    every stream got every event once, as the log has them."""
    require_redis(private=True)
    with trio.fail_after(60):
        async with (
            private_redis(tmp_path) as redis,
            open_cluster(
                tmp_path,
                2,
                database_url=pg_url,
                redis_url=redis.url,
                bus={"fallback_poll_interval": 0.1},
            ) as cluster,
            open_clients(cluster.urls) as http,
        ):
            admin = await admin_headers(http[0])
            lobby = await create_room(http[0], admin, "lobby")
            reader = await add_user(http[0], admin, "reader", token_client=http[0])
            writer = await add_user(http[0], admin, "writer", token_client=http[1])
            async with open_streams() as streams:
                watchers = [
                    await streams.open(f"reader{k}@{p}", cluster.url(p), reader.bearer)
                    for p in (0, 1)
                    for k in range(2)
                ]
                start = max(w.hello["eventId"] for w in watchers)
                background = Writer(http[1], writer.bearer, lobby)
                streams.nursery.start_soon(background.run)
                await background.more(5)

                await redis.kill()  # mid-stream, the writer carries on
                await wait_readiness(cluster.urls, DEGRADED)
                await background.more(10)
                down = list(background.acked)
                # written while Redis is down: process 0 can only have read the log
                for watcher in watchers:
                    await watcher.wait_message(down[-1])
                assert redis.process is None
                assert [await readiness(url) for url in cluster.urls] == [DEGRADED] * 2

                await redis.start()  # same port, empty
                await wait_readiness(cluster.urls, READY)
                heard = await metric(cluster.url(0), "trio_events_bus_received_total")
                await background.more(10)
                acked = await background.stop()
                sentinel = await post(http[1], writer.bearer, lobby, "sentinel")
                end = max([await w.wait_message(sentinel) for w in watchers])

                for p in (0, 1):
                    log = await catch_up(http[p], reader.bearer, start, end)
                    assert_same_as_log(watchers, log, start, end)
                for watcher in watchers:
                    assert message_ids(watcher.between(start, end)) == [*acked, sentinel]
                # once Redis was back, the bus carried process 1's events again
                assert await metric(cluster.url(0), "trio_events_bus_received_total") > heard
            await cluster.stop_all()


async def wait_children(supervisor: Supervisor, condition: Callable[[set[int]], bool]) -> set[int]:
    """Poll the supervisor's children until ``condition`` holds (bounded by the caller)."""
    while not condition(children := supervisor.children()):
        assert supervisor.process is not None
        assert supervisor.process.poll() is None, supervisor.log_path.read_text()
        await trio.sleep(0.05)
    return children


async def wait_log(path: Path, text: str, count: int) -> None:
    """Until ``text`` occurs ``count`` times in the log at ``path``."""
    while (await trio.Path(path).read_text()).count(text) < count:  # noqa: ASYNC110
        await trio.sleep(0.05)


async def stream_on_worker(
    streams: Streams, supervisor: Supervisor, headers: Headers, pid: int, workers: set[int]
) -> Watcher:
    """Open streams until one lands on worker ``pid`` (the kernel picks); close the others."""
    for n in range(30):
        probe = await streams.open(f"probe{n}", supervisor.url, headers)
        if connection_owner(supervisor.port, probe.ws, sorted(workers)) == pid:
            return probe
        await probe.close()
    raise AssertionError(f"no stream out of 30 landed on worker {pid}")


async def test_serve_workers_share_one_port_and_a_killed_worker_is_replaced(
    tmp_path: Path, pg_url: str, redis_url: str
) -> None:
    """``serve --workers 2``: two worker processes accept on one port (streams
    land on both, found through /proc), a post reaches every stream; kill -9
    of one worker drops exactly its streams (1006), the supervisor starts a
    new worker that serves, the dropped clients resume without loss; SIGTERM
    to the supervisor closes the streams with 1001, stops every worker and
    exits 0 within graceful_timeout and a margin."""
    graceful = 2.0
    config = write_cluster_config(
        tmp_path / "workers.toml",
        database_url=pg_url,
        redis_url=redis_url,
        channel=new_channel(),
        sections={
            "server": {"graceful_timeout": graceful},
            "events": {"max_streams_per_user": 50},
        },
    )
    supervisor = Supervisor(config, tmp_path, workers=2)
    with trio.fail_after(80):
        try:
            await supervisor.start()
            workers = await wait_children(supervisor, lambda found: len(found) == 2)
            await wait_log(supervisor.log_path, "trio_events.server listening", 2)
            await wait_readiness([supervisor.url], READY)
            async with (
                httpx.AsyncClient(base_url=supervisor.url) as before,
                open_streams() as streams,
            ):
                admin = await admin_headers(before)
                lobby = await create_room(before, admin, "lobby")
                reader = await add_user(before, admin, "reader", token_client=before)

                # streams until each worker holds some (the kernel picks the worker)
                owners: dict[Watcher, int] = {}
                while len(owners) < 10 or len(set(owners.values())) < 2:
                    assert len(owners) < 40, f"every stream landed on one worker: {owners}"
                    watcher = await streams.open(f"s{len(owners)}", supervisor.url, reader.bearer)
                    owner = connection_owner(supervisor.port, watcher.ws, sorted(workers))
                    assert owner in workers, (owner, workers)
                    owners[watcher] = owner
                watchers = list(owners)
                start = max(w.hello["eventId"] for w in watchers)
                first = await post(before, admin, lobby, "to every worker's streams")
                for watcher in watchers:
                    await watcher.wait_message(first)

                # kill -9 one worker (a worker killed by a signal is always restarted)
                victim = owners[watchers[0]]
                dropped = [w for w in watchers if owners[w] == victim]
                kept = [w for w in watchers if owners[w] != victim]
                os.kill(victim, signal.SIGKILL)
                assert [await w.wait_closed() for w in dropped] == [1006] * len(dropped)
                async with httpx.AsyncClient(base_url=supervisor.url) as after:
                    away = [await post(after, admin, lobby, f"away-{n}") for n in range(5)]
                    replaced = await wait_children(
                        supervisor, lambda found: len(found) == 2 and victim not in found
                    )
                    assert alive(victim) is False
                    assert len(replaced - workers) == 1, (workers, replaced)
                    resumed = [
                        await streams.open(f"{w.label}'", supervisor.url, reader.bearer, w.last)
                        for w in dropped
                    ]
                    # the replacement serves: a stream lands on it and hears a post
                    (newcomer,) = replaced - workers
                    await wait_log(supervisor.log_path, "trio_events.server listening", 3)
                    on_newcomer = await stream_on_worker(
                        streams, supervisor, reader.bearer, newcomer, replaced
                    )
                    live = [await post(after, admin, lobby, f"live-{n}") for n in range(5)]
                    await on_newcomer.wait_message(live[-1])
                    end = max([await w.wait_message(live[-1]) for w in [*kept, *resumed]])
                    log = await catch_up(after, reader.bearer, start, end)
                assert not any(w.ended.is_set() for w in kept)
                assert_same_as_log(kept, log, start, end)
                for old, new in zip(dropped, resumed, strict=True):
                    assert new.hello["resumed"] is True, new.hello
                    frames = old.between(start, end) + new.between(old.last, end)
                    assert frames == log, old.label
                    assert message_ids(frames) == [first, *away, *live], old.label

                # SIGTERM to the supervisor stops every worker; streams close with 1001
                code, took = await supervisor.stop()
                assert code == 0, supervisor.log_path.read_text()
                assert took < graceful + 3.0, took
                for watcher in [*kept, *resumed, on_newcomer]:
                    assert await watcher.wait_closed() == 1001, watcher.label
            assert not [pid for pid in supervisor.seen_workers if alive(pid)]
            text = supervisor.log_path.read_text()
            assert "Traceback" not in text, text
            assert "supervisor stopped" in text, text
        finally:
            await supervisor.ensure_dead()


async def test_serve_workers_is_refused_without_postgresql_and_redis(tmp_path: Path) -> None:
    """``serve --workers 2`` without PostgreSQL and Redis (defaults, or only
    one of them configured through TRIO_EVENTS_* variables) exits 2 with one
    line on stderr naming the problem."""
    base = dict(os.environ)
    cases = {
        "default": {},  # SQLite and the in-process bus
        "postgresql only": {
            "TRIO_EVENTS_STORAGE__BACKEND": "postgresql",
            "TRIO_EVENTS_STORAGE__URL": "postgresql://postgres@127.0.0.1:5432/nowhere",
        },
        "redis only": {
            "TRIO_EVENTS_BUS__BACKEND": "redis",
            "TRIO_EVENTS_BUS__URL": "redis://127.0.0.1:6379/0",
        },
    }
    results: dict[str, tuple[int, str, str]] = {}

    async def refuse(name: str, env: dict[str, str]) -> None:
        workdir = tmp_path / name.replace(" ", "-")
        workdir.mkdir()
        argv = [sys.executable, "-m", "trio_events", "serve", "--workers", "2", "--port", "0"]
        done = await trio.run_process(
            [*argv, "--data-dir", str(workdir / "data")],
            cwd=str(workdir),  # no config.toml there: defaults and the environment
            env={**base, **env},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        results[name] = (done.returncode, done.stdout.decode(), done.stderr.decode())

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for name, env in cases.items():
                nursery.start_soon(refuse, name, env)
    for name, (code, out, err) in results.items():
        assert code == 2, (name, code, out, err)
        assert out == "", (name, out)
        lines = err.splitlines()
        assert len(lines) == 1, (name, err)
        assert lines[0].startswith("trio-events: error: --workers 2:"), (name, err)
    assert "bus.backend = 'local'" in results["postgresql only"][2]
    assert "storage.backend = 'sqlite'" in results["redis only"][2]
    assert "storage.backend = 'sqlite'" in results["default"][2]


async def test_resuming_on_a_process_that_has_not_yet_heard_of_since_is_not_refused(
    tmp_path: Path, pg_url: str
) -> None:
    """While Redis is down a process learns of other processes' events only by
    polling the log (``bus.fallback_poll_interval``).  A client that saw event
    N on process A and reconnects at once to process B, which has not polled
    yet, presents an id the cluster committed: its resume must be accepted
    (API.md section 8: resume works across server processes), not refused
    with 400 "since is in the future", and it must then get what follows."""
    require_redis(private=True)
    with trio.fail_after(45):
        async with (
            private_redis(tmp_path) as redis,
            open_cluster(
                tmp_path,
                2,
                database_url=pg_url,
                redis_url=redis.url,
                bus={"fallback_poll_interval": 2.0},
            ) as cluster,
            open_clients(cluster.urls) as http,
        ):
            admin = await admin_headers(http[0])
            lobby = await create_room(http[0], admin, "lobby")
            reader = await add_user(http[0], admin, "reader", token_client=http[0])
            await redis.kill()
            await wait_readiness(cluster.urls, DEGRADED)
            async with open_streams() as streams:
                on_a = await streams.open("reader@A", cluster.url(0), reader.bearer)
                # B also reads the log whenever a reconnection attempt fails,
                # so it is behind most of the time, not always: several tries
                tries: list[Watcher] = []
                for n in range(LAG_TRIES):
                    if tries:
                        await tries[-1].close()
                    seen = await post(http[0], admin, lobby, f"seen on A {n}")
                    await on_a.wait_message(seen)
                    tries.append(
                        await streams.open(f"reader@B{n}", cluster.url(1), reader.bearer, on_a.last)
                    )
                    assert tries[-1].hello["resumed"] is True, tries[-1].hello
                on_b = tries[-1]
                later = await post(http[0], admin, lobby, "after the resume")
                await on_b.wait_message(later)
                assert message_ids(on_b.frames) == [later]
            await cluster.stop_all()
