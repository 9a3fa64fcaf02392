"""Helpers for the fault-tolerance tests: the server as a killable process, the
database file read directly, and a report of the figures.

:class:`ServerProcess` runs ``python -m trio_events serve`` on a free port
with a config file written from the repository's ``config.toml``; it can be
SIGKILLed and restarted on the same data directory.  :func:`inspect_db` opens
the SQLite file with the standard ``sqlite3`` module after the process is
dead, so what it sees is exactly what survived the crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sqlite3
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import attrs
import trio

from .helpers import ChildProcess, healthy, serve_argv, stop_process

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"
DB_NAME = "trio_events.sqlite3"
ADMIN_PASSWORD = "admin-password-1"
CREATED = "TextMessagesCreated"
START_TIMEOUT = 15.0  # seconds a starting server gets to answer /healthz
# Read at import: the autouse fixture of conftest.py removes TRIO_EVENTS_* variables.
CRASH_REPORT = os.environ.get("TRIO_EVENTS_CRASH_REPORT", "")
STORM_REPORT = os.environ.get("TRIO_EVENTS_STORM_REPORT", "")
CRASH_SEED = os.environ.get("TRIO_EVENTS_CRASH_SEED", "")


def write_config(path: Path, replacements: Mapping[str, str]) -> Path:
    """The repository's config.toml with each ``old`` line fragment replaced by ``new``."""
    text = REPO_CONFIG.read_text()
    for old, new in replacements.items():
        assert old in text, f"{old!r} is not in config.toml"
        text = text.replace(old, new, 1)
    path.write_text(text)
    return path


@attrs.define
class ServerProcess(ChildProcess):
    """``trio_events serve`` as a child process; ``start`` returns once /healthz answers."""

    LOG_NAME: ClassVar[str] = "server"

    config_file: Path = attrs.field(kw_only=True)
    data_dir: Path = attrs.field(kw_only=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        argv = serve_argv(self.port, self.data_dir, self.config_file)
        await self.launch(argv, partial(healthy, self.port), trio.current_time() + START_TIMEOUT)

    async def stop(self) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.process is not None
        process, self.process = self.process, None
        return await stop_process(process)


@attrs.frozen
class LogEvent:
    event_id: int
    event_type: str
    room_id: int | None
    audience: list[int] | None
    payload: dict[str, Any]


@attrs.frozen
class DbState:
    """What a dead server left in its database: the log and the tables its
    events describe."""

    integrity: str
    events: list[LogEvent]  # the whole log, in order
    users: frozenset[int]
    rooms: dict[int, int]  # room id -> message_count
    messages: dict[int, tuple[int, int]]  # message id -> (room id, author)
    reads: dict[tuple[int, int], int]  # (room id, user id) -> read_count
    visible: list[int]  # event ids after ``after`` that ``user_id`` may receive

    @property
    def message_ids(self) -> frozenset[int]:
        return frozenset(self.messages)

    @property
    def created_ids(self) -> dict[int, list[int]]:
        """TextMessagesCreated event id -> its message ids."""
        return {
            e.event_id: [int(m["messageId"]) for m in e.payload["messages"]]
            for e in self.events
            if e.event_type == CREATED
        }

    @property
    def latest_event_id(self) -> int:
        return self.events[-1].event_id if self.events else 0


def inspect_db(db_path: Path, room_id: int, user_id: int, after: int) -> DbState:
    """Read the database file of a dead server.

    ``visible`` applies the audience rule of the log for a public room: an
    event with an explicit audience reaches exactly those users, a room event
    everyone (every user may access a public room), internal ones nobody.
    """
    conn = sqlite3.connect(db_path)
    try:
        (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
        events = [
            LogEvent(
                int(event_id),
                str(event_type),
                None if event_room is None else int(event_room),
                None if audience is None else [int(u) for u in json.loads(audience)],
                json.loads(payload),
            )
            for event_id, event_type, event_room, audience, payload in conn.execute(
                "SELECT event_id, event_type, room_id, audience_user_ids, payload"
                " FROM events ORDER BY event_id"
            )
        ]
        users = frozenset(int(r[0]) for r in conn.execute("SELECT user_id FROM users"))
        rooms = {
            int(r): int(n) for r, n in conn.execute("SELECT room_id, message_count FROM rooms")
        }
        messages = {
            int(m): (int(r), int(u))
            for m, r, u in conn.execute("SELECT message_id, room_id, user_id FROM messages")
        }
        reads = {
            (int(r), int(u)): int(n)
            for r, u, n in conn.execute("SELECT room_id, user_id, read_count FROM room_reads")
        }
    finally:
        conn.close()
    visible = []
    for event in events:
        if event.event_id <= after or "." in event.event_type:
            continue
        if event.audience is not None:
            if user_id in event.audience:
                visible.append(event.event_id)
        elif event.room_id == room_id:
            visible.append(event.event_id)
        else:
            raise AssertionError(f"event {event.event_id} {event.event_type} is outside the room")
    return DbState(str(integrity), events, users, rooms, messages, reads, visible)


def report(name: str, figures: object, path: str = CRASH_REPORT) -> None:
    """Print ``figures`` (seen with ``pytest -s``) and, when ``path`` names a
    file (by default ``TRIO_EVENTS_CRASH_REPORT``), store them there under
    ``name`` in one JSON object."""
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")
    if not path:
        return
    target = Path(path)
    document: dict[str, object] = {}
    if target.exists():
        try:
            loaded = json.loads(target.read_text())
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            document = loaded
    document[name] = figures
    target.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def resident_kib() -> int | None:
    """This process's resident set size in KiB (VmRSS), None where /proc has none.

    Memory the C allocator holds free is handed back first (glibc's
    ``malloc_trim``), so that the figure shows what is in use, not what
    earlier peaks left behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None
