"""One server process versus two (cluster mode): delivery throughput on this machine.

    .venv/bin/python bench/cluster.py            # full: N = 200 and 1,000, median of 3, ~7 min
    .venv/bin/python bench/cluster.py --quick    # N = 200, one run, ~2 min

Three configurations, each on fresh servers (and, for PostgreSQL, a fresh
database that is dropped afterwards):

``sqlite-1``
    the reference: one process, SQLite, the in-process bus (``bench/run.py``'s
    server).
``pg-1``
    one process, PostgreSQL store and Redis bus: the cluster configuration
    with one process, so that against ``pg-2`` only the process count differs.
``pg-2``
    two processes on two ports sharing the PostgreSQL database and the Redis
    channel; the N subscribers alternate between them, and every event is
    published on the first, so the second hears of it through Redis.

First, the cost of one event before any fan-out: on fresh servers with no
stream open, 3 x 1,000 events for each store (SQLite, PostgreSQL) with each
bus (in-process, Redis; PostgreSQL + Redis with two processes), CPU per event
of each server process, of PostgreSQL and of Redis.

Then for each configuration and N the client opens N streams, 100 warm-up events
are sent, then M = 2,000 events of ~200 bytes are published one after the
other as fast as the server takes them (median of 3 runs, 1 with --quick),
then 50 events at 10/s for latency.  deliveries/s = N*M / (last frame
received - first publish); server CPU per delivery = utime+stime of every
server process (``/proc/PID/stat``) over the burst / (N*M).  The CPU used
meanwhile by PostgreSQL (its server-wide processes and the sessions of the
benchmark's database) and Redis (``redis-server``) is reported per event.

The client is ``bench/client.py``'s ``Client``, subclassed only to open its
connections round-robin over several ports and, in latency runs, to keep the
samples of each port apart (streams on the publishing process versus streams
on the other one).  Layout with ``taskset`` (2 cores): one process: server on
core 0, client on core 1 (as ``run.py``); two processes: the publishing server
on core 0, the second server and the client share core 1.  PostgreSQL and
Redis are not pinned.

The machine is shared: each measurement waits for the rest of it to be idle
and a burst during which other work used the cores is repeated (see
``wait_for_quiet`` and ``Cluster.retried``).

Writes ``bench/cluster-results.json`` (``cluster-results-quick.json`` with
--quick) and prints two tables.  Every process started is stopped and every
database dropped, also on error or Ctrl-C.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import raise_nofile  # noqa: E402
from client import Client, Conn, percentile  # noqa: E402
from run import (  # noqa: E402
    EVENTS,
    LATENCY_EVENTS,
    LATENCY_RATE,
    SIZE,
    USERS,
    Child,
    ChildError,
    cpu_seconds,
    machine,
)

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
DB_PREFIX = "trio_events_bench_"
WARMUP = 100
PUBLISH_ALONE = 1000  # events published with no stream open: the cost of an event itself


SERVICES = {"postgres": "pg", "redis-server": "redis"}  # /proc/PID/comm -> key
CLK_TCK = os.sysconf("SC_CLK_TCK")
QUIET_CORES = 0.1  # background load (in cores) below which the machine counts as quiet
DISTURBED = 0.15  # a burst during which other work used more cores than this is repeated
RETRIES = 2  # at most this many repetitions of one disturbed burst


@dataclasses.dataclass(frozen=True)
class Setup:
    name: str
    label: str
    processes: int
    storage: str  # "sqlite" | "postgresql"
    bus: str  # "local" | "redis"
    server_cores: tuple[int, ...]
    client_core: int = 1


# the fan-out measurements
SETUPS = (
    Setup("sqlite-1", "1 process, SQLite (reference)", 1, "sqlite", "local", (0,)),
    Setup("pg-1", "1 process, PostgreSQL + Redis", 1, "postgresql", "redis", (0,)),
    Setup("pg-2", "2 processes, PostgreSQL + Redis", 2, "postgresql", "redis", (0, 1)),
)
# the cost of one event, before any fan-out: each store with each bus
COST_SETUPS = (
    Setup("sqlite+local", "SQLite, in-process bus", 1, "sqlite", "local", (0,)),
    Setup("sqlite+redis", "SQLite, Redis bus", 1, "sqlite", "redis", (0,)),
    Setup("pg+local", "PostgreSQL, in-process bus", 1, "postgresql", "local", (0,)),
    Setup("pg+redis x2", "PostgreSQL, Redis bus, 2 processes", 2, "postgresql", "redis", (0, 1)),
)


# --- the client: client.py's Client over several ports -------------------------


class MultiPortClient(Client):
    """``client.Client`` with its connections round-robin over ``--port``s.

    Tokens are also used round-robin, so with 100 tokens and 2 ports user i's
    streams are all on port i mod 2.  In latency runs the samples are also kept
    per port (streams on the publishing process versus the other).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.ports: list[int] = args.ports
        args.port = self.ports[0]
        super().__init__(args)
        self.port_of: dict[Conn, int] = {}
        self.lat_by_port: dict[int, list[int]] = {}

    def start_one(self) -> None:
        self.port = self.ports[self.opened % len(self.ports)]
        super().start_one()

    def frames_by_port(self, conn: Conn, data: bytes) -> None:
        port = self.port_of.get(conn)
        if port is None:
            port = self.port_of[conn] = conn.sock.getpeername()[1]
        before = len(self.lat)
        Client.frames(self, conn, data)
        if len(self.lat) > before:
            self.lat_by_port.setdefault(port, []).extend(self.lat[before:])

    def cmd_measure(self, per_conn: int, mode: str, timeout: float) -> dict[str, Any]:
        self.lat_by_port = {}
        by_port = mode == "latency" and len(self.ports) > 1
        if by_port:
            # An instance attribute shadows the method for this run only: the
            # counting runs call client.py's frames() with no extra layer.
            vars(self)["frames"] = self.frames_by_port
        try:
            result = super().cmd_measure(per_conn, mode, timeout)
        finally:
            vars(self).pop("frames", None)
        if by_port:
            result["by_port"] = {}
            for port, samples in self.lat_by_port.items():
                samples.sort()
                result["by_port"][str(port)] = {
                    "samples": len(samples),
                    "p50_ms": percentile(samples, 0.50),
                    "p99_ms": percentile(samples, 0.99),
                    "max_ms": samples[-1] / 1e6 if samples else float("nan"),
                }
        return result


def client_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="client.py over several ports")
    parser.add_argument("--port", dest="ports", type=int, action="append", required=True)
    parser.add_argument("--path", default="/api/v1/events")
    parser.add_argument("--tokens-file", default="")
    parser.add_argument("--hello", action="store_true")
    parser.add_argument("--concurrency", type=int, default=64)
    raise_nofile()
    MultiPortClient(parser.parse_args(argv)).run()
    return 0


# --- PostgreSQL, Redis and the CPU of their processes -------------------------


def database_url(admin_url: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def _admin(admin_url: str) -> Any:
    import psycopg

    # CREATE / DROP DATABASE cannot run inside a transaction block.
    return psycopg.connect(admin_url, autocommit=True, connect_timeout=10)


def _drop(admin_url: str, name: str) -> None:
    from psycopg import sql

    with _admin(admin_url) as conn:
        # FORCE: a server killed mid-run may leave sessions behind for a moment.
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """An empty database for one configuration, dropped on the way out whatever happens."""
    from psycopg import sql

    name = f"{DB_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    with _admin(admin_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(admin_url, name)
    finally:
        try:
            _drop(admin_url, name)
        except Exception as exc:  # never hide the error that brought us here
            print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)


def drop_leftovers(admin_url: str) -> list[str]:
    """Drop the databases of earlier runs whose orchestrator died without cleaning
    up (``kill -9``): named ``trio_events_bench_PID_...`` with PID no longer alive."""
    with _admin(admin_url) as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database")]
    dropped = []
    for name in names:
        if not name.startswith(DB_PREFIX):
            continue
        pid = name[len(DB_PREFIX) :].split("_")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _drop(admin_url, name)
            dropped.append(name)
    return dropped


def redis_command(url: str, command: bytes) -> bytes:
    """One inline command to Redis over a plain socket; the raw reply."""
    import socket

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 5) as s:
        s.sendall(command + b"\r\n")
        reply = s.recv(65536)
        if reply.startswith(b"$"):  # a bulk string: read it whole
            size = int(reply[1 : reply.index(b"\r\n")])
            while len(reply) < reply.index(b"\r\n") + 2 + size:
                reply += s.recv(65536)
        return reply


def services_info(admin_url: str, redis_url: str) -> dict[str, Any]:
    """Check that PostgreSQL and Redis answer; their versions for the results."""
    with _admin(admin_url) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
    if not redis_command(redis_url, b"PING").startswith(b"+PONG"):
        raise ChildError(f"Redis at {redis_url} does not answer PING")
    info = redis_command(redis_url, b"INFO server").decode(errors="replace")
    redis = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if "redis_version:" in line),
        "",
    )
    return {"postgresql": pg, "redis": redis}


def service_cpu(database: str) -> dict[int, tuple[str, float]]:
    """utime+stime of the Redis server and of PostgreSQL's processes: pid -> (key, seconds).

    PostgreSQL's: the server-wide ones (postmaster, WAL writer, checkpointer...)
    and the sessions of ``database``; sessions of other databases (anyone
    else's on this machine) are left out.
    """
    out: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as f:
                key = SERVICES.get(f.read().strip())
            if key is None:
                continue
            if key == "pg":
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    words = f.read().replace(b"\0", b" ").decode(errors="replace").split()
                # a session: "postgres: 15/main: USER DATABASE HOST(PORT) STATE"
                session = len(words) > 4 and (words[4].endswith(")") or words[4] == "[local]")
                if session and words[3] != database:
                    continue
            out[int(entry.name)] = (key, cpu_seconds(int(entry.name)))
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of the whole machine so far, from /proc/stat.

    Busy: user + nice + system + irq + softirq (a process's stime includes the
    interrupt work done while it ran, so ours is part of this); stolen: the
    time the hypervisor gave to other machines.
    """
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (
            int(x) for x in f.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def background_cores(seconds: float = 1.0) -> float:
    """How many cores the rest of the machine keeps busy, over ``seconds``."""
    busy0, _ = machine_busy()
    time.sleep(seconds)
    busy1, _ = machine_busy()
    return (busy1 - busy0) / seconds


def wait_for_quiet(limit: float, verbose: bool = True) -> float:
    """Wait (up to ``limit`` seconds) until the machine is nearly idle; return the
    background load last measured, in cores."""
    deadline = time.monotonic() + limit
    load = background_cores(0.5)
    if load > QUIET_CORES and limit > 0 and verbose:
        print(f"  waiting for a quiet machine: {load:.2f} cores busy elsewhere", flush=True)
    while load > QUIET_CORES and time.monotonic() < deadline:
        load = background_cores(1.0)
    if load > QUIET_CORES:
        print(f"    note: measuring with {load:.2f} cores busy elsewhere", flush=True)
    return load


def service_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    delta = dict.fromkeys(SERVICES.values(), 0.0)
    for pid, (key, seconds) in after.items():
        delta[key] += seconds - before.get(pid, (key, 0.0))[1]
    return delta


# --- the orchestrator ------------------------------------------------------------


class Cluster:
    def __init__(
        self, tmp: Path, pin: bool, pg_admin: str, redis_url: str, quiet_wait: float, budget: float
    ) -> None:
        self.tmp = tmp
        self._quiet_wait = quiet_wait
        # past this moment: no more waiting for a quiet machine, no repeated bursts
        self.patience_until = time.monotonic() + budget
        self.pin = pin
        self.pg_admin = pg_admin
        self.redis_url = redis_url
        self.seq = 0
        self.database = ""  # the current configuration's PostgreSQL database

    @property
    def quiet_wait(self) -> float:
        return max(0.0, min(self._quiet_wait, self.patience_until - time.monotonic()))

    @contextlib.contextmanager
    def child(self, name: str, argv: list[str], core: int) -> Iterator[Child]:
        """A child process (run.py's ``Child``) that is stopped on the way out."""
        self.seq += 1
        child = Child(f"{self.seq:02d}-{name}", argv, core if self.pin else None, self.tmp)
        try:
            yield child
        finally:
            try:
                child.close()  # "quit", then kill after 5 s
            finally:
                if child.proc.poll() is None:
                    child.proc.kill()
                    child.proc.wait()

    @contextlib.contextmanager
    def servers(self, setup: Setup) -> Iterator[tuple[list[Child], list[int], Path]]:
        """Start the configuration's server processes (and its database)."""
        self.database = ""
        with contextlib.ExitStack() as stack:
            cluster: list[str] = []
            if setup.storage == "postgresql":
                url = stack.enter_context(fresh_database(self.pg_admin))
                self.database = urlsplit(url).path.strip("/")
                cluster += ["--storage-url", url]
            if setup.bus == "redis":
                channel = f"trio-events-bench-{os.getpid()}-{secrets.token_hex(4)}"
                cluster += ["--bus-url", self.redis_url, "--bus-channel", channel]
            tokens = self.tmp / f"tokens-{self.seq + 1}.json"
            servers: list[Child] = []
            ports: list[int] = []
            room_id = 0
            for i in range(setup.processes):
                argv = ["bench/serve_ours.py", "--data-dir", str(self.tmp / f"data-{self.seq + 1}")]
                if i == 0:  # makes the users, tokens and room (in the shared database)
                    argv += ["--tokens-file", str(tokens), "--users", str(USERS)]
                else:
                    argv += ["--join", str(room_id)]
                server = stack.enter_context(
                    self.child(f"{setup.name}-server{i + 1}", argv + cluster, setup.server_cores[i])
                )
                ready = server.read(120.0)
                room_id = room_id or ready["room_id"]
                servers.append(server)
                ports.append(ready["port"])
            yield servers, ports, tokens

    @contextlib.contextmanager
    def client(self, ports: list[int], tokens: Path, core: int) -> Iterator[Child]:
        argv = ["bench/cluster.py", "client", "--tokens-file", str(tokens), "--hello"]
        for port in ports:
            argv += ["--port", str(port)]
        with self.child("client", argv, core) as child:
            child.read(30.0)
            yield child

    def burst(
        self, servers: list[Child], client: Child, n: int, count: int, rate: float, mode: str
    ) -> dict[str, Any]:
        """Publish ``count`` events on the first server and collect what the client saw."""
        expected = n * count
        timeout = 60.0 + expected / 5_000 + (count / rate if rate else 0.0)
        armed = client.ask(f"measure {count} {mode} {timeout}", 10.0)
        if armed["connections"] != n:
            raise ChildError(f"client has {armed['connections']} open streams, expected {n}")
        window0 = time.monotonic()
        cpu0 = [cpu_seconds(s.pid) for s in servers]
        client0 = cpu_seconds(client.pid)
        svc0 = service_cpu(self.database)
        busy0, steal0 = machine_busy()
        published = servers[0].ask(f"publish {count} {SIZE} {rate}", timeout)
        seen = client.read(timeout + 10.0)
        busy1, steal1 = machine_busy()
        svc1 = service_cpu(self.database)
        client1 = cpu_seconds(client.pid)
        cpu1 = [cpu_seconds(s.pid) for s in servers]
        window = time.monotonic() - window0
        per_server = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
        svc = service_delta(svc0, svc1)
        ours = sum(per_server) + client1 - client0 + sum(svc.values())
        elapsed = (seen["last_ns"] - published["t0_ns"]) / 1e9 if seen["last_ns"] else None
        exact = (
            seen["frames"] == expected
            and seen["min_per_conn"] == count
            and seen["max_per_conn"] == count
            and not seen["closes"]
        )
        publish_seconds = (published["t1_ns"] - published["t0_ns"]) / 1e9
        result: dict[str, Any] = {
            "subscribers": n,
            "events": count,
            "rate": rate,
            "expected": expected,
            "received": seen["frames"],
            "lost": expected - min(seen["frames"], expected),
            "exact": exact,
            "publish_seconds": publish_seconds,
            "publish_ms_per_event": publish_seconds / count * 1e3,
            "seconds": elapsed,
            "server_cpu_s": per_server,
            "pg_cpu_s": svc["pg"],
            "redis_cpu_s": svc["redis"],
            "client_cpu_s": seen["client_cpu_s"],
            # the CPU seconds of the window (burst + the client's 0.3 s grace)
            # over its length: 2.0 would be both cores busy all the time
            "cores_busy": ours / window,
            # what the rest of the machine used meanwhile (other work, kernel
            # threads; /proc/stat and /proc/PID/stat tick separately, so a few
            # hundredths either way are noise)
            "other_cores": max(0.0, busy1 - busy0 - ours) / window,
            "stolen_cores": (steal1 - steal0) / window,
            "client": seen,
        }
        if elapsed:
            result["deliveries_per_s"] = expected / elapsed
            result["server_cpu_us_per_delivery"] = sum(per_server) / expected * 1e6
            result["pg_cpu_us_per_event"] = svc["pg"] / count * 1e6
            result["redis_cpu_us_per_event"] = svc["redis"] / count * 1e6
            result["client_busy"] = seen["client_cpu_s"] / elapsed
        return result

    def quiet_burst(
        self, servers: list[Child], client: Child, n: int, count: int, rate: float, mode: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return self.retried(lambda: self.burst(servers, client, n, count, rate, mode))

    def retried(
        self, measure: Callable[[], dict[str, Any]]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A measurement on a quiet machine: wait for one, and repeat it (up to
        RETRIES times) if other work used more than DISTURBED cores meanwhile.
        Returns the one kept (the least disturbed) and the ones set aside."""
        tries: list[dict[str, Any]] = []
        for attempt in range(1 + RETRIES):
            background = wait_for_quiet(min(self.quiet_wait, 20.0), verbose=False)
            run = measure()
            run["background_cores"] = background
            tries.append(run)
            if run["other_cores"] <= DISTURBED or self.quiet_wait <= 0:
                break
            if attempt < RETRIES:
                print(
                    f"    disturbed: other work used {run['other_cores']:.2f} cores; again",
                    flush=True,
                )
        kept = min(tries, key=lambda r: float(r["other_cores"]))
        return kept, [r for r in tries if r is not kept]

    def costs(self, setup: Setup, runs: int) -> dict[str, Any]:
        """The cost of an event before any fan-out, on fresh servers with no stream:
        WARMUP events, then ``runs`` times PUBLISH_ALONE events; the medians."""
        with self.servers(setup) as (servers, _ports, _tokens):
            servers[0].ask(f"publish {WARMUP} {SIZE} 0", 60.0)
            tries: list[dict[str, Any]] = []
            set_aside: list[dict[str, Any]] = []
            for _ in range(runs):
                run, disturbed = self.retried(lambda: self.publish_alone(servers))
                tries.append(run)
                set_aside += disturbed
        out: dict[str, Any] = {"label": setup.label, "runs": tries, "disturbed_runs": set_aside}
        for key in ("publish_ms_per_event", "pg_cpu_us_per_event", "redis_cpu_us_per_event"):
            out[key] = statistics.median(float(r[key]) for r in tries)
        out["other_cores"] = statistics.median(float(r["other_cores"]) for r in tries)
        out["server_cpu_us_per_event"] = [
            statistics.median(float(r["server_cpu_us_per_event"][i]) for r in tries)
            for i in range(setup.processes)
        ]
        cpu = " + ".join(f"{c:.0f}" for c in out["server_cpu_us_per_event"])
        print(
            f"  {setup.name}: {out['publish_ms_per_event']:.3f} ms/publish, server CPU {cpu}"
            f" µs/event, PostgreSQL {out['pg_cpu_us_per_event']:.0f},"
            f" Redis {out['redis_cpu_us_per_event']:.0f} µs/event",
            flush=True,
        )
        return out

    def publish_alone(self, servers: list[Child]) -> dict[str, Any]:
        """PUBLISH_ALONE events published while no stream is open (every process
        routes them to nobody): CPU per event of each process, PostgreSQL, Redis."""
        window0 = time.monotonic()
        cpu0 = [cpu_seconds(s.pid) for s in servers]
        svc0 = service_cpu(self.database)
        busy0, _ = machine_busy()
        published = servers[0].ask(f"publish {PUBLISH_ALONE} {SIZE} 0", 120.0)
        time.sleep(0.3)  # the other processes hear of the last events
        busy1, _ = machine_busy()
        svc1 = service_cpu(self.database)
        cpu1 = [cpu_seconds(s.pid) for s in servers]
        window = time.monotonic() - window0
        per_server = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
        svc = service_delta(svc0, svc1)
        seconds = (published["t1_ns"] - published["t0_ns"]) / 1e9
        return {
            "events": PUBLISH_ALONE,
            "publish_ms_per_event": seconds / PUBLISH_ALONE * 1e3,
            "server_cpu_us_per_event": [c / PUBLISH_ALONE * 1e6 for c in per_server],
            "pg_cpu_us_per_event": svc["pg"] / PUBLISH_ALONE * 1e6,
            "redis_cpu_us_per_event": svc["redis"] / PUBLISH_ALONE * 1e6,
            "other_cores": max(0.0, busy1 - busy0 - sum(per_server) - sum(svc.values())) / window,
        }

    def measure(self, setup: Setup, n: int, runs: int) -> dict[str, Any]:
        out: dict[str, Any] = {"background_cores": wait_for_quiet(self.quiet_wait)}
        started = time.monotonic()
        with (
            self.servers(setup) as (servers, ports, tokens),
            self.client(ports, tokens, setup.client_core) as client,
        ):
            opened = client.ask(f"open {n} 120", 150.0)
            out["setup"] = opened
            if opened["opened"] != n:
                tails = "".join(s.tail() for s in servers)
                raise ChildError(f"{setup.name}: opened {opened['opened']} of {n}: {opened}{tails}")
            time.sleep(0.5)
            out["streams_per_process"] = [s.ask("stats", 10.0)["subscribers"] for s in servers]
            warm = self.burst(servers, client, n, WARMUP, 0.0, "count")
            out["warmup_exact"] = warm["exact"]
            out["fanout_runs"] = []
            out["disturbed_runs"] = []
            for i in range(runs):
                run, disturbed = self.quiet_burst(servers, client, n, EVENTS, 0.0, "count")
                out["fanout_runs"].append(run)
                out["disturbed_runs"] += disturbed
                print(
                    f"  {setup.name} N={n} fan-out run {i + 1}/{runs}:"
                    f" {run.get('deliveries_per_s', 0):,.0f} deliveries/s,"
                    f" {run.get('server_cpu_us_per_delivery', 0):.2f} µs server CPU/delivery,"
                    f" {run['publish_ms_per_event']:.3f} ms/publish,"
                    f" received {run['received']}/{run['expected']}",
                    flush=True,
                )
            good = [r for r in out["fanout_runs"] if "deliveries_per_s" in r]
            if not good:
                raise ChildError(f"{setup.name} N={n}: no fan-out run completed")

            def median(key: str) -> float:
                return statistics.median(float(r[key]) for r in good)

            out["fanout"] = {
                key: median(key)
                for key in (
                    "deliveries_per_s",
                    "server_cpu_us_per_delivery",
                    "pg_cpu_us_per_event",
                    "redis_cpu_us_per_event",
                    "publish_ms_per_event",
                    "client_busy",
                    "cores_busy",
                    "other_cores",
                )
            }
            out["fanout"]["server_cpu_s_by_process"] = [
                statistics.median(float(r["server_cpu_s"][i]) for r in good)
                for i in range(len(servers))
            ]
            out["fanout"]["exact"] = all(r["exact"] for r in out["fanout_runs"])
            out["fanout"]["lost"] = sum(r["lost"] for r in out["fanout_runs"])
            lat, disturbed = self.quiet_burst(
                servers, client, n, LATENCY_EVENTS, LATENCY_RATE, "latency"
            )
            out["latency_run"] = lat
            out["disturbed_runs"] += disturbed
            seen = lat["client"]
            out["latency"] = {
                "p50_ms": seen["p50_ms"],
                "p99_ms": seen["p99_ms"],
                "max_ms": seen["max_ms"],
                "samples": seen["samples"],
                "seq_errors": seen["seq_errors"],
                "exact": lat["exact"],
                "other_cores": lat["other_cores"],
            }
            if "by_port" in seen:  # "publisher": streams on the publishing process
                names = ["publisher", *(f"process{i + 1}" for i in range(1, len(ports)))]
                out["latency"]["by_process"] = {
                    name: seen["by_port"].get(str(port))
                    for name, port in zip(names, ports, strict=True)
                }
            out["server_stats"] = [s.ask("stats", 10.0) for s in servers]
            bursts = [warm, *out["fanout_runs"], *out["disturbed_runs"], lat]
            out["events_published"] = sum(b["events"] for b in bursts)
            print(
                f"  {setup.name} N={n} latency: p50 {seen['p50_ms']:.2f} ms,"
                f" p99 {seen['p99_ms']:.2f} ms",
                flush=True,
            )
        out["seconds"] = time.monotonic() - started  # servers' start and stop included
        return out


# --- the report ---------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    header = (
        "config",
        "N",
        "deliveries/s",
        "server CPU µs/deliv",
        "PG µs/event",
        "Redis µs/event",
        "publish ms/event",
        "client busy",
        "cores busy",
        "p50 ms",
        "p99 ms",
    )
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for name, entry in results["configs"].items():
        for n, r in entry["by_n"].items():
            f, lat = r["fanout"], r["latency"]
            rows.append(
                (
                    name,
                    n,
                    f"{f['deliveries_per_s']:,.0f}",
                    f"{f['server_cpu_us_per_delivery']:.2f}",
                    f"{f['pg_cpu_us_per_event']:.0f}",
                    f"{f['redis_cpu_us_per_event']:.0f}",
                    f"{f['publish_ms_per_event']:.3f}",
                    f"{f['client_busy']:.0%}",
                    f"{f['cores_busy']:.2f}",
                    f"{lat['p50_ms']:.2f}",
                    f"{lat['p99_ms']:.2f}",
                )
            )
            if max(f["other_cores"], lat["other_cores"]) > DISTURBED:
                notes.append(
                    f"{name} N={n}: disturbed: other work used {f['other_cores']:.2f} cores"
                    f" during the fan-out bursts (median), {lat['other_cores']:.2f} during"
                    " the latency run"
                )
            if r["disturbed_runs"]:
                notes.append(
                    f"{name} N={n}: {len(r['disturbed_runs'])} burst(s) repeated because other"
                    " work used the cores meanwhile"
                )
            by_process = f["server_cpu_s_by_process"]
            if len(by_process) > 1:
                shares = ", ".join(
                    f"process {i + 1} {cpu / sum(by_process):.0%}"
                    for i, cpu in enumerate(by_process)
                )
                heard = [st.get("bus_received", 0) for st in r["server_stats"][1:]]
                notes.append(
                    f"{name} N={n}: server CPU split {shares}; events heard through Redis by"
                    f" the other process(es): {heard} of {r['events_published']} published"
                )
            for process, p in (lat.get("by_process") or {}).items():
                if p:
                    notes.append(
                        f"{name} N={n} latency of the streams on the {process}:"
                        f" p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms"
                    )
            if not (f["exact"] and lat["exact"] and r["warmup_exact"] and not lat["seq_errors"]):
                notes.append(f"{name} N={n}: {f['lost']} frames lost or out of order")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    if not any("lost" in note for note in notes):
        notes.append("delivery: every run exact (N*M frames, M per stream; latency runs in order)")
    return "\n".join(lines + notes)


def cost_table(costs: dict[str, Any]) -> str:
    """The cost of one event with no stream open, per store and bus."""
    header = (
        "store+bus (no stream)",
        "publish ms/event",
        "CPU µs/event: publisher",
        "other process",
        "PostgreSQL",
        "Redis",
    )
    rows = [header]
    for name, c in costs.items():
        cpu = c["server_cpu_us_per_event"]
        rows.append(
            (
                name,
                f"{c['publish_ms_per_event']:.3f}",
                f"{cpu[0]:.0f}",
                f"{cpu[1]:.0f}" if len(cpu) > 1 else "-",
                f"{c['pg_cpu_us_per_event']:.0f}",
                f"{c['redis_cpu_us_per_event']:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    disturbed = [name for name, c in costs.items() if c["other_cores"] > DISTURBED]
    if disturbed:
        lines.append("disturbed by other work on the machine: " + ", ".join(disturbed))
    return "\n".join(lines)


def revision() -> str:
    """The checkout measured: ``git describe --always --dirty``."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return done.stdout.strip()
    return ""


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the context managers: children, databases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 subscribers, 1 run")
    parser.add_argument("--out", default="", help="results file (default bench/cluster-results)")
    parser.add_argument("--no-pin", action="store_true", help="pin no process with taskset")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL, help="may CREATE DATABASE")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each measurement wait up to this many seconds for the machine to be"
        f" idle (< {QUIET_CORES} cores busy elsewhere); 0: do not wait",
    )
    parser.add_argument(
        "--patience",
        type=float,
        default=420.0,
        help="seconds into the run after which it no longer waits for a quiet machine nor"
        " repeats disturbed bursts (keeps a run on a busy machine bounded)",
    )
    parser.add_argument(
        "--no-costs", action="store_true", help="skip the cost of one event with no stream"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated configurations (default: all three)"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    nofile = raise_nofile()
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if not pin:
        print("note: no taskset pinning (--no-pin, taskset missing or one core)")
    setups = [s for s in SETUPS if not args.only or s.name in args.only.split(",")]
    ns = [200] if args.quick else [200, 1000]
    runs = 1 if args.quick else 3
    default = "cluster-results-quick" if args.quick else "cluster-results"
    out = Path(args.out) if args.out else HERE / default
    try:
        services = services_info(args.pg_admin_url, args.redis_url)
        for name in drop_leftovers(args.pg_admin_url):
            print(f"dropped {name}, left over by an earlier run")
    except Exception as exc:
        print(f"PostgreSQL or Redis unavailable: {exc}", file=sys.stderr)
        return 1
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[:3]
    results: dict[str, Any] = {
        "machine": {
            **machine(pin),
            **services,
            "loadavg_at_start": loadavg,
            "revision": revision(),
        },
        "params": {
            "quick": args.quick,
            "subscribers": ns,
            "events": EVENTS,
            "warmup_events": WARMUP,
            "size": SIZE,
            "fanout_runs": runs,
            "latency_events": LATENCY_EVENTS,
            "latency_rate": LATENCY_RATE,
            "users": USERS,
            "nofile": nofile,
            "pinned": pin,
        },
        "configs": {
            s.name: {
                "label": s.label,
                "processes": s.processes,
                "storage": s.storage,
                "bus": s.bus,
                "server_cores": list(s.server_cores) if pin else None,
                "client_core": s.client_core if pin else None,
                "by_n": {},
            }
            for s in setups
        },
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="trio-events-cluster-") as tmp:
        bench = Cluster(
            Path(tmp), pin, args.pg_admin_url, args.redis_url, args.quiet_wait, args.patience
        )
        try:
            if not args.no_costs:
                print(f"the cost of one event ({PUBLISH_ALONE} events, no stream)", flush=True)
                results["costs"] = {s.name: bench.costs(s, runs) for s in COST_SETUPS}
            for n in ns:
                for setup in setups:
                    print(f"{setup.name} ({setup.label}): {n} subscribers", flush=True)
                    by_n = results["configs"][setup.name]["by_n"]
                    by_n[str(n)] = bench.measure(setup, n, runs)
        except ChildError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C; SIGTERM, SIGHUP
            print("interrupted: every process stopped, every database dropped", file=sys.stderr)
            code = exc.code if isinstance(exc, SystemExit) else 130
            return code if isinstance(code, int) else 1
    results["seconds"] = time.monotonic() - started
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    if "costs" in results:
        print()
        print(cost_table(results["costs"]))
    print(f"\nwrote {out.with_suffix('.json')} in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        sys.exit(client_main(sys.argv[2:]))
    sys.exit(main())
