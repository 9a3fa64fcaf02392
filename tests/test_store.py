"""The SQLite store: migrations, all-or-nothing writes and crash safety."""

from __future__ import annotations

import sqlite3
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from trio_events.config import StorageConfig
from trio_events.errors import Conflict, NotFound
from trio_events.model import CredentialKind, User, UserStatus
from trio_events.store import Tx, UserUpdate
from trio_events.store.sqlite import apply_migrations, open_sqlite_store

TIMEOUT = 30.0
TABLES = {"users", "credentials", "avatars"}


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db" / "trio_events.sqlite3"


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def add_user(name: str) -> Callable[[Tx], User]:
    def insert(tx: Tx) -> User:
        return tx.insert_user(name, name.title(), "hash", False, 1000)

    return insert


def count_users(tx: Tx) -> int:
    return tx.count_users()


async def test_migrations_from_empty(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with open_sqlite_store(path, StorageConfig()) as store:
            assert await store.read(count_users) == 0
            await store.ping()
    names = {
        str(row[0]) for row in query(path, "SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert names >= TABLES
    assert query(path, "PRAGMA journal_mode") == [("wal",)]


async def test_connections_enforce_foreign_keys(tmp_path: Path) -> None:
    def pragmas(tx: Tx) -> tuple[object, object]:
        conn: sqlite3.Connection = tx._conn  # type: ignore[attr-defined]
        return (
            conn.execute("PRAGMA foreign_keys").fetchone()[0],
            conn.execute("PRAGMA journal_mode").fetchone()[0],
        )

    def orphan_credential(tx: Tx) -> None:
        tx.insert_credential(999, CredentialKind.SESSION, "h", 1, None)

    with trio.fail_after(TIMEOUT):
        async with open_sqlite_store(db_path(tmp_path), StorageConfig()) as store:
            assert await store.read(pragmas) == (1, "wal")
            assert await store.write(pragmas) == (1, "wal")
            with pytest.raises(sqlite3.IntegrityError):
                await store.write(orphan_credential)


async def test_reopen_applies_nothing(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with open_sqlite_store(path, StorageConfig()) as store:
            await store.write(add_user("alice"))
        assert apply_migrations(path) == []
        async with open_sqlite_store(path, StorageConfig()) as store:
            users = await store.read(lambda tx: tx.list_users())
    assert [user.user_name for user in users] == ["alice"]


async def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def half_way(tx: Tx) -> None:
        tx.insert_user("bob", "Bob", "hash", False, 1000)
        assert tx.count_users() == 2  # visible inside the transaction
        raise RuntimeError("boom")

    with trio.fail_after(TIMEOUT):
        async with open_sqlite_store(db_path(tmp_path), StorageConfig()) as store:
            await store.write(add_user("alice"))
            with pytest.raises(RuntimeError, match="boom"):
                await store.write(half_way)
            assert await store.read(count_users) == 1
            assert await store.read(lambda tx: tx.get_user_by_name("bob")) is None
            # The writer connection is usable again afterwards.
            await store.write(add_user("carol"))
            assert await store.read(count_users) == 2
            stats = store.statistics()
    assert stats.failed_writes == 1
    assert stats.writes == 3


async def test_duplicate_name_is_conflict_and_changes_nothing(tmp_path: Path) -> None:
    def carol_then_alice(tx: Tx) -> None:
        tx.insert_user("carol", "Carol", "hash", False, 1000)
        tx.insert_user("ALICE", "Alice again", "hash", False, 1000)

    with trio.fail_after(TIMEOUT):
        async with open_sqlite_store(db_path(tmp_path), StorageConfig()) as store:
            alice = await store.write(add_user("alice"))
            with pytest.raises(Conflict):
                await store.write(carol_then_alice)
            users = await store.read(lambda tx: tx.list_users())
    assert users == [alice]


async def test_update_user(tmp_path: Path) -> None:
    def update(tx: Tx) -> User:
        user = tx.get_user_by_name("alice")
        assert user is not None
        return tx.update_user(user.user_id, UserUpdate(status=UserStatus.SUSPENDED), 2000)

    with trio.fail_after(TIMEOUT):
        async with open_sqlite_store(db_path(tmp_path), StorageConfig()) as store:
            await store.write(add_user("alice"))
            await store.write(update)
            user = await store.read(lambda tx: tx.get_user_by_name("alice"))
            with pytest.raises(NotFound):
                await store.write(lambda tx: tx.update_user(42, UserUpdate(), 1))
    assert user is not None
    assert user.status is UserStatus.SUSPENDED
    assert user.last_modified_utc == 2000
    assert user.created_utc == 1000


async def test_one_token_per_user(tmp_path: Path) -> None:
    def tokens(tx: Tx) -> None:
        user = tx.insert_user("alice", "Alice", "hash", False, 1)
        tx.insert_credential(user.user_id, CredentialKind.TOKEN, "t1", 1, None)
        tx.insert_credential(user.user_id, CredentialKind.TOKEN, "t2", 1, None)

    with trio.fail_after(TIMEOUT):
        async with open_sqlite_store(db_path(tmp_path), StorageConfig()) as store:
            with pytest.raises(sqlite3.IntegrityError):
                await store.write(tokens)
            assert await store.read(count_users) == 0


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


async def test_crash_mid_transaction_leaves_nothing(tmp_path: Path) -> None:
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
