"""Reconnect storm: 200 streams drop at once and come back at once with ``?since=``.

Twenty users hold ten streams each on one public room.  Messages are posted,
every stream reads them, then every stream closes while more messages are
posted, and every client reconnects at the same moment resuming from the
last eventId it saw.  Each client must end with every message exactly once,
in order; afterwards the broker has no subscriber left and the number of
living Trio tasks is back to what it was before the first client connected.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection

import trio_events

from .helpers import create_user, make_config, serving
from .rest_helpers import admin_actor, create_room, latest_event_id, post
from .stream_helpers import CREATED, Json, bearer_stream, parse, wait_until

USERS = 20
STREAMS_PER_USER = 10
CLIENTS = USERS * STREAMS_PER_USER
BEFORE = 20  # messages posted while every client is connected
DURING = 20  # messages posted while every client is away
RETRIES = 20  # attempts at one handshake that gets 503


@attrs.define
class Client:
    """One stream's view: its token, every frame it received, its last eventId."""

    token: str
    last: int = 0
    event_ids: list[int] = attrs.Factory(list)
    message_ids: list[int] = attrs.Factory(list)
    resumed: bool | None = None
    retries: int = 0  # handshakes answered 503 and tried again

    def take(self, frame: Json) -> None:
        assert frame["eventId"] > self.last, (frame["eventId"], self.last)
        self.last = frame["eventId"]
        self.event_ids.append(frame["eventId"])
        if frame["type"] == CREATED:
            self.message_ids.extend(m["messageId"] for m in frame["data"]["messages"])


@contextlib.asynccontextmanager
async def stream(
    server: trio_events.RunningServer, client: Client, since: int | None
) -> AsyncIterator[WebSocketConnection]:
    """An events stream for ``client`` whose Hello has been read; closed after the block.

    A 503 (the server waited ``storage.busy_timeout`` for a database
    connection: 200 handshakes at once, and the 200 clients run in this same
    process, on the server's core) is retried with the same ``since``, as a
    real client does; the test then checks nothing was lost or repeated.
    """
    url = server.url.replace("http", "ws", 1) + "/api/v1/events"
    for attempt in range(1, RETRIES + 1):
        stack = contextlib.AsyncExitStack()
        try:
            ws, hello = await stack.enter_async_context(bearer_stream(url, client.token, since))
        except ConnectionRejected as exc:
            await stack.aclose()
            if exc.status_code != 503 or attempt == RETRIES:
                raise
            client.retries += 1
            await trio.sleep(0.1 * attempt)
            continue
        async with stack:
            if since is None:
                client.last = int(hello["eventId"])
            client.resumed = bool(hello.get("resumed"))
            yield ws
        return


async def read_until(ws: WebSocketConnection, client: Client, target: int) -> None:
    while client.last < target:
        message = await ws.get_message()
        assert isinstance(message, str)
        client.take(parse(message))
    assert client.last == target


@attrs.define
class Phase:
    """A barrier: ``count`` clients report, ``done`` is set when all have."""

    expected: int
    count: int = 0
    done: trio.Event = attrs.Factory(trio.Event)

    def arrive(self) -> None:
        self.count += 1
        if self.count == self.expected:
            self.done.set()


@attrs.define
class Storm:
    server: trio_events.RunningServer
    connected: Phase = attrs.Factory(lambda: Phase(CLIENTS))
    caught_up: Phase = attrs.Factory(lambda: Phase(CLIENTS))
    closed: Phase = attrs.Factory(lambda: Phase(CLIENTS))
    finished: Phase = attrs.Factory(lambda: Phase(CLIENTS))
    first_target: int = 0
    final_target: int = 0
    posted_before: trio.Event = attrs.Factory(trio.Event)
    reconnect: trio.Event = attrs.Factory(trio.Event)
    posted_during: trio.Event = attrs.Factory(trio.Event)

    async def run_client(self, client: Client) -> None:
        async with stream(self.server, client, None) as ws:
            self.connected.arrive()
            await self.posted_before.wait()
            await read_until(ws, client, self.first_target)
            self.caught_up.arrive()
            await self.caught_up.done.wait()  # all drop at the same moment
        self.closed.arrive()
        await self.reconnect.wait()
        async with stream(self.server, client, client.last) as ws:
            await self.posted_during.wait()
            await read_until(ws, client, self.final_target)
        self.finished.arrive()


@pytest.mark.slow
async def test_reconnect_storm_resumes_every_client_exactly_once(tmp_path: Path) -> None:
    # The 200 clients run in this process, on the server's core: on a slow
    # machine the resumes take seconds of CPU, and a handshake could wait past
    # the default busy_timeout for a database connection (503, retried above).
    # This test is about exactly-once delivery, not speed: give it room.
    config = make_config(
        tmp_path,
        events={"max_streams_per_user": 20, "heartbeat_interval": 5.0},
        storage={"busy_timeout": 30.0},
    )
    with trio.fail_after(60):
        async with serving(config) as (server, http):
            started = trio.current_time()
            admin = await admin_actor(http)
            lobby = await create_room(http, admin, "lobby", "Public")
            clients = []
            for n in range(USERS):
                user = await create_user(server, f"user{n}")
                token = await server.services.auth.issue_token(user.user_id)
                clients += [Client(token) for _ in range(STREAMS_PER_USER)]
            await post(http, admin, lobby, "warm-up")  # the REST connection exists from here on
            baseline_tasks = trio.lowlevel.current_statistics().tasks_living
            assert server.services.broker.statistics().subscribers == 0
            storm = Storm(server)
            posted: list[int] = []
            timings: dict[str, float] = {}

            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(storm.run_client, client)
                mark = trio.current_time()
                await storm.connected.done.wait()
                timings["connect_s"] = trio.current_time() - mark
                assert server.services.broker.statistics().subscribers == CLIENTS
                posted += [await post(http, admin, lobby, f"before {i}") for i in range(BEFORE)]
                storm.first_target = await latest_event_id(server)
                storm.posted_before.set()
                await storm.caught_up.done.wait()

                # every client closes now; half the messages go out while they do
                for i in range(DURING // 2):
                    posted.append(await post(http, admin, lobby, f"during {i}"))
                await storm.closed.done.wait()
                await wait_until(lambda: server.services.broker.statistics().subscribers == 0)
                for i in range(DURING // 2, DURING):
                    posted.append(await post(http, admin, lobby, f"during {i}"))
                storm.final_target = await latest_event_id(server)
                mark = trio.current_time()
                storm.reconnect.set()  # all at once
                storm.posted_during.set()
                await storm.finished.done.wait()
                timings["resume_s"] = trio.current_time() - mark

            await wait_until(lambda: server.services.broker.statistics().subscribers == 0)
            with trio.move_on_after(5):
                await wait_until(
                    lambda: trio.lowlevel.current_statistics().tasks_living <= baseline_tasks
                )
            tasks_after = trio.lowlevel.current_statistics().tasks_living
            stats = server.services.broker.statistics()
            timings["total_s"] = trio.current_time() - started

    for client in clients:
        assert client.resumed is True
        assert client.message_ids == posted, "a client missed, repeated or reordered messages"
        assert len(set(client.event_ids)) == len(client.event_ids)
    events_per_client = {len(c.event_ids) for c in clients}
    print(
        f"\nreconnect storm: clients={CLIENTS} users={USERS} messages={len(posted)}"
        f" events_per_client={sorted(events_per_client)} frames_total="
        f"{sum(len(c.event_ids) for c in clients)} connect={timings['connect_s']:.2f}s"
        f" resume={timings['resume_s']:.2f}s total={timings['total_s']:.2f}s"
        f" tasks baseline={baseline_tasks} after={tasks_after}"
        f" subscribers_after={stats.subscribers} drops={stats.drops}"
        f" retried_handshakes={sum(c.retries for c in clients)}"
    )
    assert len(events_per_client) == 1
    assert stats.subscribers == 0
    assert stats.drops == 0
    assert tasks_after <= baseline_tasks, (tasks_after, baseline_tasks)
