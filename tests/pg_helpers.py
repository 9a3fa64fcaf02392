"""PostgreSQL for the tests: a probe, throw-away databases, a two-backend fixture.

The server is ``$TRIO_EVENTS_TEST_PG`` (default: the local trust-auth cluster's
``test`` database, used only as the maintenance database).  When it cannot be
reached, PostgreSQL tests are skipped, except on CI (``CI=true``), where they
fail: a CI run that silently tested only SQLite would prove nothing.

Speed: the migrations run once, into a template database whose name carries a
hash of the migration files (so a changed schema gets a new template, and runs
of different checkouts never share one).  Every test database is then a
``CREATE DATABASE ... TEMPLATE`` copy of it, a few milliseconds.  The template
is built under a cluster-wide advisory lock, so two test runs on one machine
build it once, and it refuses connections, so no session can ever block the
copy ("source database is being accessed by other users").

Test modules use the fixtures by importing them::

    from .pg_helpers import backend_config_fixture  # noqa: F401

and naming the fixture (``backend_config``) as a test argument.  The function
and the fixture have different names because an argument that shadowed an
imported name would be a redefinition (ruff F811).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import secrets
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import attrs
import psycopg
import pytest
from psycopg.rows import TupleRow

from trio_events.config import Config
from trio_events.store.postgres import apply_pg_migrations

from .helpers import make_config

__all__ = [
    "BACKENDS",
    "PG_ADMIN_URL",
    "backend_config_fixture",
    "database_url",
    "empty_backend_config_fixture",
    "fresh_database",
    "pg_config",
    "pg_url_fixture",
    "require_postgres",
]

PG_ADMIN_URL = os.environ.get("TRIO_EVENTS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]
# Serializes building the template across concurrent test runs on one cluster.
_TEMPLATE_LOCK = int.from_bytes(hashlib.sha256(b"trio_events test template").digest()[:7], "big")


def database_url(name: str) -> str:
    """``PG_ADMIN_URL`` pointed at database ``name`` (same host, user, options)."""
    return urlunsplit(urlsplit(PG_ADMIN_URL)._replace(path=f"/{name}"))


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _admin() -> psycopg.Connection[TupleRow]:
    # CREATE / DROP DATABASE cannot run inside a transaction block.
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)


@functools.cache
def _probe() -> str | None:
    """Why PostgreSQL cannot be used, or None; asked once per session."""
    try:
        with _admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at {_shown(PG_ADMIN_URL)} is not usable: {first}"
    return None


def require_postgres() -> None:
    """Skip the test (fail it on CI) when PostgreSQL cannot be reached."""
    reason = _probe()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _migrations_digest() -> str:
    folder = Path(str(resources.files("trio_events.store") / "migrations" / "postgresql"))
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.sql")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _exists(conn: psycopg.Connection[TupleRow], name: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
    )


@functools.cache
def _template() -> str:
    """The name of the migrated template database, built if missing (once per session)."""
    name = f"te_tpl_{_migrations_digest()}"
    building = f"{name}_build"
    with _admin() as conn:
        conn.execute("SET lock_timeout = '60s'")  # a stuck concurrent build: fail, not hang
        conn.execute("SELECT pg_advisory_lock(%s)", (_TEMPLATE_LOCK,))
        try:
            if not _exists(conn, name):
                # Built under another name and renamed when complete, so an
                # interrupted build is never mistaken for a template.
                conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{building}" TEMPLATE template0')
                apply_pg_migrations(database_url(building))  # closes its connection
                conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
                conn.execute(
                    f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false'
                )
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_TEMPLATE_LOCK,))
    return name


@contextlib.contextmanager
def fresh_database(*, migrated: bool = True) -> Iterator[str]:
    """Yield the URL of a new database (migrated, or truly empty); drop it afterwards."""
    require_postgres()
    template = _template() if migrated else "template0"
    name = f"te_test_{secrets.token_hex(8)}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield database_url(name)
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_config(config: Config, url: str) -> Config:
    """``config`` with its storage switched to PostgreSQL at ``url``."""
    return attrs.evolve(config, storage=attrs.evolve(config.storage, backend="postgresql", url=url))


def _backend_config(backend: str, tmp_path: Path, migrated: bool) -> Iterator[Config]:
    config = make_config(tmp_path)
    if backend == "sqlite":
        yield config
        return
    with fresh_database(migrated=migrated) as url:
        yield pg_config(config, url)


@pytest.fixture(name="backend_config", params=BACKENDS, ids=BACKENDS)
def backend_config_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Config]:
    """A test config on each backend: SQLite under ``tmp_path``, or a fresh,
    migrated PostgreSQL database (dropped after the test)."""
    yield from _backend_config(str(request.param), tmp_path, migrated=True)


@pytest.fixture(name="empty_backend_config", params=BACKENDS, ids=BACKENDS)
def empty_backend_config_fixture(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Config]:
    """Like ``backend_config``, but the database has no schema yet (no file, or
    a PostgreSQL database created from ``template0``)."""
    yield from _backend_config(str(request.param), tmp_path, migrated=False)


@pytest.fixture(name="pg_url")
def pg_url_fixture() -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database (PostgreSQL-only tests)."""
    with fresh_database() as url:
        yield url
