"""Benchmark our event stream against the asyncio ``websockets`` broadcast peer.

    .venv/bin/python bench/run.py            # full: 200 and 1,000 subscribers, median of 3
    .venv/bin/python bench/run.py --quick    # 200 subscribers, one run, 1,000 idle streams

For each server (ours through ``open_server``; the peer built on
``websockets.asyncio.server.broadcast``) the server process is pinned to core
0 and the frame-counting client (``client.py``) to core 1 with ``taskset``.
For each subscriber count N the client opens N streams, then:

(a) fan-out: M = 2,000 events of ~200 bytes published as fast as the server
    takes them; deliveries/s = N*M / (last frame received - first publish),
    and server CPU (utime+stime from /proc/PID/stat, delta over the burst)
    per delivery.  Median of 3 runs (1 with --quick).  Every run must
    deliver exactly N*M frames, M to each stream, or it is reported as loss.
(b) latency: 50 events at 10/s; p50/p99 of (receipt - publish) over all
    N*50 frames, both stamped with time.monotonic_ns() on this host.
(c) memory per idle stream, on a fresh server: VmRSS before and after
    opening 2,000 and 5,000 idle streams (1,000 with --quick); the
    least-squares slope in KiB per stream.
(d) connection set-up: streams opened per second by the client (64
    handshakes in flight; ours counts a stream once its Hello arrived).

Writes ``bench/results.json`` (``results-quick.json`` with --quick) with every
raw number and the machine, prints a short table of our figures and their
ratios to the peer, and draws ``bench/results.png`` (``results-quick.png``).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import raise_nofile  # noqa: E402

SERVERS = ("ours", "peer")
EVENTS = 2000
SIZE = 200
LATENCY_EVENTS = 50
LATENCY_RATE = 10.0
USERS = 100
CLK_TCK = os.sysconf("SC_CLK_TCK")


class ChildError(RuntimeError):
    pass


class Child:
    """A child process that takes command lines on stdin and answers JSON lines."""

    def __init__(self, name: str, argv: list[str], core: int | None, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        prefix = ["taskset", "-c", str(core)] if core is not None else []
        self._log = open(self.log_path, "wb")  # noqa: SIM115  # closed in close()
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=HERE.parent,
        )
        assert self.proc.stdout is not None
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._out, False)
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._out, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChildError(f"{self.name}: no answer within {timeout:.0f} s{self.tail()}")
                if sel.select(left):
                    chunk = os.read(self._out, 65536)
                    if not chunk:
                        raise ChildError(f"{self.name} exited ({self.proc.poll()}){self.tail()}")
                    self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise ChildError(f"{self.name}: {answer['error']}")
        return answer

    def ask(self, line: str, timeout: float) -> dict[str, Any]:
        self.send(line)
        return self.read(timeout)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").strip()
            if text:
                return "\n--- " + self.name + " stderr (tail) ---\n" + text[-3000:]
        return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.ask("quit", 10.0)
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        self._log.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ChildError(f"no VmRSS for {pid}")


def machine(taskset: bool) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("trio", "wsproto", "hypercorn", "websockets", "trio-events"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "taskset": taskset,
        "packages": versions,
    }


class Bench:
    def __init__(self, quick: bool, tmp: Path, taskset: bool, profile: bool = False) -> None:
        self.quick = quick
        self.profile = profile
        self.tmp = tmp
        self.taskset = taskset
        self.children: list[Child] = []
        self.seq = 0

    def spawn(self, name: str, argv: list[str], core: int) -> Child:
        self.seq += 1
        child = Child(f"{self.seq:02d}-{name}", argv, core if self.taskset else None, self.tmp)
        self.children.append(child)
        return child

    def close(self, child: Child) -> None:
        child.close()
        self.children.remove(child)

    def close_all(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                child.close()
            if child.proc.poll() is None:
                child.proc.kill()
        self.children.clear()

    @contextlib.contextmanager
    def server(self, kind: str) -> Iterator[tuple[Child, list[str]]]:
        tokens_file = self.tmp / f"tokens-{self.seq + 1}.json"
        if kind == "ours":
            data_dir = self.tmp / f"data-{self.seq + 1}"
            argv = [
                "bench/serve_ours.py",
                "--tokens-file",
                str(tokens_file),
                "--data-dir",
                str(data_dir),
                "--users",
                str(USERS),
            ]
            if self.profile:
                argv += ["--profile", str(HERE / f"profile-ours-{self.seq + 1:02d}.txt")]
        else:
            argv = ["bench/serve_peer.py"]
        child = self.spawn(kind, argv, core=0)
        try:
            ready = child.read(120.0)
            client_args = ["--port", str(ready["port"])]
            if kind == "ours":
                client_args += ["--tokens-file", str(tokens_file), "--hello"]
            yield child, client_args
        finally:
            self.close(child)

    @contextlib.contextmanager
    def client(self, client_args: list[str]) -> Iterator[Child]:
        child = self.spawn("client", ["bench/client.py", *client_args], core=1)
        try:
            child.read(30.0)
            yield child
        finally:
            self.close(child)

    # --- the measurements --------------------------------------------------

    def burst(
        self, server: Child, client: Child, n: int, count: int, rate: float, mode: str
    ) -> dict[str, Any]:
        """Publish ``count`` events at ``rate`` and collect what the client saw."""
        expected = n * count
        timeout = 60.0 + expected / 5_000 + (count / rate if rate else 0.0)
        armed = client.ask(f"measure {count} {mode} {timeout}", 10.0)
        if armed["connections"] != n:
            raise ChildError(f"client has {armed['connections']} open streams, expected {n}")
        cpu0 = cpu_seconds(server.pid)
        published = server.ask(f"publish {count} {SIZE} {rate}", timeout)
        seen = client.read(timeout + 10.0)
        cpu1 = cpu_seconds(server.pid)
        elapsed = (seen["last_ns"] - published["t0_ns"]) / 1e9 if seen["last_ns"] else None
        lost = expected - min(seen["frames"], expected)
        exact = (
            seen["frames"] == expected
            and seen["min_per_conn"] == count
            and seen["max_per_conn"] == count
            and not seen["closes"]
        )
        result: dict[str, Any] = {
            "subscribers": n,
            "events": count,
            "rate": rate,
            "expected": expected,
            "received": seen["frames"],
            "lost": lost,
            "exact": exact,
            "publish_seconds": (published["t1_ns"] - published["t0_ns"]) / 1e9,
            "seconds": elapsed,
            "server_cpu_s": cpu1 - cpu0,
            "client_cpu_s": seen["client_cpu_s"],
            "client": seen,
        }
        if elapsed:
            result["deliveries_per_s"] = expected / elapsed
            result["server_cpu_us_per_delivery"] = (cpu1 - cpu0) / expected * 1e6
            result["client_busy"] = seen["client_cpu_s"] / elapsed
        return result

    def subscribers(self, kind: str, n: int, runs: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with self.server(kind) as (server, client_args), self.client(client_args) as client:
            opened = client.ask(f"open {n} 120", 150.0)
            out["setup"] = opened
            if opened["opened"] != n:
                raise ChildError(f"{kind}: opened {opened['opened']} of {n} streams: {opened}")
            time.sleep(0.5)
            warm = self.burst(server, client, n, 100, 0.0, "count")
            out["warmup_exact"] = warm["exact"]
            out["fanout_runs"] = []
            for i in range(runs):
                run = self.burst(server, client, n, EVENTS, 0.0, "count")
                out["fanout_runs"].append(run)
                print(
                    f"  {kind} N={n} fan-out run {i + 1}/{runs}:"
                    f" {run.get('deliveries_per_s', 0):,.0f} deliveries/s,"
                    f" {run.get('server_cpu_us_per_delivery', 0):.2f} µs CPU/delivery,"
                    f" received {run['received']}/{run['expected']}",
                    flush=True,
                )
            good = [r for r in out["fanout_runs"] if "deliveries_per_s" in r]
            out["fanout"] = {
                "deliveries_per_s": statistics.median(r["deliveries_per_s"] for r in good),
                "server_cpu_us_per_delivery": statistics.median(
                    r["server_cpu_us_per_delivery"] for r in good
                ),
                "client_busy": statistics.median(r["client_busy"] for r in good),
                "exact": all(r["exact"] for r in out["fanout_runs"]),
                "lost": sum(r["lost"] for r in out["fanout_runs"]),
            }
            lat = self.burst(server, client, n, LATENCY_EVENTS, LATENCY_RATE, "latency")
            out["latency_run"] = lat
            out["latency"] = {
                "p50_ms": lat["client"]["p50_ms"],
                "p99_ms": lat["client"]["p99_ms"],
                "max_ms": lat["client"]["max_ms"],
                "samples": lat["client"]["samples"],
                "seq_errors": lat["client"]["seq_errors"],
                "exact": lat["exact"],
            }
            print(
                f"  {kind} N={n} latency: p50 {lat['client']['p50_ms']:.2f} ms,"
                f" p99 {lat['client']['p99_ms']:.2f} ms",
                flush=True,
            )
        return out

    def memory(self, kind: str, steps: list[int]) -> dict[str, Any]:
        points: list[tuple[int, int]] = []
        setups = []
        with self.server(kind) as (server, client_args), self.client(client_args) as client:
            time.sleep(1.0)
            points.append((0, rss_kib(server.pid)))
            total = 0
            for step in steps:
                opened = client.ask(f"open {step - total} 300", 330.0)
                setups.append(opened)
                if opened["opened"] != step - total:
                    raise ChildError(f"{kind}: opened {opened['opened']} of {step - total}")
                total = step
                time.sleep(1.0)
                points.append((total, rss_kib(server.pid)))
            streams = [float(p[0]) for p in points]
            rss = [float(p[1]) for p in points]
            slope = statistics.linear_regression(streams, rss).slope
        rate = sum(s["opened"] for s in setups) / sum(s["seconds"] for s in setups)
        print(
            f"  {kind} memory: {slope:.1f} KiB per idle stream; set-up {rate:,.0f} streams/s",
            flush=True,
        )
        return {
            "points": [{"streams": s, "rss_kib": r} for s, r in points],
            "kib_per_stream": slope,
            "setup": setups,
            "setup_rate": rate,
        }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    def add(label: str, ours: float | None, peer: float | None, spec: str, target: str) -> None:
        r = ratio(ours, peer)
        rows.append((label, fmt(ours, spec), fmt(peer, spec), fmt(r, ".2f") + "x", target))

    servers = results["servers"]
    for n in results["params"]["subscribers"]:
        key = str(n)
        o, p = servers["ours"]["by_n"][key], servers["peer"]["by_n"][key]
        add(
            f"N={n} deliveries/s",
            o["fanout"]["deliveries_per_s"],
            p["fanout"]["deliveries_per_s"],
            ",.0f",
            ">= 1.2x",
        )
        add(
            f"N={n} server CPU µs/delivery",
            o["fanout"]["server_cpu_us_per_delivery"],
            p["fanout"]["server_cpu_us_per_delivery"],
            ".2f",
            "<= 0.5x",
        )
        add(f"N={n} latency p50 ms", o["latency"]["p50_ms"], p["latency"]["p50_ms"], ".2f", "")
        add(
            f"N={n} latency p99 ms",
            o["latency"]["p99_ms"],
            p["latency"]["p99_ms"],
            ".2f",
            "<= 1.0x" + ("; < 15 ms" if n == 1000 else ""),
        )
        add(f"N={n} set-up streams/s", o["setup"]["rate"], p["setup"]["rate"], ",.0f", "")
        add(
            f"N={n} client busy (fan-out)",
            o["fanout"]["client_busy"],
            p["fanout"]["client_busy"],
            ".0%",
            "",
        )
    top = results["params"]["memory_steps"][-1]
    om, pm = servers["ours"]["memory"], servers["peer"]["memory"]
    add(
        f"memory KiB/idle stream (0..{top})",
        om["kib_per_stream"],
        pm["kib_per_stream"],
        ".1f",
        "<= 1.0x",
    )
    add(f"set-up streams/s (0..{top})", om["setup_rate"], pm["setup_rate"], ",.0f", "")
    header = ("", "ours", "peer", "ours/peer", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    loss = [
        f"{kind} N={n}: {servers[kind]['by_n'][str(n)]['fanout']['lost']} frames lost"
        " or out of order (see results)"
        for kind in SERVERS
        for n in results["params"]["subscribers"]
        if not servers[kind]["by_n"][str(n)]["fanout"]["exact"]
        or not servers[kind]["by_n"][str(n)]["latency"]["exact"]
        or not servers[kind]["by_n"][str(n)]["warmup_exact"]
        or servers[kind]["by_n"][str(n)]["latency"]["seq_errors"]
    ]
    lines.append(
        "delivery: "
        + (
            "; ".join(loss)
            if loss
            else "every run exact (N*M frames, M per stream; latency runs in order)"
        )
    )
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = results["params"]["subscribers"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, label in (("ours", "trio_events"), ("peer", "websockets broadcast()")):
        by_n = results["servers"][kind]["by_n"]
        ax1.plot(ns, [by_n[str(n)]["fanout"]["deliveries_per_s"] for n in ns], "o-", label=label)
        ax2.plot(ns, [by_n[str(n)]["latency"]["p99_ms"] for n in ns], "o-", label=label)
    ax1.set_title(f"fan-out: {EVENTS} events of ~{SIZE} B")
    ax1.set_xlabel("subscribers")
    ax1.set_ylabel("deliveries/s")
    ax1.set_ylim(bottom=0)
    ax2.set_title(f"latency p99: {LATENCY_EVENTS} events at {LATENCY_RATE:g}/s")
    ax2.set_xlabel("subscribers")
    ax2.set_ylabel("ms")
    ax2.set_ylim(bottom=0)
    for ax in (ax1, ax2):
        ax.set_xticks(ns)
        ax.grid(alpha=0.3)
        ax.legend()
    m = results["machine"]
    fig.suptitle(
        f"{m['cpu_model']}, {m['nproc']} cores, Python {m['python']}, {m['date'][:10]}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 subscribers, 1 run")
    parser.add_argument("--out", default="", help="results file stem (default bench/results)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run our server under cProfile, top entries to bench/profile-ours-*.txt"
        " (slows it down: the figures of such a run are not comparable)",
    )
    args = parser.parse_args()
    nofile = raise_nofile()
    taskset = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if not taskset:
        print("note: taskset unavailable or one core: server and client are not pinned")
    ns = [200] if args.quick else [200, 1000]
    runs = 1 if args.quick else 3
    steps = [1000] if args.quick else [2000, 5000, 19000]
    stem = Path(args.out) if args.out else HERE / ("results-quick" if args.quick else "results")
    results: dict[str, Any] = {
        "machine": machine(taskset),
        "params": {
            "quick": args.quick,
            "subscribers": ns,
            "events": EVENTS,
            "size": SIZE,
            "fanout_runs": runs,
            "latency_events": LATENCY_EVENTS,
            "latency_rate": LATENCY_RATE,
            "memory_steps": steps,
            "users": USERS,
            "nofile": nofile,
            "server_core": 0 if taskset else None,
            "client_core": 1 if taskset else None,
        },
        "servers": {kind: {"by_n": {}} for kind in SERVERS},
    }
    with tempfile.TemporaryDirectory(prefix="trio-events-bench-") as tmp:
        bench = Bench(args.quick, Path(tmp), taskset, args.profile)
        try:
            for kind in SERVERS:
                for n in ns:
                    print(f"{kind}: {n} subscribers", flush=True)
                    results["servers"][kind]["by_n"][str(n)] = bench.subscribers(kind, n, runs)
                print(f"{kind}: memory", flush=True)
                results["servers"][kind]["memory"] = bench.memory(kind, steps)
        except ChildError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            bench.close_all()
    ratios: dict[str, Any] = {}
    for n in ns:
        o = results["servers"]["ours"]["by_n"][str(n)]
        p = results["servers"]["peer"]["by_n"][str(n)]
        ratios[str(n)] = {
            "deliveries_per_s": ratio(
                o["fanout"]["deliveries_per_s"], p["fanout"]["deliveries_per_s"]
            ),
            "server_cpu_us_per_delivery": ratio(
                o["fanout"]["server_cpu_us_per_delivery"], p["fanout"]["server_cpu_us_per_delivery"]
            ),
            "p99_ms": ratio(o["latency"]["p99_ms"], p["latency"]["p99_ms"]),
        }
    ratios["memory_kib_per_stream"] = ratio(
        results["servers"]["ours"]["memory"]["kib_per_stream"],
        results["servers"]["peer"]["memory"]["kib_per_stream"],
    )
    results["ratios"] = ratios
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, stem.with_suffix(".png"))
    print()
    print(table(results))
    print(f"\nwrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
