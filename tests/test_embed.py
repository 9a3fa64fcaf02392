"""Embedding: ``open_server`` left by a cancellation or Ctrl-C shuts down like ``serve``.

Every stream gets what was queued for it, then a 1001 close; and
``examples/embed.py``, run as written on a fresh data directory, stops that
way on SIGINT with a clean exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

import trio_events

from .helpers import ADMIN_PASSWORD, TEST_TIMEOUT, reap, serving
from .rest_helpers import admin_actor, create_room, latest_event_id, post, post_batch, user_actors
from .stream_helpers import (
    CREATED,
    ROOM_UPDATED,
    Json,
    Stream,
    no_task_left_behind,
    open_stream,
    stream_config,
    summary,
    wait_until,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "embed.py"
BIG = "y" * 50_000


async def read_to_close(stream: Stream) -> tuple[list[Json], int]:
    """Every frame until the server closes, and its close code."""
    frames: list[Json] = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            frames.append(await stream.frame())
    return frames, await stream.close_code()


async def run_server(
    config: trio_events.Config,
    *,
    task_status: trio.TaskStatus[tuple[trio.CancelScope, trio_events.RunningServer]],
) -> None:
    """Serve inside a cancel scope the test cancels, as an embedding program would."""
    with trio.CancelScope() as scope:
        async with trio_events.open_server(config) as server:
            task_status.started((scope, server))
            await trio.sleep_forever()


async def test_cancelled_server_drains_then_closes_1001(tmp_path: Path) -> None:
    config = stream_config(tmp_path, events={"send_queue_size": 10_000})
    with trio.fail_after(TEST_TIMEOUT):
        async with no_task_left_behind(), trio.open_nursery() as nursery:
            scope, server = await nursery.start(run_server, config)
            broker = server.services.broker
            async with httpx.AsyncClient(base_url=server.url) as client:
                admin = await admin_actor(client)
                (alice,) = await user_actors(client, server, "alice")
                room = await create_room(client, admin, "lobby", "Public")
                async with open_stream(server, list(alice.headers.items())) as stream:
                    posted = 0
                    # alice reads nothing yet: her socket fills, then her queue
                    while not any(broker.queue_depths()):
                        assert posted < 60, "no frame was ever queued"
                        await post_batch(client, admin, room, [BIG] * 10)
                        posted += 1
                    last = await latest_event_id(server)
                    await wait_until(lambda: broker.last_event_id >= last)
                    scope.cancel()
                    frames, code = await read_to_close(stream)
        assert broker.statistics().subscribers == 0
    assert code == 1001
    assert summary(frames) == [(CREATED, room), (ROOM_UPDATED, room)] * posted
    assert frames[-1]["eventId"] == last


async def test_keyboard_interrupt_in_the_block_closes_1001(tmp_path: Path) -> None:
    """Ctrl-C lands in the embedding program's task, inside the block."""
    received: list[tuple[list[Json], int]] = []

    async def watch(
        server: trio_events.RunningServer,
        headers: list[tuple[str, str]],
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        async with open_stream(server, headers) as stream:
            task_status.started()
            received.append(await read_to_close(stream))

    interrupted = False
    with trio.fail_after(TEST_TIMEOUT):
        async with no_task_left_behind(), trio.open_nursery() as nursery:
            try:
                async with serving(stream_config(tmp_path)) as (server, client):
                    admin = await admin_actor(client)
                    room = await create_room(client, admin, "lobby", "Public")
                    await nursery.start(watch, server, list(admin.headers.items()))
                    await post(client, admin, room)
                    last = await latest_event_id(server)
                    await wait_until(lambda: server.services.broker.last_event_id >= last)
                    raise KeyboardInterrupt
            except* KeyboardInterrupt:
                interrupted = True
    assert interrupted
    [(frames, code)] = received
    assert code == 1001
    assert summary(frames) == [(CREATED, room), (ROOM_UPDATED, room)]


async def wait_for_url(process: trio.Process, log: Path) -> str:
    """The URL the example prints once it listens."""
    while True:
        text = await trio.Path(log).read_text()
        found = re.search(r"serving on (\S+)", text)
        if found:
            return found.group(1)
        assert process.poll() is None, text
        await trio.sleep(0.05)


async def test_example_runs_and_stops_on_sigint(tmp_path: Path) -> None:
    env = dict(os.environ)
    log = tmp_path / "embed.log"
    data = tmp_path / "data"  # fresh: no room, no user yet
    frames: list[Json] = []
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(EXAMPLE), str(data), "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            with trio.fail_after(60):
                url = await wait_for_url(process, log)
                async with httpx.AsyncClient(base_url=url) as client:
                    login = {"userName": "admin", "password": ADMIN_PASSWORD}
                    session = (await client.post("/api/v1/login", json=login)).json()
                cookie = f"VirolaUserSessionId={session['userSessionId']}".encode()
                events = url.replace("http", "ws", 1) + "/api/v1/events?since=0"
                async with (
                    contextlib.AsyncExitStack() as stack,
                    open_websocket_url(events, extra_headers=[(b"Cookie", cookie)]) as ws,
                ):
                    # trio-websocket leaves the TCP stream open after the server's close
                    stack.push_async_callback(ws._stream.aclose)
                    hello = json.loads(await ws.get_message())
                    assert hello["type"] == "Hello"
                    while not any(f["type"] == "BuildFinished" for f in frames):
                        frames.append(json.loads(await ws.get_message()))
                    process.send_signal(signal.SIGINT)
                    with contextlib.suppress(ConnectionClosed):
                        while True:
                            frames.append(json.loads(await ws.get_message()))
                    assert ws.closed is not None
                    close_code = ws.closed.code
                exit_code = await process.wait()
        finally:
            await reap(process)
    text = log.read_text()
    assert close_code == 1001, text
    assert exit_code == 0, text
    assert "Traceback" not in text
    assert [f["type"] for f in frames][:2] == ["RoomCreated", "BuildFinished"]
    assert frames[1]["data"] == {"build": 1, "status": "passed"}
