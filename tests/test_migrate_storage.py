"""``trio-events migrate-storage``: a SQLite deployment moved to PostgreSQL
keeps every row (events included), verifies its counts, keeps event ids, and
refuses a target that is not empty without touching it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from trio_events import migrate_storage as migrate_module
from trio_events.config import Config, ConfigError
from trio_events.migrate_storage import TABLES, migrate_storage

from .attachment_helpers import png_image, upload_ok
from .helpers import TEST_TIMEOUT, make_config, serving
from .pg_helpers import fresh_database, pg_config
from .rest_helpers import (
    admin_actor,
    comment,
    create_room,
    mark_read,
    post,
    rooms_by_id,
    user_actors,
)
from .stream_helpers import bearer_stream

pytestmark = pytest.mark.slow

PNG = png_image(3, 2)


async def populate(config: Config) -> dict[str, Any]:
    """A small deployment with a row in every table; returns what to check."""
    async with serving(config) as (server, client):
        admin = await admin_actor(client)
        alice, bob = await user_actors(client, server, "alice", "bob")
        public = await create_room(client, admin, "lobby", "Public")
        private = await create_room(client, admin, "team", "Private", members=[alice, bob])
        first = await post(client, alice, private, "hello")
        await comment(client, bob, first, "hi alice")
        await mark_read(client, bob, first)
        await post(client, admin, public, "welcome")
        await upload_ok(client, alice, first, [("notes.txt", b"some bytes")])
        response = await client.put(
            f"/api/v1/rooms/{private}/avatar.jpg", content=PNG, headers=admin.headers
        )
        assert response.status_code == 200, response.text
        pinned = await client.put(f"/api/v1/rooms/{public}/pin", headers=bob.headers)
        assert pinned.status_code == 200, pinned.text
        token = (await client.post("/api/v1/token", headers=bob.headers)).json()["token"]
        last = await server.services.store.read(lambda tx: tx.latest_event_id())
        rooms = await rooms_by_id(client, bob)
        return {"token": token, "last": last, "rooms": rooms, "bob": bob}


def sqlite_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
        return sorted(rows, key=repr)
    finally:
        conn.close()


def pg_rows(url: str, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
    return sorted(rows, key=repr)


def columns_of(path: Path, table: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    finally:
        conn.close()


async def test_everything_is_copied_verified_and_served(tmp_path: Path) -> None:
    sqlite_config = make_config(tmp_path)
    with trio.fail_after(TEST_TIMEOUT * 2):
        state = await populate(sqlite_config)
    path = sqlite_config.sqlite_path
    with fresh_database(migrated=False) as url:
        counts = await trio.to_thread.run_sync(migrate_storage, path, url)
        assert [c.table for c in counts] == [table for table, _ in TABLES]
        assert all(c.rows > 0 for c in counts), counts  # the fixture fills every table
        for table, _ in TABLES:
            columns = columns_of(path, table)
            assert pg_rows(url, table, columns) == sqlite_rows(path, table), table

        # The same deployment on PostgreSQL: same token, same rooms for the
        # same user, resume from the last id, and new ids continue after it.
        config = pg_config(sqlite_config, url)
        with trio.fail_after(TEST_TIMEOUT * 2):
            async with serving(config) as (server, client):
                bob = state["bob"]
                assert await rooms_by_id(client, bob) == state["rooms"]
                events = server.url.replace("http", "ws", 1) + "/api/v1/events"
                async with bearer_stream(events, state["token"], state["last"]) as (ws, hello):
                    assert hello["resumed"] is True
                    assert hello["replayed"] == 0
                    admin = await admin_actor(client)
                    room = await create_room(client, admin, "after the move", "Public")
                    frame = await ws.get_message()
                    assert f'"roomId":{room}' in frame
                    assert json.loads(frame)["eventId"] > state["last"]
                last = state["last"]
                after = await server.services.store.read(lambda tx: tx.events_after(last, 10))
                assert after[0].event_id == last + 1  # the sequence continued, no reuse


async def test_a_target_that_is_not_empty_is_refused_and_left_alone(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with trio.fail_after(TEST_TIMEOUT):
        await populate(config)
    with fresh_database() as url:
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO users (user_name, display_name, password_hash, created_utc,"
                " last_modified_utc) VALUES ('someone', 'Someone', 'x', 1, 1)"
            )
        with pytest.raises(ConfigError, match="not empty"):
            await trio.to_thread.run_sync(migrate_storage, config.sqlite_path, url)
        assert pg_rows(url, "users", ["user_name"]) == [("someone",)]
        assert pg_rows(url, "events", ["event_id"]) == []


async def test_a_failed_copy_leaves_the_target_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path)
    with trio.fail_after(TEST_TIMEOUT):
        await populate(config)
    # Messages before rooms: the foreign key fails half-way through the copy.
    order = [t for t in TABLES if t[0] != "rooms"]
    order.insert(order.index(("messages", "message_id")) + 1, ("rooms", "room_id"))
    monkeypatch.setattr(migrate_module, "TABLES", tuple(order))
    with fresh_database() as url:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            await trio.to_thread.run_sync(migrate_storage, config.sqlite_path, url)
        for table, _ in TABLES:
            # log_meta keeps what the migrations wrote: trimmed_through and deployment_id
            expected = [(1,), (1,)] if table == "log_meta" else []
            assert pg_rows(url, table, ["1"]) == expected, table
        # The source was released: it can be written again.
        conn = sqlite3.connect(config.sqlite_path, timeout=0.1)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()


def test_cli_prints_the_verification_and_refuses_bad_urls(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    trio.run(populate, config)
    cli = [sys.executable, "-m", "trio_events", "migrate-storage", "--data-dir", str(tmp_path)]
    env = {"PATH": "/usr/bin:/bin", "TRIO_EVENTS_BOOTSTRAP__ADMIN_PASSWORD": "x" * 12}
    bad = subprocess.run(
        [*cli, "--to", "mysql://x/y"], capture_output=True, text=True, timeout=60, env=env
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("trio-events: error: storage.url: expected postgresql://")
    with fresh_database(migrated=False) as url:
        done = subprocess.run(
            [*cli, "--to", url], capture_output=True, text=True, timeout=60, env=env
        )
        assert done.returncode == 0, done.stderr
        assert "verified: row counts and largest ids match" in done.stdout
        assert "events " in done.stdout
        again = subprocess.run(
            [*cli, "--to", url], capture_output=True, text=True, timeout=60, env=env
        )
        assert again.returncode == 2
        assert "is not empty" in again.stderr
