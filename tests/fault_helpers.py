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
import socket
import sqlite3
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"
DB_NAME = "trio_events.sqlite3"
ADMIN_PASSWORD = "admin-password-1"
CREATED = "TextMessagesCreated"
START_TIMEOUT = 15.0  # seconds a starting server gets to answer /healthz
# Read at import: the autouse fixture of conftest.py removes TRIO_EVENTS_* variables.
CRASH_REPORT = os.environ.get("TRIO_EVENTS_CRASH_REPORT", "")
STORM_REPORT = os.environ.get("TRIO_EVENTS_STORM_REPORT", "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
class DbState:
    integrity: str
    message_ids: frozenset[int]
    created_ids: dict[int, list[int]]  # TextMessagesCreated event id -> its message ids
    latest_event_id: int
    visible: list[int]  # event ids after ``after`` that ``user_id`` may receive


def inspect_db(db_path: Path, room_id: int, user_id: int, after: int) -> DbState:
    """Read the database file of a dead server.

    ``visible`` applies the audience rule of the log for a public room: an
    event with an explicit audience reaches exactly those users, a room event
    everyone (every user may access a public room), internal ones nobody.
    """
    conn = sqlite3.connect(db_path)
    try:
        (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
        message_ids = frozenset(int(r[0]) for r in conn.execute("SELECT message_id FROM messages"))
        created: dict[int, list[int]] = {}
        for event_id, payload in conn.execute(
            "SELECT event_id, payload FROM events WHERE event_type = ?", (CREATED,)
        ):
            data: dict[str, Any] = json.loads(payload)
            created[int(event_id)] = [int(m["messageId"]) for m in data["messages"]]
        (latest,) = conn.execute("SELECT COALESCE(MAX(event_id), 0) FROM events").fetchone()
        visible = []
        for event_id, event_type, event_room, audience in conn.execute(
            "SELECT event_id, event_type, room_id, audience_user_ids FROM events"
            " WHERE event_id > ? ORDER BY event_id",
            (after,),
        ):
            if "." in event_type:
                continue
            if audience is not None:
                if user_id in json.loads(audience):
                    visible.append(int(event_id))
            elif event_room == room_id:
                visible.append(int(event_id))
            else:
                raise AssertionError(f"event {event_id} {event_type} is outside the test room")
    finally:
        conn.close()
    return DbState(str(integrity), message_ids, created, int(latest), visible)


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
