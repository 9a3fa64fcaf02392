"""``trio-events migrate-storage``: copy a SQLite deployment into PostgreSQL.

Everything is copied, the event log included, so clients resume across the
move with the same event ids.  The copy runs in one PostgreSQL transaction
that holds the cluster write lock (nothing else can write meanwhile, and a
failure leaves the target as it was), while the SQLite file is held with
``BEGIN IMMEDIATE`` (a server still running on it can read but not write, so
the copy is the final state).  Afterwards each table's row count and largest
id are compared between the two databases; any difference is an error.

Ids are kept, and each PostgreSQL identity sequence continues after the
largest id SQLite ever handed out (``sqlite_sequence``), so an id is never
reused, and event ids stay in commit order.

Attachment bytes are files under ``<data_dir>/files``, not rows: the command
does not move them; workers that share the data directory (or a copy of it)
serve them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from .config import ConfigError
from .store.postgres import WRITE_LOCK, apply_pg_migrations, check_url
from .store.sqlite import apply_migrations

__all__ = ["TABLES", "TableCount", "migrate_storage"]

# In the order foreign keys allow; the id column (None: no single id).
TABLES: tuple[tuple[str, str | None], ...] = (
    ("users", "user_id"),
    ("credentials", "credential_id"),
    ("avatars", None),
    ("rooms", "room_id"),
    ("room_members", None),
    ("room_pins", None),
    ("room_reads", None),
    ("messages", "message_id"),
    ("message_reads", None),
    ("attachments", "attachment_id"),
    ("events", "event_id"),
    ("log_meta", None),
)
BATCH = 5000


@attrs.frozen
class TableCount:
    table: str
    rows: int
    max_id: int | None


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def _counts(execute: Callable[[str], Any]) -> list[TableCount]:
    """Rows and largest id of every table; ``execute`` is either database's."""
    counts = []
    for table, id_column in TABLES:
        (rows,) = execute(f"SELECT count(*) FROM {table}").fetchone()
        max_id = None
        if id_column is not None:
            (max_id,) = execute(f"SELECT coalesce(max({id_column}), 0) FROM {table}").fetchone()
        counts.append(TableCount(table, int(rows), None if max_id is None else int(max_id)))
    return counts


def migrate_storage(
    sqlite_path: Path, url: str, progress: Callable[[str], None] = lambda _: None
) -> list[TableCount]:
    """Copy the SQLite database at ``sqlite_path`` into the empty PostgreSQL
    database at ``url``; return the verified per-table counts."""
    import psycopg

    check_url(url)
    if not sqlite_path.is_file():
        raise ConfigError(f"storage.path: no SQLite database at {sqlite_path}")
    applied = apply_migrations(sqlite_path)  # the source at the newest schema too
    if applied:
        progress(f"brought {sqlite_path} to the newest schema: {', '.join(applied)}")
    try:
        apply_pg_migrations(url)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"storage.url: cannot connect to PostgreSQL: {first}") from None

    source = sqlite3.connect(sqlite_path, isolation_level=None)
    try:
        source.execute("BEGIN IMMEDIATE")  # no writer on the source until we are done
        expected = _counts(source.execute)
        sequences = dict(source.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        with psycopg.connect(url) as target, target.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            (users,) = cur.execute("SELECT count(*) FROM users").fetchone() or (0,)
            (events,) = cur.execute("SELECT count(*) FROM events").fetchone() or (0,)
            if users or events:
                raise ConfigError(
                    "migrate-storage: the PostgreSQL database is not empty"
                    f" ({users} users, {events} events); give it an empty database"
                )
            for table, id_column in TABLES:
                columns = _columns(source, table)
                names = ", ".join(columns)
                if table == "log_meta":  # the migration created its rows: update them
                    for name, value in source.execute("SELECT name, value FROM log_meta"):
                        cur.execute(
                            "INSERT INTO log_meta (name, value) VALUES (%s, %s)"
                            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                            (name, value),
                        )
                    continue
                order = f" ORDER BY {id_column}" if id_column else ""
                rows = source.execute(f"SELECT {names} FROM {table}{order}")
                copied = 0
                with cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    while batch := rows.fetchmany(BATCH):
                        for row in batch:
                            copy.write_row(row)
                        copied += len(batch)
                progress(f"copied {table}: {copied} rows")
                if id_column is not None:
                    largest = max(int(sequences.get(table, 0)), _largest(cur, table, id_column))
                    if table == "events":  # ids retention trimmed away stay used too
                        largest = max(largest, _trimmed(source))
                    if largest:
                        cur.execute(
                            "SELECT setval(pg_get_serial_sequence(%s, %s), %s)",
                            (table, id_column, largest),
                        )
            actual = _counts(cur.execute)
            if actual != expected:
                diff = [
                    f"{e.table}: {e.rows} rows (max id {e.max_id}) in SQLite,"
                    f" {a.rows} (max id {a.max_id}) in PostgreSQL"
                    for e, a in zip(expected, actual, strict=True)
                    if e != a
                ]
                raise ConfigError("migrate-storage: verification failed: " + "; ".join(diff))
            target.commit()
        return actual
    finally:
        if source.in_transaction:
            source.execute("ROLLBACK")
        source.close()


def _largest(cur: Any, table: str, column: str) -> int:
    (value,) = cur.execute(f"SELECT coalesce(max({column}), 0) FROM {table}").fetchone()
    return int(value)


def _trimmed(source: sqlite3.Connection) -> int:
    row = source.execute("SELECT value FROM log_meta WHERE name = 'trimmed_through'").fetchone()
    return int(row[0]) if row else 0
