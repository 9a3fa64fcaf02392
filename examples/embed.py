"""Run trio_events inside your own Trio program and publish your own events.

    python examples/embed.py [DATA_DIR]

The server runs in this program's nursery, next to a task of ours that
publishes a ``BuildFinished`` event to a room every few seconds. Watch it with

    trio-events tail --url http://127.0.0.1:7778 --user admin --password admin-password-1

Ctrl-C stops both: cancelling the nursery closes the streams (1001), stops
hypercorn and closes the database, in that order.
"""

from __future__ import annotations

import contextlib
import sys

import trio

import trio_events
from trio_events.model import SYSTEM_USER


async def publish_builds(server: trio_events.RunningServer, room_id: int) -> None:
    """Our own application task: announce a (pretend) build every 5 seconds."""
    number = 0
    while True:
        number += 1
        event_id = await server.publish(
            "BuildFinished", {"build": number, "status": "passed"}, room_id=room_id
        )
        print(f"published build {number} as event {event_id}", file=sys.stderr)
        await trio.sleep(5)


async def main(data_dir: str) -> None:
    config = trio_events.load_config(
        None,
        overrides={
            "server": {"port": 7778, "data_dir": data_dir},
            "bootstrap": {"admin_password": "admin-password-1"},
        },
    )
    async with trio_events.open_server(config) as server:
        print(f"serving on {server.url}", file=sys.stderr)
        rooms = await server.services.rooms.list_rooms(SYSTEM_USER)
        if rooms:
            room_id = rooms[0]["roomId"]
        else:
            created = await server.services.rooms.create(
                None, {"displayName": "Builds", "roomType": "Public"}
            )
            room_id = created["roomId"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_builds, server, room_id)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "embed-data")
