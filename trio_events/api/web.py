"""The web console at ``/`` and, when configured, a client's files from ``server.static_dir``.

The built-in console is three files in the package (``trio_events/web``), read
with :mod:`importlib.resources` so it works from a wheel or a zipapp.  When
``[server] static_dir`` is set, its files are served at ``/`` and below first
(``index.html`` for ``/``), so another web client's build runs on the same
origin as the API (its cookie login and relative ``/api/v1/events`` URL work).

Paths under ``api/`` never reach these views (the converter refuses them), so
API routes keep their own 404 and 405 answers; ``/healthz``, ``/readyz`` and
``/metrics`` are static rules and win over the catch-all.  A static_dir file
is served only when every segment is an ordinary name (no ``..``, no
dot-files, no backslash) and the resolved path is a regular file inside the
resolved directory, so symlinks pointing outside answer 404 like anything else.
"""

from __future__ import annotations

import mimetypes
from importlib import resources
from pathlib import Path

import trio
from quart import Blueprint, Response
from werkzeug.exceptions import NotFound
from werkzeug.routing import BaseConverter

from .common import services

__all__ = ["blueprint"]

CONSOLE_PACKAGE = "trio_events"
CONSOLE_DIR = "web"
STATIC_PREFIX = "static/"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}


class WebPathConverter(BaseConverter):
    """A path like ``<path:...>``, but never one under ``api/``."""

    regex = r"(?!api/)[^/].*?"
    part_isolating = False


blueprint = Blueprint("web", __name__)
blueprint.record_once(lambda state: state.app.url_map.converters.update(webpath=WebPathConverter))


def content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in _TYPES:
        return _TYPES[suffix]
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def _safe_parts(path: str) -> list[str] | None:
    parts = path.split("/")
    for part in parts:
        if not part or part.startswith(".") or "\\" in part or "\x00" in part or ":" in part:
            return None
    return parts


def _from_static_dir(directory: str, path: str) -> bytes | None:
    """The bytes of ``path`` under ``directory``, or None when it is not a safe regular file."""
    parts = _safe_parts(path)
    if parts is None:
        return None
    try:
        root = Path(directory).resolve(strict=True)
        target = root.joinpath(*parts).resolve(strict=True)
        if not target.is_relative_to(root) or not target.is_file():
            return None
        return target.read_bytes()
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, unreadable
        return None


def _console_file(name: str) -> bytes | None:
    """A file of the built-in console, by its bare name."""
    if _safe_parts(name) is None or "/" in name:
        return None
    entry = resources.files(CONSOLE_PACKAGE).joinpath(CONSOLE_DIR, name)
    try:
        return entry.read_bytes() if entry.is_file() else None
    except OSError:
        return None


def _response(body: bytes, name: str) -> Response:
    response = Response(body, status=200, content_type=content_type(name))
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@blueprint.get("/")
@blueprint.get("/<webpath:path>")
async def web_file(path: str = "") -> Response:
    static_dir = services().config.server.static_dir
    name = path or "index.html"
    if static_dir:
        body = await trio.to_thread.run_sync(_from_static_dir, static_dir, name)
        if body is not None:
            return _response(body, name)
    if not path or path.startswith(STATIC_PREFIX):
        console_name = path[len(STATIC_PREFIX) :] if path else "index.html"
        body = await trio.to_thread.run_sync(_console_file, console_name)
        if body is not None:
            response = _response(body, console_name)
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
            response.headers["Referrer-Policy"] = "no-referrer"
            response.headers["X-Frame-Options"] = "DENY"
            return response
    raise NotFound()
