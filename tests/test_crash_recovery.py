"""Crash recovery: SIGKILL the server mid-traffic, restart it, and check what survived.

The server runs as a child process on one data directory.  In each round a
few writers post over HTTP (recording every acknowledged messageId) and a
WebSocket reader records every eventId it receives; after a random delay the
process is SIGKILLed.  With the process dead the SQLite file must pass
``PRAGMA integrity_check``, hold every acknowledged message, and hold no
event without its change nor a change without its event (the outbox commits
both or neither), for every kind of event the test makes: ``acl.user`` and
users, ``acl.room`` and ``RoomCreated`` and rooms, ``TextMessagesCreated``
and messages, and the ``RoomUpdated`` each post writes and the room's
message count and read counts it carries.  After the restart the reader
resumes with ``?since=<last eventId it saw>`` and must get every event it
missed exactly once: the union of what it received equals what the log lets
it receive.

The kill delays come from a seed taken from the clock, so every run kills at
other moments; the seed is printed with the figures, and setting
``TRIO_EVENTS_CRASH_SEED`` to it replays the same delays.  Each round's
figures are printed and, when the environment variable
``TRIO_EVENTS_CRASH_REPORT`` names a file, written there as JSON.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .fault_helpers import (
    ADMIN_PASSWORD,
    CRASH_SEED,
    CREATED,
    DB_NAME,
    DbState,
    LogEvent,
    ServerProcess,
    inspect_db,
    report,
    write_config,
)
from .stream_helpers import bearer_stream

SEED = int(CRASH_SEED) if CRASH_SEED else time.time_ns() % 1_000_000_007
UPDATED = "RoomUpdated"
KINDS = {"acl.user", "acl.room", "RoomCreated", CREATED, UPDATED}  # what this test makes
WRITERS = 3
PASSWORD = "user-password-1"
MAX_POSTS = 2000  # per writer and round; the kill comes long before
CATCH_UP = 10.0  # seconds a resumed reader gets to receive what it missed


@attrs.define
class Reader:
    """Every event frame the reader received, over all its connections, in order."""

    token: str
    received: list[int] = attrs.Factory(list)
    last: int = 0
    connections: int = 0

    def take(self, message: str | bytes) -> None:
        assert isinstance(message, str)
        frame = json.loads(message)
        event_id = frame["eventId"]
        assert isinstance(event_id, int)
        assert event_id > self.last, (frame, self.last)  # in order, never twice on a stream
        self.received.append(event_id)
        self.last = event_id


@contextlib.asynccontextmanager
async def reader_stream(
    server: ServerProcess, reader: Reader, since: int | None
) -> AsyncIterator[tuple[WebSocketConnection, dict[str, Any]]]:
    """An events stream for ``reader`` and its Hello data."""
    url = server.url.replace("http", "ws", 1) + "/api/v1/events"
    async with bearer_stream(url, reader.token, since) as (ws, hello):
        reader.connections += 1
        yield ws, hello


async def read_until_closed(ws: WebSocketConnection, reader: Reader) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            reader.take(await ws.get_message())


async def catch_up(ws: WebSocketConnection, reader: Reader, target: int) -> None:
    with trio.fail_after(CATCH_UP):
        while reader.last < target:
            reader.take(await ws.get_message())


async def setup(server: ServerProcess) -> tuple[int, list[str], Reader, int]:
    """Users, tokens and a public room; return the room, writer tokens, the reader
    and the reader's user id."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        login = await client.post(
            "/api/v1/login", json={"userName": "admin", "password": ADMIN_PASSWORD}
        )
        assert login.status_code == 200, login.text
        admin = {"Cookie": f"VirolaUserSessionId={login.json()['userSessionId']}"}
        client.cookies.clear()
        room = await client.post(
            "/api/v1/rooms", json={"displayName": "lobby", "roomType": "Public"}, headers=admin
        )
        assert room.status_code == 200, room.text
        tokens: dict[str, str] = {}
        user_ids: dict[str, int] = {}
        for name in [*(f"writer{i}" for i in range(WRITERS)), "reader"]:
            made = await client.post(
                "/api/v1/users", json={"userName": name, "password": PASSWORD}, headers=admin
            )
            assert made.status_code == 200, made.text
            user_ids[name] = int(made.json()["userId"])
            session = await client.post(
                "/api/v1/login", json={"userName": name, "password": PASSWORD}
            )
            assert session.status_code == 200, session.text
            client.cookies.clear()
            cookie = {"Cookie": f"VirolaUserSessionId={session.json()['userSessionId']}"}
            token = await client.post("/api/v1/token", headers=cookie)
            assert token.status_code == 200, token.text
            tokens[name] = token.json()["token"]
    writers = [tokens[f"writer{i}"] for i in range(WRITERS)]
    return int(room.json()["roomId"]), writers, Reader(tokens["reader"]), user_ids["reader"]


async def write_until_killed(
    url: str, token: str, room_id: int, tag: str, acked: set[int], refused: list[int]
) -> None:
    """Post single messages and batches of three until the server is gone."""
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/api/v1/rooms/{room_id}/messages"
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5.0) as client:
        for n in range(MAX_POSTS):
            body: dict[str, Any] = {"content": f"{tag}-{n}"}
            if n % 4 == 3:
                body = {"messages": [{"content": f"{tag}-{n}-{i}"} for i in range(3)]}
            try:
                response = await client.post(path, json=body)
            except httpx.TransportError:
                return
            if response.status_code != 200:
                refused.append(response.status_code)
                continue
            answer = response.json()
            ids = answer["messageIds"] if "messages" in body else [answer["messageId"]]
            acked.update(int(i) for i in ids)


def check_database(
    db_path: Path, acked: set[int], room_id: int, user_id: int, base: int
) -> tuple[int, list[int], int, int]:
    """The on-disk checks after a kill; return acknowledged ids lost, the event ids
    the reader may receive after ``base``, the newest event id, and how many
    posts were found with both their events."""
    state = inspect_db(db_path, room_id, user_id, base)
    assert state.integrity == "ok", state.integrity
    lost = acked - state.message_ids
    in_events = {m for ids in state.created_ids.values() for m in ids}
    assert not lost, f"acknowledged messages missing after the crash: {sorted(lost)[:20]}"
    assert acked <= in_events, f"acknowledged without their event: {sorted(acked - in_events)}"
    assert in_events <= state.message_ids, (
        f"events without their change: {sorted(in_events - state.message_ids)[:20]}"
    )
    assert state.message_ids <= in_events, (
        f"changes without their event: {sorted(state.message_ids - in_events)[:20]}"
    )
    posts = check_every_kind(state)
    return len(lost), state.visible, state.latest_event_id, posts


def check_every_kind(state: DbState) -> int:
    """Each event has its change and each change its events, kind by kind;
    return the number of posts checked."""
    kinds = {e.event_type for e in state.events}
    assert kinds <= KINDS, f"kinds of event this test does not check: {kinds - KINDS}"
    of_kind = {kind: [e for e in state.events if e.event_type == kind] for kind in KINDS}
    assert sorted(e.payload["userId"] for e in of_kind["acl.user"]) == sorted(state.users)
    assert (
        sorted(e.payload["roomId"] for e in of_kind["acl.room"])
        == sorted(e.payload["roomTemplate"]["room"]["roomId"] for e in of_kind["RoomCreated"])
        == sorted(state.rooms)
    )
    # A post writes its TextMessagesCreated and then, in the same transaction
    # (one writer at a time, so the next event), the RoomUpdated of its room.
    paired: set[int] = set()
    for position, event in enumerate(state.events):
        if event.event_type != CREATED:
            continue
        last_id = max(int(m["messageId"]) for m in event.payload["messages"])
        follower = state.events[position + 1] if position + 1 < len(state.events) else None
        assert follower is not None, f"post {last_id}: no RoomUpdated after it"
        assert (follower.event_type, follower.room_id) == (UPDATED, event.room_id), follower
        template = follower.payload["roomTemplate"]
        assert template["room"]["lastMessage"]["messageId"] == last_id, template
        in_room = sum(
            1 for m, (r, _) in state.messages.items() if r == event.room_id and m <= last_id
        )
        assert template["messageCount"] == in_room, (template["messageCount"], in_room)
        paired.add(follower.event_id)
    orphans = [e.event_id for e in of_kind[UPDATED] if e.event_id not in paired]
    assert not orphans, f"RoomUpdated without the post that made it: {orphans[:20]}"
    for room_id, message_count in state.rooms.items():
        check_room_state(state, room_id, message_count)
    return len(paired)


def check_room_state(state: DbState, room_id: int, message_count: int) -> None:
    """The room's last event carries the room as its tables hold it."""
    last: LogEvent = [
        e for e in state.events if e.room_id == room_id and e.event_type in ("RoomCreated", UPDATED)
    ][-1]
    template = last.payload["roomTemplate"]
    in_room = sum(1 for r, _ in state.messages.values() if r == room_id)
    assert template["messageCount"] == message_count == in_room, (last, message_count, in_room)
    reads = {int(user): fields[0] for user, fields in template["perUser"].items()}
    assert reads == {u: n for (r, u), n in state.reads.items() if r == room_id}, reads


@pytest.mark.slow
@pytest.mark.parametrize(("durability", "rounds"), [("normal", 3), ("full", 2)])
async def test_sigkill_loses_no_acknowledged_write_and_resume_fills_the_gap(
    tmp_path: Path, durability: str, rounds: int
) -> None:
    rng = random.Random(f"{SEED}-{durability}")
    config = write_config(
        tmp_path / "config.toml",
        {
            'log_level = "info"': 'log_level = "warning"',
            'durability = "normal"': f'durability = "{durability}"',
            'admin_password = ""': f'admin_password = "{ADMIN_PASSWORD}"',
        },
    )
    data_dir = tmp_path / "data"
    server = ServerProcess(tmp_path, config_file=config, data_dir=data_dir)
    figures: list[dict[str, Any]] = []
    acked: set[int] = set()
    with trio.fail_after(40):
        try:
            await server.start()
            room_id, writer_tokens, reader, reader_id = await setup(server)
            base = 0
            previous: tuple[list[int], int] | None = None  # (visible ids, newest id) at the kill
            for round_no in range(rounds + 1):
                since = None if round_no == 0 else reader.last
                async with reader_stream(server, reader, since) as (ws, hello):
                    if round_no == 0:
                        base = reader.last = int(hello["eventId"])
                    else:
                        assert hello["resumed"] is True, hello
                        assert previous is not None
                        visible, newest = previous
                        await catch_up(ws, reader, newest)
                        missed = sorted(set(visible) - set(reader.received))
                        duplicates = len(reader.received) - len(set(reader.received))
                        figures[-1]["events_lost"] += len(missed)
                        figures[-1]["duplicates"] = duplicates
                        figures[-1]["events_received"] = len(reader.received)
                        assert not missed, f"round {round_no - 1}: never delivered: {missed[:20]}"
                        assert duplicates == 0
                        unexpected = sorted(set(reader.received) - set(visible))
                        assert not unexpected, f"received but not visible: {unexpected[:20]}"
                    if round_no == rounds:
                        break
                    round_acked: set[int] = set()
                    refused: list[int] = []
                    delay = rng.uniform(0.2, 1.0)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(read_until_closed, ws, reader)
                        for i, token in enumerate(writer_tokens):
                            tag = f"r{round_no}w{i}"
                            nursery.start_soon(
                                write_until_killed,
                                server.url,
                                token,
                                room_id,
                                tag,
                                round_acked,
                                refused,
                            )
                        await trio.sleep(delay)
                        await server.kill()
                acked |= round_acked
                lost, visible, newest, posts = check_database(
                    data_dir / DB_NAME, acked, room_id, reader_id, base
                )
                previous = (visible, newest)
                figures.append(
                    {
                        "round": round_no,
                        "kill_after_s": round(delay, 3),
                        "acknowledged_writes": len(round_acked),
                        "refused_writes": len(refused),
                        "seen_before_kill": reader.last,
                        "newest_event": newest,
                        "posts_with_both_events": posts,
                        "events_lost": lost,
                    }
                )
                assert round_acked, f"round {round_no}: no write was acknowledged before the kill"
                assert not refused, f"round {round_no}: refused writes {refused[:10]}"
                await server.start()
            code = await server.stop()
            log = server.log_path.read_text()
            assert code == 0, log
            assert "Traceback" not in log, log
        finally:
            await server.ensure_dead()
            report(f"crash_recovery[{durability}]", {"seed": SEED, "rounds": figures})
    assert [f["events_lost"] for f in figures] == [0] * rounds
