"""The little that differs between SQLite and PostgreSQL, behind one interface.

The queries (:mod:`.queries`) are written once, in the SQL both databases
accept: ``?`` placeholders, ``RETURNING`` for new ids, ``ON CONFLICT`` for
upserts.  A :class:`Db` runs them on one connection of its backend:
:class:`SqliteDb` passes them through; :class:`PostgresDb` rewrites the
placeholders for psycopg (once per distinct statement) and matches user names
ignoring the case of ASCII letters, as SQLite's ``NOCASE`` column does.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import psycopg

__all__ = ["Cursor", "Db", "PostgresDb", "SqliteDb"]

Params = Sequence[Any]


class Cursor(Protocol):
    """What the queries use of a DB-API cursor."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """One connection, as the queries see it."""

    user_name_equals: str
    """The predicate matching ``users.user_name`` to one ``?``, ignoring case."""

    def execute(self, sql: str, params: Params = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...
    def insert(self, sql: str, params: Params) -> int:
        """Run an ``INSERT ... RETURNING <id>`` and return the new id."""
        ...


class SqliteDb:
    user_name_equals = "user_name = ?"  # the column is declared COLLATE NOCASE

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        self.conn.executemany(sql, rows)

    def insert(self, sql: str, params: Params) -> int:
        # fetchall: the statement runs to completion before the next one.
        return int(self.conn.execute(sql, params).fetchall()[0][0])


@functools.lru_cache(maxsize=512)
def to_psycopg(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s``; a literal ``%`` doubles."""
    return sql.replace("%", "%%").replace("?", "%s")


# SQLite's NOCASE folds ASCII letters only; so does this (``lower()`` would
# fold every letter, the way the database's locale says), so that the same
# names are the same user on both backends.
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ASCII_FOLD = f"translate({{}}, '{_UPPER}', '{_UPPER.lower()}')"


class PostgresDb:
    # A unique index on the same expression (migrations/postgresql/0001).
    user_name_equals = f"{ASCII_FOLD.format('user_name')} = {ASCII_FOLD.format('?')}"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        return self.conn.execute(to_psycopg(sql), params)

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(to_psycopg(sql), rows)

    def insert(self, sql: str, params: Params) -> int:
        row = self.conn.execute(to_psycopg(sql), params).fetchone()
        assert row is not None
        return int(row[0])
