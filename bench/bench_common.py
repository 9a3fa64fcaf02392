"""Pieces shared by the benchmark's processes (imported from ``bench/``).

The server processes and the client are started as scripts
(``python bench/serve_ours.py``), so ``bench/`` is on ``sys.path`` and this
module is imported by its plain name.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from typing import Any

__all__ = [
    "EVENT_TYPE",
    "bench_data",
    "emit",
    "pad_for",
    "raise_nofile",
    "tune_gc",
]

EVENT_TYPE = "Bench"
WANTED_NOFILE = 65_536  # room for 20,000+ idle streams, where the hard limit allows it


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if hard < WANTED_NOFILE and os.geteuid() == 0:
        try:  # root may raise the hard limit too (up to /proc/sys/fs/nr_open)
            resource.setrlimit(resource.RLIMIT_NOFILE, (WANTED_NOFILE, WANTED_NOFILE))
            return WANTED_NOFILE
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def tune_gc() -> None:
    """What ``trio-events serve`` does once it listens (``trio_events.cli.tune_gc``).

    Everything allocated during set-up is moved out of the collector's sight
    and generation 0 runs every 50,000 allocations instead of 700, so full
    collections do not set every stream's latency tail.  Both servers of the
    benchmark get exactly the same treatment.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def pad_for(size: int) -> str:
    """Padding that makes a whole ``Bench`` frame about ``size`` bytes long.

    The frame is ``{"type":"Bench","data":{"ts":...,"seq":...,"pad":"..."},"eventId":N}``
    with a 19-digit timestamp and up to 7-digit sequence and event ids.
    """
    sample = {
        "type": EVENT_TYPE,
        "data": {"ts": time.monotonic_ns() + 10**18, "seq": 1_000_000, "pad": ""},
        "eventId": 1_000_000,
    }
    overhead = len(json.dumps(sample, separators=(",", ":")))
    return "x" * max(0, size - overhead)


def bench_data(seq: int, pad: str) -> dict[str, Any]:
    """The event's data; ``ts`` comes first so the client finds it cheaply."""
    return {"ts": time.monotonic_ns(), "seq": seq, "pad": pad}


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout for the orchestrator."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
