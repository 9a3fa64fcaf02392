"""Schema migrations, for both backends, through yoyo-migrations.

Each backend keeps its SQL under ``store/migrations/<dialect>/`` with the same
migration ids; yoyo keeps the list of applied ones in the database itself.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["apply_migrations"]


def apply_migrations(yoyo_url: str, dialect: str) -> list[str]:
    """Bring the database at ``yoyo_url`` to the newest schema of ``dialect``;
    return the ids applied.

    yoyo applies each pending migration in its own transaction under its
    lock, so processes starting together migrate once.
    """
    from yoyo import get_backend, read_migrations

    directory = Path(str(resources.files("trio_events.store") / "migrations" / dialect))
    backend = get_backend(yoyo_url)
    try:
        migrations = read_migrations(str(directory))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()
