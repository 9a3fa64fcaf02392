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
import signal
import sqlite3
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from .helpers import free_port

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
class ServerProcess:
    """``trio_events serve`` as a child process; ``start`` returns once /healthz answers."""

    config_file: Path
    data_dir: Path
    workdir: Path
    port: int = attrs.field(factory=free_port)
    process: trio.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.starts}.log"

    async def start(self) -> None:
        assert self.process is None
        self.starts += 1
        argv = [
            sys.executable,
            "-m",
            "trio_events",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--config",
            str(self.config_file),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_EVENTS")}
        with self.log_path.open("wb") as log:
            self.process = await trio.lowlevel.open_process(
                argv, stdout=log, stderr=log, env=env, cwd=str(self.workdir)
            )
        async with httpx.AsyncClient(base_url=self.url) as client:
            with trio.fail_after(START_TIMEOUT):
                while True:
                    try:
                        response = await client.get("/healthz")
                    except httpx.TransportError:
                        assert self.process.poll() is None, self.log_path.read_text()
                        await trio.sleep(0.05)
                        continue
                    assert response.status_code == 200, response.text
                    return

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, whatever was in flight is cut."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            await self.process.wait()
        self.process = None

    async def stop(self) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.process is not None
        process, self.process = self.process, None
        process.send_signal(signal.SIGTERM)
        try:
            with trio.fail_after(15):
                return await process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                await process.wait()

    async def ensure_dead(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            with trio.CancelScope(shield=True):
                await self.process.wait()
        self.process = None


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
