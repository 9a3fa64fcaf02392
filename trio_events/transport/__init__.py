"""The transport that owns the listening socket (see :mod:`.http`)."""

from __future__ import annotations

from .http import serve_http as serve_http

__all__ = ["serve_http"]
