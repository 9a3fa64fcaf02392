"""Structured logging to stderr: one ``key=value`` line per record."""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["configure_logging"]


class _Formatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
        self.converter = time.gmtime


def configure_logging(level: str) -> None:
    """Send our records and hypercorn's error log to stderr at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("trio_events")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    hyper = logging.getLogger("hypercorn.error")
    hyper.handlers[:] = [handler]
    hyper.setLevel(max(logging.WARNING, root.level))
    hyper.propagate = False
