"""Our server, in-process through ``trio_events.open_server``, driven from stdin.

    python bench/serve_ours.py --tokens-file FILE [--port 0] [--data-dir DIR] [--users 100]
        [--storage-url postgresql://...] [--bus-url redis://... --bus-channel NAME]
        [--join ROOM_ID]

Set-up: a fresh data directory (a temporary one unless ``--data-dir``), K
users with a bearer token each and one public room; the tokens go to
``--tokens-file`` as a JSON list.  Then the garbage collector is tuned exactly
as ``trio-events serve`` does once it listens (``gc.freeze()`` and
``gc.set_threshold(50_000, 20, 100)``, see ``trio_events.cli.tune_gc``), and
one JSON line ``{"ready": true, "port": P, "pid": PID}`` is printed.

Cluster mode (``bench/cluster.py``): ``--storage-url`` stores in that
PostgreSQL database instead of SQLite, ``--bus-url`` and ``--bus-channel``
join a Redis bus (the ready line then waits until the bus is connected), and
``--join ROOM_ID`` skips the set-up because another process already made the
users, tokens and room in the shared database (``--tokens-file`` is then not
needed; ``publish`` goes to ROOM_ID).

Commands, one per stdin line; each answers with one JSON line:

``publish M SIZE RATE``
    publish M events of type ``Bench`` to the room through
    ``RunningServer.publish`` (durable log, then the broker), each about
    SIZE bytes on the wire, with ``{"ts": monotonic_ns, "seq": i, "pad": ...}``
    as data, at RATE events/s (0: one after the other, as fast as the
    server takes them).
``stats``
    the broker's statistics (frames queued, drops); with a Redis bus also
    the events it published and received.
``quit``
    stop the server (streams close with 1001) and exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from typing import Any

import trio
from bench_common import EVENT_TYPE, bench_data, emit, pad_for, raise_nofile, tune_gc

import trio_events
from trio_events.config import Config


def make_config(
    data_dir: str, port: int, storage_url: str = "", bus_url: str = "", bus_channel: str = ""
) -> Config:
    cluster: dict[str, Any] = {}
    if storage_url:
        cluster["storage"] = {"backend": "postgresql", "url": storage_url}
    if bus_url:
        cluster["bus"] = {"backend": "redis", "url": bus_url}
        if bus_channel:
            cluster["bus"]["channel"] = bus_channel
    return trio_events.load_config(
        None,
        environ={},
        overrides={
            **cluster,
            "server": {"host": "127.0.0.1", "port": port, "data_dir": data_dir},
            "bootstrap": {"admin_password": "bench-admin-password-1"},
            "events": {
                "max_streams_per_user": 100_000,
                "send_queue_size": 20_000,  # more than one burst: no 4008 in a fan-out run
            },
            "auth": {"login_rate": 1_000_000},
        },
    )


async def set_up(server: trio_events.RunningServer, users: int) -> tuple[int, list[str]]:
    """K users with a token each, one public room; return the room id and the tokens."""
    svc = server.services
    room = await svc.rooms.create(None, {"displayName": "bench", "roomType": "Public"})
    tokens: list[str] = [""] * users

    async def one(i: int) -> None:
        user = await svc.users.create_user(None, f"bench{i}", "bench-password-1", None, False)
        tokens[i] = await svc.auth.issue_token(user.user_id)

    async with trio.open_nursery() as nursery:
        for i in range(users):
            nursery.start_soon(one, i)
    return int(room["roomId"]), tokens


async def publish(
    server: trio_events.RunningServer, room_id: int, count: int, size: int, rate: float
) -> dict[str, Any]:
    pad = pad_for(size)
    first_id = last_id = 0
    t0 = time.monotonic_ns()
    start = trio.current_time()
    for seq in range(count):
        if rate > 0:
            await trio.sleep_until(start + seq / rate)
        last_id = await server.publish(EVENT_TYPE, bench_data(seq, pad), room_id=room_id)
        if seq == 0:
            first_id = last_id
    t1 = time.monotonic_ns()
    return {
        "published": count,
        "t0_ns": t0,
        "t1_ns": t1,
        "first_event_id": first_id,
        "last_event_id": last_id,
    }


async def bus_connected(server: trio_events.RunningServer) -> None:
    """Wait (up to 30 s) until the Redis bus, if any, is subscribed, so that no
    event of the benchmark reaches this process by the log poll instead."""
    bus = server.services.bus
    for _ in range(3000):  # the bus has no "connected" event to wait for: poll it
        if bus is None or bus.connected:
            return
        await trio.sleep(0.01)
    raise RuntimeError("the Redis bus did not connect within 30 s")


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="bench-ours-")
    config = make_config(data_dir, args.port, args.storage_url, args.bus_url, args.bus_channel)
    async with trio_events.open_server(config) as server:
        if args.join is None:
            room_id, tokens = await set_up(server, args.users)
            await trio.Path(args.tokens_file).write_text(json.dumps(tokens))
        else:
            room_id = args.join
        await bus_connected(server)
        tune_gc()
        emit({"ready": True, "port": server.port, "pid": os.getpid(), "room_id": room_id})
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        pending = b""
        while True:
            while b"\n" not in pending:
                chunk = await stdin.receive_some(4096)
                if not chunk:
                    return  # the orchestrator went away
                pending += chunk
            line, _, pending = pending.partition(b"\n")
            words = line.decode().split()
            if not words:
                continue
            if words[0] == "publish":
                count, size, rate = int(words[1]), int(words[2]), float(words[3])
                emit(await publish(server, room_id, count, size, rate))
            elif words[0] == "stats":
                st = server.services.broker.statistics()
                answer: dict[str, Any] = {
                    "subscribers": st.subscribers,
                    "frames": st.frames_queued,
                    "drops": st.drops,
                }
                bus = server.services.bus
                if bus is not None:
                    answer.update(
                        bus_connected=bus.connected,
                        bus_published=bus.published,
                        bus_received=bus.received,
                        bus_reconnects=bus.reconnects,
                    )
                emit(answer)
            elif words[0] == "quit":
                emit({"quit": True})
                return
            else:
                emit({"error": f"unknown command {words[0]!r}"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--tokens-file", default="", help="required unless --join")
    parser.add_argument("--storage-url", default="", help="PostgreSQL instead of SQLite")
    parser.add_argument("--bus-url", default="", help="a Redis bus (redis://host:port/db)")
    parser.add_argument("--bus-channel", default="", help="the bus's pub/sub channel")
    parser.add_argument(
        "--join",
        type=int,
        default=None,
        metavar="ROOM_ID",
        help="no set-up: the users and ROOM_ID exist in the shared database",
    )
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--profile", default="", help="write cProfile's top entries here")
    arguments = parser.parse_args()
    if arguments.join is None and not arguments.tokens_file:
        parser.error("--tokens-file is required (unless --join)")
    logging.basicConfig(level=arguments.log_level, stream=sys.stderr)
    if arguments.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        try:
            profiler.runcall(trio.run, main, arguments)
        finally:
            with open(arguments.profile, "w") as out:
                stats = pstats.Stats(profiler, stream=out)
                stats.sort_stats("tottime").print_stats(40)
                stats.sort_stats("cumulative").print_stats(60)
    else:
        trio.run(main, arguments)
