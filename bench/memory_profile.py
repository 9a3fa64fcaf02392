"""Where an idle stream's memory goes: tracemalloc over N idle streams.

    .venv/bin/python bench/memory_profile.py [--streams 500] [--group lineno|filename]

Starts our server in-process (SQLite, defaults), opens N idle event streams
from a separate client process (raw sockets: one upgrade request each, read
until the Hello), and prints the Python heap each stream adds, by allocation
site.  This is the profile behind the "memory per idle stream" figure of
``bench/run.py`` (which measures RSS), see bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import textwrap
import tracemalloc
from pathlib import Path

import trio

import trio_events
from trio_events.config import load_config

CLIENT = textwrap.dedent(
    """
    import base64, os, socket, sys, time
    port, token, count, ready = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((
            "GET /api/v1/events HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: websocket\\r\\n"
            "Connection: Upgrade\\r\\nSec-WebSocket-Key: " + key + "\\r\\n"
            "Sec-WebSocket-Version: 13\\r\\nAuthorization: Bearer " + token + "\\r\\n\\r\\n"
        ).encode())
        data = b""
        while b"Hello" not in data:
            data += s.recv(65536)
        sockets.append(s)
    open(ready, "w").write("ok")
    time.sleep(600)
    """
)


async def main(streams: int, group: str, top: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="trio-events-memory-"))
    config = load_config(
        None,
        environ={},
        overrides={
            "server": {"port": 0, "data_dir": str(data_dir), "log_level": "warning"},
            "events": {"max_streams_per_user": 1_000_000, "heartbeat_interval": 600.0},
            "bootstrap": {"admin_password": "memory-profile-1"},
        },
    )
    async with trio_events.open_server(config) as server:
        svc = server.services
        user = await svc.users.create_user(None, "probe", "probe-password-1")
        token = await svc.auth.issue_token(user.user_id)
        ready = data_dir / "ready"
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        client = await trio.lowlevel.open_process(
            [sys.executable, "-c", CLIENT, str(server.port), token, str(streams), str(ready)]
        )
        try:
            with trio.fail_after(120):
                while not ready.exists():  # noqa: ASYNC110 - another process writes it
                    await trio.sleep(0.1)
            await trio.sleep(1.0)  # let every stream settle into idleness
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            client.kill()
            with trio.CancelScope(shield=True):
                await client.wait()
        stats = after.compare_to(before, group)
        total = sum(stat.size_diff for stat in stats)
        print(
            f"{total / streams / 1024:.2f} KiB of Python heap per idle stream ({streams} streams)"
        )
        for stat in stats[:top]:
            frame = stat.traceback[0]
            where = frame.filename.split("site-packages/")[-1].split("/trio_events/")[-1]
            line = f":{frame.lineno}" if group == "lineno" else ""
            size, blocks = stat.size_diff / streams, stat.count_diff / streams
            print(f"{size:8.0f} B {blocks:6.1f} blocks  {where}{line}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--group", choices=["lineno", "filename"], default="filename")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    trio.run(main, args.streams, args.group, args.top)
