"""Commits per second with ``storage.durability = "normal"`` and ``"full"``.

    .venv/bin/python bench/durability.py              # 5 repetitions of 5 s per mode
    .venv/bin/python bench/durability.py --quick      # 2 repetitions of 2 s, a smoke test

What a commit is here: one message posted through the message service of an
in-process server (``open_server``, SQLite, everything else at its defaults),
so each commit is the transaction of a real post: the message, the author's
read mark, the room's counters and the post's two events (the outbox).  The
posts are sequential: SQLite has one writer, so concurrent posters queue for
it and the rate is the same.  ``normal`` runs WAL with ``synchronous=NORMAL``
(no fsync per commit); ``full`` runs WAL with ``synchronous=FULL`` (an fsync
of the WAL per commit), so ``full``'s rate is set by the disk's fsync time.

Each repetition runs both modes on fresh data directories, one after the
other (alternating which goes first), for ``--seconds`` each; the figure of a
mode is the median of its repetitions, and the ratio is normal's median over
full's.  The data directories are made under ``--dir`` (default: the system's
temporary directory): it must be on the disk the server would use, since a
``tmpfs`` makes fsync free and the ratio meaningless (the results record the
file system's type).  The machine's load average before and after is
recorded too: other work on the CPU lowers ``normal``'s rate most.

Writes ``bench/durability-results.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import trio_events

MODES = ("normal", "full")


async def commits_per_second(mode: str, seconds: float, parent: Path) -> float:
    """Post messages for ``seconds`` on a fresh server with durability ``mode``."""
    with tempfile.TemporaryDirectory(prefix=f"bench-durability-{mode}-", dir=parent) as data:
        config = trio_events.load_config(
            None,
            environ={},
            overrides={
                "server": {"port": 0, "data_dir": data, "log_level": "warning"},
                "storage": {"durability": mode},
                "bootstrap": {"admin_password": "bench-admin-password-1"},
            },
        )
        async with trio_events.open_server(config) as server:
            svc = server.services
            room = await svc.rooms.create(None, {"displayName": "bench", "roomType": "Public"})
            user = await svc.users.create_user(None, "poster", "bench-password-1", "Poster", False)
            room_id = int(room["roomId"])
            for i in range(20):  # warm-up: the file and the WAL exist, caches are filled
                await svc.messages.post(user, room_id, {"content": f"warm-up {i}"})
            commits = 0
            start = time.perf_counter()
            deadline = start + seconds
            while time.perf_counter() < deadline:
                await svc.messages.post(user, room_id, {"content": f"message {commits}"})
                commits += 1
            return commits / (time.perf_counter() - start)


def file_system(path: Path) -> str:
    """The type of the file system ``path`` is on (``df``), or "unknown"."""
    try:
        out = subprocess.run(
            ["df", "--output=fstype", str(path)], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out[-1] if len(out) > 1 else "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def run(seconds: float, reps: int, parent: Path) -> dict[str, Any]:
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    load_before = os.getloadavg()
    for rep in range(reps):
        order = MODES if rep % 2 == 0 else MODES[::-1]
        for mode in order:
            rates[mode].append(round(await commits_per_second(mode, seconds, parent), 1))
    medians = {mode: statistics.median(values) for mode, values in rates.items()}
    return {
        "what": "sequential posts (one transaction each) per second, in-process, SQLite WAL",
        "seconds_per_run": seconds,
        "repetitions": reps,
        "commits_per_second": rates,
        "median": medians,
        "ratio_normal_over_full": round(medians["normal"] / medians["full"], 1),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "data_dir_file_system": file_system(parent),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per mode and repetition")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 repetitions of 2 s")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the data goes")
    parser.add_argument("--out", default=str(Path(__file__).with_name("durability-results.json")))
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.reps = 2.0, 2
    logging.basicConfig(level=logging.WARNING)
    results = trio.run(run, args.seconds, args.reps, Path(args.dir))
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"{'mode':8} {'median commits/s':>17}   runs")
    for mode in MODES:
        runs = ", ".join(f"{r:.0f}" for r in results["commits_per_second"][mode])
        print(f"{mode:8} {results['median'][mode]:17.0f}   {runs}")
    print(f"normal / full: {results['ratio_normal_over_full']}x  ({results['machine']})")


if __name__ == "__main__":
    main()
