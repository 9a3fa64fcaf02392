"""Run trio_events inside your own Trio program and publish your own events.

    python examples/embed.py [DATA_DIR] [PORT]

The server runs in this program's nursery, next to a task of ours that
publishes a ``BuildFinished`` event to the "Builds" room every few seconds
(the room is created on the first run).  Watch it with

    trio-events tail --url http://127.0.0.1:7778 --user admin --password admin-password-1

Ctrl-C (or SIGTERM) cancels the nursery, and cancelling ``open_server`` shuts
the server down in order: every stream gets what was queued for it and a 1001
close, hypercorn stops, then the database is closed.  The program then exits
with status 0.

``tests/test_embed.py`` runs this file as written.
"""

from __future__ import annotations

import signal
import sys

import trio

import trio_events
from trio_events.errors import NotFound


async def main(config: trio_events.Config) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_signal, nursery.cancel_scope)  # Ctrl-C, SIGTERM
        async with trio_events.open_server(config) as server:  # listening from here
            print(f"serving on {server.url}", file=sys.stderr, flush=True)
            room_id = await builds_room(server)
            await publish_builds(server, room_id)  # until cancelled


async def cancel_on_signal(scope: trio.CancelScope) -> None:
    """Turn the first SIGINT or SIGTERM into a cancellation of ``scope``."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def builds_room(server: trio_events.RunningServer) -> int:
    """The public room we publish to, created if this data dir has none yet."""
    rooms = server.services.rooms
    try:
        return (await rooms.find("Builds")).room_id
    except NotFound:
        created = await rooms.create(None, {"displayName": "Builds", "roomType": "Public"})
        room_id: int = created["roomId"]
        return room_id


async def publish_builds(server: trio_events.RunningServer, room_id: int) -> None:
    """Our own application task: announce a (pretend) build every 5 seconds."""
    number = 0
    while True:
        number += 1
        event_id = await server.publish(
            "BuildFinished", {"build": number, "status": "passed"}, room_id=room_id
        )
        print(f"published build {number} as event {event_id}", file=sys.stderr, flush=True)
        await trio.sleep(5)


def config_for(data_dir: str, port: int) -> trio_events.Config:
    return trio_events.load_config(
        None,
        overrides={
            "server": {"port": port, "data_dir": data_dir},
            "bootstrap": {"admin_password": "admin-password-1"},
        },
    )


if __name__ == "__main__":
    data_dir = sys.argv[1] if len(sys.argv) > 1 else "embed-data"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 7778
    trio.run(main, config_for(data_dir, port))
