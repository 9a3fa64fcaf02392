"""The store on both backends: migrations, all-or-nothing writes, callbacks and
listeners; and, for SQLite only, its connection settings and crash safety.

Backend-neutral tests take ``backend_config`` (tests/pg_helpers.py) and run
once on SQLite and once on a fresh PostgreSQL database.
"""

from __future__ import annotations

import sqlite3
import sys
import textwrap
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Literal

import psycopg
import pytest
import trio

from trio_events.config import Config, StorageConfig
from trio_events.errors import Conflict, NotFound
from trio_events.model import CredentialKind, StoredEvent, User, UserStatus
from trio_events.store import Tx, UserUpdate, open_store
from trio_events.store.postgres import apply_pg_migrations
from trio_events.store.sqlite import apply_migrations, open_sqlite_store

from .pg_helpers import backend_config_fixture, empty_backend_config_fixture  # noqa: F401

TIMEOUT = 30.0
TABLES = {
    "users",
    "credentials",
    "avatars",
    "rooms",
    "room_members",
    "room_pins",
    "room_reads",
    "messages",
    "message_reads",
    "events",
    "log_meta",
    "attachments",
}


def migration_ids(backend: str) -> list[str]:
    folder = resources.files("trio_events.store") / "migrations" / backend
    return sorted(p.name.removesuffix(".sql") for p in folder.iterdir() if p.name.endswith(".sql"))


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db" / "trio_events.sqlite3"


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def schema(config: Config) -> tuple[set[str], list[str]]:
    """The tables of the configured database and the migrations yoyo recorded in it."""
    if config.storage.backend == "postgresql":
        with psycopg.connect(config.storage.url, connect_timeout=3) as conn:
            tables = {
                str(row[0])
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            }
            applied = conn.execute("SELECT migration_id FROM _yoyo_migration").fetchall()
    else:
        path = config.sqlite_path
        tables = {
            str(row[0]) for row in query(path, "SELECT name FROM sqlite_master WHERE type='table'")
        }
        applied = query(path, "SELECT migration_id FROM _yoyo_migration")
    return tables, sorted(str(row[0]) for row in applied)


def migrate(config: Config) -> list[str]:
    """Apply pending migrations to the configured database, as opening a store does."""
    if config.storage.backend == "postgresql":
        return apply_pg_migrations(config.storage.url)
    return apply_migrations(config.sqlite_path)


def integrity_error(config: Config) -> type[Exception]:
    """What a violated constraint raises out of ``Store.write`` on this backend."""
    if config.storage.backend == "postgresql":
        return psycopg.IntegrityError
    return sqlite3.IntegrityError


def add_user(name: str) -> Callable[[Tx], User]:
    def insert(tx: Tx) -> User:
        return tx.insert_user(name, name.title(), "hash", False, 1000)

    return insert


def count_users(tx: Tx) -> int:
    return tx.count_users()


def list_users(tx: Tx) -> list[User]:
    return tx.list_users()


async def test_migrations_from_empty(empty_backend_config: Config) -> None:
    config = empty_backend_config
    if config.storage.backend == "postgresql":
        with psycopg.connect(config.storage.url, connect_timeout=3) as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchone() or (None,)
        assert count == 0  # truly empty: not even yoyo's tables
    else:
        assert not config.sqlite_path.exists()
    with trio.fail_after(TIMEOUT):
        async with open_store(config) as store:
            assert await store.read(count_users) == 0
            assert await store.read(lambda tx: (tx.latest_event_id(), tx.trimmed_through())) == (
                0,
                0,
            )
            await store.ping()
    tables, applied = schema(config)
    assert tables >= TABLES
    assert applied == migration_ids(config.storage.backend)
    assert len(applied) >= 4


def test_both_backends_have_the_same_migrations() -> None:
    assert migration_ids("postgresql") == migration_ids("sqlite")


async def test_sqlite_file_is_wal(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with open_sqlite_store(path, StorageConfig()) as store:
            await store.ping()
    assert query(path, "PRAGMA journal_mode") == [("wal",)]


async def test_sqlite_connection_pragmas(tmp_path: Path) -> None:
    def pragmas(tx: Tx) -> tuple[object, object]:
        conn: sqlite3.Connection = tx._conn.conn  # type: ignore[attr-defined]
        return (
            conn.execute("PRAGMA foreign_keys").fetchone()[0],
            conn.execute("PRAGMA journal_mode").fetchone()[0],
        )

    with trio.fail_after(TIMEOUT):
        async with open_sqlite_store(db_path(tmp_path), StorageConfig()) as store:
            assert await store.read(pragmas) == (1, "wal")
            assert await store.write(pragmas) == (1, "wal")


@pytest.mark.parametrize(("durability", "synchronous"), [("normal", 1), ("full", 2)])
async def test_sqlite_durability_sets_synchronous_on_every_connection(
    tmp_path: Path, durability: Literal["normal", "full"], synchronous: int
) -> None:
    """``storage.durability`` (README, Durability setting): NORMAL (1) or FULL (2),
    on the writer and on each reader, whichever one a transaction gets."""
    config = StorageConfig(durability=durability, read_connections=3)

    def mode(tx: Tx) -> object:
        conn: sqlite3.Connection = tx._conn.conn  # type: ignore[attr-defined]
        return conn.execute("PRAGMA synchronous").fetchone()[0]

    with trio.fail_after(TIMEOUT):
        async with open_sqlite_store(db_path(tmp_path), config) as store:
            assert await store.write(mode) == synchronous
            assert await store.read(mode) == synchronous
            assert len(store._all) == 1 + config.read_connections
            modes = [c.execute("PRAGMA synchronous").fetchone()[0] for c in store._all]
            assert modes == [synchronous] * len(store._all)


async def test_foreign_keys_are_enforced(backend_config: Config) -> None:
    def orphan_credential(tx: Tx) -> None:
        tx.insert_credential(999, CredentialKind.SESSION, "h", 1, None)

    with trio.fail_after(TIMEOUT):
        async with open_store(backend_config) as store:
            with pytest.raises(integrity_error(backend_config), match=r"(?i)foreign key"):
                await store.write(orphan_credential)
            # the connection is usable afterwards
            await store.write(add_user("alice"))
            assert await store.read(count_users) == 1


async def test_reopen_applies_nothing(backend_config: Config) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_store(backend_config) as store:
            await store.write(add_user("alice"))
        assert migrate(backend_config) == []
        async with open_store(backend_config) as store:
            users = await store.read(list_users)
    assert [user.user_name for user in users] == ["alice"]


async def test_failed_write_leaves_nothing(backend_config: Config) -> None:
    def half_way(tx: Tx) -> None:
        tx.insert_user("bob", "Bob", "hash", False, 1000)
        tx.append_event("Test", "{}", None, None, 1)
        assert tx.count_users() == 2  # visible inside the transaction
        raise RuntimeError("boom")

    with trio.fail_after(TIMEOUT):
        async with open_store(backend_config) as store:
            await store.write(add_user("alice"))
            with pytest.raises(RuntimeError, match="boom"):
                await store.write(half_way)
            assert await store.read(count_users) == 1
            assert await store.read(lambda tx: tx.get_user_by_name("bob")) is None
            assert await store.read(lambda tx: tx.latest_event_id()) == 0
            # The writer connection is usable again afterwards.
            await store.write(add_user("carol"))
            assert await store.read(count_users) == 2
            stats = store.statistics()
    assert stats.failed_writes == 1
    assert stats.writes == 3
    assert stats.reads == 4


async def test_duplicate_name_is_conflict_and_changes_nothing(backend_config: Config) -> None:
    def carol_then_alice(tx: Tx) -> None:
        tx.insert_user("carol", "Carol", "hash", False, 1000)
        tx.insert_user("ALICE", "Alice again", "hash", False, 1000)

    with trio.fail_after(TIMEOUT):
        async with open_store(backend_config) as store:
            alice = await store.write(add_user("alice"))
            with pytest.raises(Conflict):
                await store.write(carol_then_alice)
            users = await store.read(list_users)
            found = await store.read(lambda tx: tx.get_user_by_name("aLiCe"))
    assert users == [alice]
    assert found == alice


async def test_update_user(backend_config: Config) -> None:
    def update(tx: Tx) -> User:
        user = tx.get_user_by_name("alice")
        assert user is not None
        return tx.update_user(user.user_id, UserUpdate(status=UserStatus.SUSPENDED), 2000)

    with trio.fail_after(TIMEOUT):
        async with open_store(backend_config) as store:
            await store.write(add_user("alice"))
            returned = await store.write(update)
            user = await store.read(lambda tx: tx.get_user_by_name("alice"))
            with pytest.raises(NotFound):
                await store.write(lambda tx: tx.update_user(42, UserUpdate(), 1))
    assert user == returned
    assert user is not None
    assert user.status is UserStatus.SUSPENDED
    assert user.last_modified_utc == 2000
    assert user.created_utc == 1000


async def test_one_token_per_user(backend_config: Config) -> None:
    def tokens(tx: Tx) -> None:
        user = tx.insert_user("alice", "Alice", "hash", False, 1)
        tx.insert_credential(user.user_id, CredentialKind.TOKEN, "t1", 1, None)
        tx.insert_credential(user.user_id, CredentialKind.TOKEN, "t2", 1, None)

    with trio.fail_after(TIMEOUT):
        async with open_store(backend_config) as store:
            with pytest.raises(integrity_error(backend_config)):
                await store.write(tokens)
            assert await store.read(count_users) == 0


async def test_after_commit_and_after_rollback(backend_config: Config) -> None:
    """after_commit callbacks run once the change is visible to other readers,
    after_rollback ones once it is gone; each only in its own case, in order."""
    calls: list[tuple[str, int]] = []

    with trio.fail_after(TIMEOUT):
        async with open_store(backend_config) as store:

            def seen_by_reader(label: str) -> Callable[[], None]:
                def callback() -> None:  # in the writer's worker thread
                    calls.append((label, trio.from_thread.run(store.read, count_users)))

                return callback

            def commits(tx: Tx) -> None:
                tx.after_commit(seen_by_reader("commit 1"))
                tx.after_rollback(seen_by_reader("rollback 1"))
                tx.insert_user("alice", "Alice", "hash", False, 1)
                tx.after_commit(seen_by_reader("commit 2"))
                assert calls == []

            def rolls_back(tx: Tx) -> None:
                tx.after_commit(seen_by_reader("commit 3"))
                tx.after_rollback(seen_by_reader("rollback 2"))
                tx.insert_user("bob", "Bob", "hash", False, 1)
                # The attachment service queries through tx in its rollback callback.
                tx.after_rollback(lambda: calls.append(("rollback 3", tx.count_users())))
                raise ValueError("no")

            await store.write(commits)
            assert calls == [("commit 1", 1), ("commit 2", 1)]
            with pytest.raises(ValueError, match="no"):
                await store.write(rolls_back)
            assert calls[2:] == [("rollback 2", 1), ("rollback 3", 1)]


async def test_commit_listeners(backend_config: Config) -> None:
    batches: list[list[StoredEvent]] = []

    def listener(events: list[StoredEvent]) -> None:
        batches.append(events)

    def append(*types: str) -> Callable[[Tx], list[int]]:
        def write(tx: Tx) -> list[int]:
            return [
                tx.append_event(t, f'{{"t": "{t}"}}', 7, [3, 1], 100 + i)
                for i, t in enumerate(types)
            ]

        return write

    def append_then_fail(tx: Tx) -> None:
        append("Lost")(tx)
        raise RuntimeError("rolled back")

    with trio.fail_after(TIMEOUT):
        async with open_store(backend_config) as store:
            store.add_commit_listener(listener)
            first = await store.write(append("A", "B"))
            await store.write(add_user("alice"))  # no events: no call
            with pytest.raises(RuntimeError):
                await store.write(append_then_fail)
            second = await store.write(append("C"))
            store.remove_commit_listener(listener)
            await store.write(append("D"))
            log = await store.read(lambda tx: tx.events_after(0, 100))
    assert [[e.event_id for e in batch] for batch in batches] == [first, second]
    assert batches == [log[:2], log[2:3]]
    assert batches[0][1] == StoredEvent(
        event_id=first[1],
        event_type="B",
        room_id=7,
        audience=(1, 3),
        payload='{"t": "B"}',
        created_utc=101,
    )
    assert [e.event_type for e in log] == ["A", "B", "C", "D"]


CRASH = textwrap.dedent(
    """
    import os, sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    for i in range(200):
        conn.execute(
            "INSERT INTO users (user_name, display_name, password_hash, is_admin,"
            " created_utc, last_modified_utc) VALUES (?, ?, 'h', 0, 1, 1)",
            (f"ghost{i}", "x" * 2000),
        )
    sys.stdout.write("inserted\\n")
    sys.stdout.flush()
    os._exit(1)
    """
)


async def test_sqlite_crash_mid_transaction_leaves_nothing(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with open_sqlite_store(path, StorageConfig()) as store:
            await store.write(add_user("alice"))
        result = await trio.run_process(
            [sys.executable, "-c", CRASH, str(path)], check=False, capture_stdout=True
        )
        assert result.returncode == 1
        assert result.stdout == b"inserted\n"
        assert query(path, "PRAGMA integrity_check") == [("ok",)]
        assert query(path, "SELECT user_name FROM users") == [("alice",)]
        async with open_sqlite_store(path, StorageConfig()) as store:
            assert await store.read(count_users) == 1
            await store.write(add_user("bob"))
            assert await store.read(count_users) == 2
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


async def test_only_ascii_letters_fold_on_every_backend(backend_config: Config) -> None:
    """SQLite's NOCASE folds A-Z only; PostgreSQL must agree (not its locale's
    lower()), so that a name means the same user on both backends."""
    with trio.fail_after(TIMEOUT):
        async with open_store(backend_config) as store:
            upper = await store.write(add_user("Ärger"))
            lower = await store.write(add_user("ärger"))  # a different user
            assert upper.user_id != lower.user_id
            assert await store.read(lambda tx: tx.get_user_by_name("äRGER")) == lower
            assert await store.read(lambda tx: tx.get_user_by_name("ÄRGER")) == upper
            with pytest.raises(Conflict):
                await store.write(add_user("ÄrGeR"))
