"""The comparison peer: the asyncio ``websockets`` library and its ``broadcast()``.

    python bench/serve_peer.py [--port 0]

This is what a Python developer would write instead of our server: a
``websockets.asyncio.server.serve`` server that keeps the set of open
connections, and a publisher that encodes each event once as JSON and calls
``websockets.asyncio.server.broadcast(connections, message)``.

Settings: ``compression=None`` (no permessage-deflate, like our stream, so
both servers put the same bytes on the wire; the library's default would
negotiate deflate and compress every message once per connection), the
library's default keepalive (a ping every 20 s) and default limits; any
path is accepted and nothing is authenticated.  The garbage collector gets
the same treatment as our server (``gc.freeze()`` after set-up,
``gc.set_threshold(50_000, 20, 100)``).

Commands on stdin (one JSON line answers each), as for ``serve_ours.py``:
``publish M SIZE RATE``, ``stats``, ``quit``.  A ``Bench`` event goes out as
``{"type": "Bench", "data": {"ts": monotonic_ns, "seq": i, "pad": ...}, "eventId": N}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

from bench_common import EVENT_TYPE, bench_data, emit, pad_for, raise_nofile, tune_gc
from websockets.asyncio.server import ServerConnection, broadcast, serve

connections: set[ServerConnection] = set()
event_id = 0


async def handler(ws: ServerConnection) -> None:
    connections.add(ws)
    try:
        await ws.wait_closed()
    finally:
        connections.discard(ws)


async def publish(count: int, size: int, rate: float) -> dict[str, Any]:
    global event_id
    pad = pad_for(size)
    loop = asyncio.get_running_loop()
    first_id = event_id + 1
    t0 = time.monotonic_ns()
    start = loop.time()
    for seq in range(count):
        if rate > 0:
            delay = start + seq / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        event_id += 1
        message = json.dumps(
            {"type": EVENT_TYPE, "data": bench_data(seq, pad), "eventId": event_id},
            separators=(",", ":"),
        )
        broadcast(connections, message)
        await asyncio.sleep(0)  # let the loop run between events, as a real producer would
    t1 = time.monotonic_ns()
    return {
        "published": count,
        "t0_ns": t0,
        "t1_ns": t1,
        "first_event_id": first_id,
        "last_event_id": event_id,
    }


async def main(port: int) -> None:
    raise_nofile()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    )
    async with serve(handler, "127.0.0.1", port, compression=None, backlog=1024) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        tune_gc()
        emit({"ready": True, "port": bound, "pid": os.getpid()})
        while True:
            line = await reader.readline()
            if not line:
                return
            words = line.decode().split()
            if not words:
                continue
            if words[0] == "publish":
                emit(await publish(int(words[1]), int(words[2]), float(words[3])))
            elif words[0] == "stats":
                emit({"subscribers": len(connections)})
            elif words[0] == "quit":
                emit({"quit": True})
                return
            else:
                emit({"error": f"unknown command {words[0]!r}"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(arguments.port))
