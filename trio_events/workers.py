"""``trio-events serve --workers N``: N server processes sharing one port.

The supervisor (this module, in the process the operator started) opens the
listening sockets itself, then starts N ordinary ``trio-events serve``
processes that inherit those sockets (``--listen-fds``) instead of binding
their own: every worker accepts connections from the same queue, the kernel
hands each new connection to one of them, and the port is the same whatever
the number of workers.  Each worker is a complete server (store, broker, bus,
HTTP); they share state only through PostgreSQL and Redis, which is why
several workers are refused on the embedded SQLite + in-process bus setup.

Ownership: one task per worker, in the supervisor's nursery, runs the worker
process (``trio.run_process``) and starts it again if it dies (a crash or a
``kill -9`` drops only that worker's streams; their clients reconnect, land on
another worker, and resume from the shared log).  A worker that exits with an
error by itself within ``FAST_FAIL`` seconds of starting stops the whole
supervisor instead of restarting in a loop (a configuration error, say).  Shutdown (SIGINT/SIGTERM
to the supervisor) cancels the nursery; each worker then gets one SIGTERM and
``graceful_timeout`` plus a margin to stop before it is killed.  Workers run in
their own session, so a terminal's Ctrl-C reaches only the supervisor, which
forwards it once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

from .config import Config, ConfigError

__all__ = ["check_workers", "run_workers", "worker_argv"]

log = logging.getLogger("trio_events.workers")

FAST_FAIL = 10.0  # seconds: a worker dying sooner than this stops the supervisor
RESTART_DELAY = 1.0
STOP_MARGIN = 5.0  # seconds past graceful_timeout before a worker is killed


def check_workers(config: Config, workers: int) -> None:
    """Refuse combinations that cannot share state across processes."""
    if workers < 1 or workers > 64:
        raise ConfigError(f"--workers: must be between 1 and 64, got {workers}")
    if workers == 1:
        return
    if config.bus.backend != "redis" or config.storage.backend != "postgresql":
        raise ConfigError(
            f"--workers {workers}: several processes share events only through"
            ' bus.backend = "redis" and storage.backend = "postgresql"'
            f" (this configuration has bus.backend = {config.bus.backend!r} and"
            f" storage.backend = {config.storage.backend!r}); run one process,"
            " or configure PostgreSQL and Redis"
        )


def worker_argv(argv: Sequence[str], fds: Sequence[int]) -> list[str]:
    """The command line of one worker: the supervisor's own, minus ``--workers``,
    plus the inherited listening sockets."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        args.append(arg)
    return [sys.executable, "-m", "trio_events", *args, "--listen-fds", ",".join(map(str, fds))]


async def _stop(grace: float, process: trio.Process) -> None:
    """How a worker is stopped when its task is cancelled: SIGTERM, then SIGKILL."""
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(grace):
        await process.wait()
        return
    log.warning("worker did not stop in time, killing pid=%s", process.pid)
    process.kill()


async def _supervise(
    index: int, command: list[str], fds: Sequence[int], grace: float, failed: trio.Event
) -> None:
    while True:
        started = trio.current_time()
        log.info("starting worker=%d", index)
        result: Any = await trio.run_process(
            command,
            check=False,
            pass_fds=tuple(fds),
            start_new_session=True,
            deliver_cancel=partial(_stop, grace),
        )
        code = result.returncode
        # Exiting by itself with an error soon after starting (a bad config, a
        # database it cannot reach) would fail again: give up.  Killed by a
        # signal (negative code) or after running a while: start it again.
        if code > 0 and trio.current_time() - started < FAST_FAIL:
            log.error("worker=%d exited early code=%s; stopping", index, code)
            failed.set()
            return
        log.warning("worker=%d exited code=%s; restarting", index, code)
        await trio.sleep(RESTART_DELAY)


async def run_workers(
    config: Config, argv: Sequence[str], workers: int, shutdown: trio.Event
) -> int:
    """Bind, run ``workers`` worker processes until ``shutdown``; return an exit code."""
    server = config.server
    listeners = await trio.open_tcp_listeners(server.port, host=server.host or None)
    try:
        fds = []
        for listener in listeners:
            fd = listener.socket.fileno()
            os.set_inheritable(fd, True)
            fds.append(fd)
        addresses = [listener.socket.getsockname() for listener in listeners]
        scheme = "https" if server.tls else "http"
        urls = [f"{scheme}://{f'[{a[0]}]' if ':' in a[0] else a[0]}:{a[1]}" for a in addresses]
        log.info("supervisor listening urls=%s workers=%d", ",".join(urls), workers)
        command = worker_argv(argv, fds)
        grace = server.graceful_timeout + STOP_MARGIN
        failed = trio.Event()
        async with trio.open_nursery() as nursery:
            for index in range(workers):
                nursery.start_soon(_supervise, index, command, fds, grace, failed)
            async with trio.open_nursery() as waiting:  # until either happens
                waiting.start_soon(_cancel_on, shutdown, waiting.cancel_scope)
                waiting.start_soon(_cancel_on, failed, waiting.cancel_scope)
            nursery.cancel_scope.cancel()  # stops every worker (see _stop)
        log.info("supervisor stopped")
        return 1 if failed.is_set() else 0
    finally:
        for listener in listeners:
            await listener.aclose()


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
