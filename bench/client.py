"""A minimal frame-counting WebSocket client: many connections, one core, no library.

    python bench/client.py --port P [--tokens-file FILE] [--hello] [--concurrency 64]

It exists so that the client is not what limits the measurement: raw
non-blocking sockets under one ``epoll`` selector, a hand-written client
handshake and a frame parser that only looks at the two-to-four header bytes
of each frame (server frames are unmasked).  Pings are answered with masked
pongs, so server heartbeats keep the streams open during long runs.

Commands, one per stdin line, each answered with one JSON line on stdout:

``open K``
    open K more connections (at most ``--concurrency`` handshakes in flight),
    each with ``Authorization: Bearer TOKEN`` (tokens used round-robin) when
    ``--tokens-file`` is given; with ``--hello`` a connection counts as open
    once its first frame (our ``Hello``) arrived, otherwise once the 101
    response arrived.  Reports how many opened, failed, and streams/s.
``measure PER_CONN MODE TIMEOUT``
    answers ``{"armed": true}`` at once, then counts data frames until every
    open connection received PER_CONN of them (or TIMEOUT seconds), waits a
    short grace period for surplus frames, and reports the totals, the
    monotonic time of the first and of the last frame, per-connection
    minimum and maximum, closes, and this process's CPU time.  MODE
    ``latency`` also reads ``"ts"`` and ``"seq"`` from every frame: latency
    is ``time.monotonic_ns()`` at receipt minus ``ts`` (the publisher's
    ``time.monotonic_ns()``: one host, one clock), and sequence numbers
    must arrive in order on each connection.  MODE ``count`` only counts.
``close`` / ``quit``
    close every connection (and exit).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import hashlib
import json
import os
import selectors
import socket
import sys
import time
from typing import Any

from bench_common import emit, raise_nofile

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RECV = 262_144
GRACE = 0.3  # seconds to wait for surplus frames after the expected count

CONNECTING, HANDSHAKE, HELLO, OPEN, CLOSED = range(5)


class Conn:
    __slots__ = (
        "accept",
        "buf",
        "close_code",
        "count",
        "next_seq",
        "request",
        "seq_errors",
        "sock",
        "state",
    )

    def __init__(self, sock: socket.socket, request: bytes, accept: bytes) -> None:
        self.sock = sock
        self.request = request
        self.accept = accept
        self.state = CONNECTING
        self.buf = b""
        self.count = 0
        self.next_seq = 0
        self.seq_errors = 0
        self.close_code: int | None = None


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index] / 1e6  # ms


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.host = "127.0.0.1"
        self.port: int = args.port
        self.path: str = args.path
        self.hello: bool = args.hello
        self.concurrency: int = args.concurrency
        self.tokens: list[str] = []
        if args.tokens_file:
            with open(args.tokens_file) as f:
                self.tokens = json.load(f)
        self.sel = selectors.EpollSelector()
        self.conns: dict[int, Conn] = {}
        self.opened = 0  # connections ever opened (token round-robin)
        self.stdin = sys.stdin.fileno()
        os.set_blocking(self.stdin, False)
        self.sel.register(self.stdin, selectors.EVENT_READ, None)
        self.stdin_buf = b""
        self.quit = False
        # measurement state
        self.mode = ""
        self.measuring = False
        self.per_conn = 0
        self.total = 0
        self.target = 0
        self.first_ns = 0
        self.last_ns = 0
        self.lat: list[int] = []
        self.closes: dict[str, int] = {}
        # opening state
        self.to_open = 0
        self.in_flight = 0
        self.open_ok = 0
        self.open_failed = 0
        self.fail_reasons: dict[str, int] = {}

    # --- connections -------------------------------------------------------

    def start_one(self) -> None:
        key = base64.b64encode(os.urandom(16))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key.decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.tokens:
            lines.append(f"Authorization: Bearer {self.tokens[self.opened % len(self.tokens)]}")
        self.opened += 1
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        conn = Conn(sock, request, accept)
        err = sock.connect_ex((self.host, self.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.open_done(None, f"connect errno {err}")
            return
        self.conns[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_WRITE, conn)
        self.in_flight += 1

    def open_done(self, conn: Conn | None, failure: str | None) -> None:
        if conn is not None:
            self.in_flight -= 1
        if failure is None:
            self.open_ok += 1
        else:
            self.open_failed += 1
            self.fail_reasons[failure] = self.fail_reasons.get(failure, 0) + 1
            if conn is not None:
                self.drop(conn)

    def drop(self, conn: Conn) -> None:
        if conn.state == CLOSED:
            return
        conn.state = CLOSED
        fd = conn.sock.fileno()
        self.sel.unregister(conn.sock)
        self.conns.pop(fd, None)
        conn.sock.close()

    def on_writable(self, conn: Conn) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.open_done(conn, f"connect errno {err}")
            return
        conn.sock.send(conn.request)  # a few hundred bytes into an empty buffer
        conn.state = HANDSHAKE
        self.sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def on_handshake(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(RECV)
        except OSError as exc:
            self.open_done(conn, f"recv {exc.errno}")
            return
        if not data:
            self.open_done(conn, "eof in handshake")
            return
        conn.buf += data
        head, sep, rest = conn.buf.partition(b"\r\n\r\n")
        if not sep:
            return
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            self.open_done(conn, status.decode("latin-1"))
            return
        if conn.accept not in head:
            self.open_done(conn, "bad Sec-WebSocket-Accept")
            return
        conn.buf = b""
        if self.hello:
            conn.state = HELLO
        else:
            conn.state = OPEN
            self.open_done(conn, None)
        if rest:
            self.frames(conn, rest)

    # --- frames ------------------------------------------------------------

    def send_control(self, conn: Conn, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        with contextlib.suppress(OSError):
            conn.sock.send(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def frames(self, conn: Conn, data: bytes) -> None:
        """Parse every complete frame in ``conn.buf + data``; keep the remainder."""
        buf = conn.buf + data if conn.buf else data
        n = len(buf)
        pos = 0
        counted = 0
        latency = self.mode == "latency" and self.measuring
        now = time.monotonic_ns()
        while n - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1]
            if length < 126:
                start = pos + 2
            elif length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            else:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            opcode = b0 & 0x0F
            if opcode < 3:  # text, binary or continuation
                if b0 & 0x80:
                    if conn.state == HELLO:
                        conn.state = OPEN
                        self.open_done(conn, None)
                    else:
                        counted += 1
                        if latency:
                            i = buf.find(b'"ts":', start, end) + 5
                            j = buf.find(b",", i, end)
                            self.lat.append(now - int(buf[i:j]))
                            i = buf.find(b'"seq":', j, end) + 6
                            seq = int(buf[i : buf.find(b",", i, end)])
                            if seq != conn.next_seq:
                                conn.seq_errors += 1
                            conn.next_seq = seq + 1
            elif opcode == 9:  # ping
                self.send_control(conn, 0xA, buf[start:end])
            elif opcode == 8:  # close
                code = (buf[start] << 8) | buf[start + 1] if length >= 2 else 1005
                conn.close_code = code
                self.closes[str(code)] = self.closes.get(str(code), 0) + 1
                self.send_control(conn, 0x8, buf[start : start + 2])
                conn.buf = b""
                if conn.state == HELLO:
                    self.open_done(conn, f"closed {code} before hello")
                else:
                    self.drop(conn)
                return
            pos = end
        conn.buf = buf[pos:] if pos < n else b""
        if counted:
            conn.count += counted
            if self.measuring:
                if not self.first_ns:
                    self.first_ns = now
                self.total += counted
                if self.total >= self.target and not self.last_ns:
                    self.last_ns = now

    def on_readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(RECV)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.closes["eof"] = self.closes.get("eof", 0) + 1
            if conn.state == HELLO:
                self.open_done(conn, "eof before hello")
            else:
                self.drop(conn)
            return
        self.frames(conn, data)

    # --- the loop ----------------------------------------------------------

    def poll(self, timeout: float) -> None:
        for key, mask in self.sel.select(timeout):
            conn = key.data
            if conn is None:
                self.read_stdin()
            elif conn.state >= HELLO:
                if conn.state != CLOSED:
                    self.on_readable(conn)
            elif conn.state == HANDSHAKE:
                self.on_handshake(conn)
            elif mask & selectors.EVENT_WRITE:
                self.on_writable(conn)

    def read_stdin(self) -> None:
        try:
            chunk = os.read(self.stdin, 4096)
        except BlockingIOError:
            return
        if not chunk:
            self.quit = True
            return
        self.stdin_buf += chunk

    def next_command(self) -> list[str] | None:
        while b"\n" not in self.stdin_buf:
            if self.quit:
                return None
            self.poll(1.0)
        line, _, self.stdin_buf = self.stdin_buf.partition(b"\n")
        return line.decode().split()

    def cmd_open(self, count: int, timeout: float) -> dict[str, Any]:
        self.open_ok = self.open_failed = 0
        self.fail_reasons = {}
        remaining = count
        t0 = time.monotonic()
        deadline = t0 + timeout
        while self.open_ok + self.open_failed < count and time.monotonic() < deadline:
            while remaining and self.in_flight < self.concurrency:
                remaining -= 1
                self.start_one()
            self.poll(0.05)
        seconds = time.monotonic() - t0
        for conn in [c for c in self.conns.values() if c.state < OPEN]:
            self.open_done(conn, "timeout")
        return {
            "opened": self.open_ok,
            "failed": self.open_failed + remaining,
            "failures": self.fail_reasons,
            "seconds": seconds,
            "rate": self.open_ok / seconds if seconds > 0 else 0.0,
            "open_now": sum(1 for c in self.conns.values() if c.state == OPEN),
        }

    def cmd_measure(self, per_conn: int, mode: str, timeout: float) -> dict[str, Any]:
        live = [c for c in self.conns.values() if c.state == OPEN]
        for conn in live:
            conn.count = 0
            conn.next_seq = 0
            conn.seq_errors = 0
        self.mode = mode
        self.per_conn = per_conn
        self.target = per_conn * len(live)
        self.total = 0
        self.first_ns = self.last_ns = 0
        self.lat = []
        self.closes = {}
        self.measuring = True
        emit({"armed": True, "connections": len(live), "expected": self.target})
        cpu0 = cpu_seconds()
        deadline = time.monotonic() + timeout
        while not self.last_ns and time.monotonic() < deadline:
            self.poll(0.05)
        cpu1 = cpu_seconds()
        grace = time.monotonic() + GRACE
        while time.monotonic() < grace:
            self.poll(0.05)
        self.measuring = False
        counts = [c.count for c in live]
        lat = sorted(self.lat)
        result: dict[str, Any] = {
            "mode": mode,
            "connections": len(live),
            "expected": self.target,
            "frames": sum(counts),
            "complete": self.total >= self.target,
            "min_per_conn": min(counts, default=0),
            "max_per_conn": max(counts, default=0),
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "closes": self.closes,
            "client_cpu_s": cpu1 - cpu0,
        }
        if mode == "latency":
            result.update(
                samples=len(lat),
                p50_ms=percentile(lat, 0.50),
                p99_ms=percentile(lat, 0.99),
                max_ms=lat[-1] / 1e6 if lat else float("nan"),
                seq_errors=sum(c.seq_errors for c in live),
            )
        return result

    def cmd_close(self) -> dict[str, Any]:
        closed = 0
        for conn in list(self.conns.values()):
            if conn.state == OPEN:
                self.send_control(conn, 0x8, (1000).to_bytes(2, "big"))
            self.drop(conn)
            closed += 1
        return {"closed": closed}

    def run(self) -> None:
        emit({"ready": True, "pid": os.getpid()})
        while True:
            words = self.next_command()
            if words is None:
                break
            if not words:
                continue
            if words[0] == "open":
                timeout = float(words[2]) if len(words) > 2 else 120.0
                emit(self.cmd_open(int(words[1]), timeout))
            elif words[0] == "measure":
                emit(self.cmd_measure(int(words[1]), words[2], float(words[3])))
            elif words[0] == "close":
                emit(self.cmd_close())
            elif words[0] == "quit":
                emit(self.cmd_close())
                break
            else:
                emit({"error": f"unknown command {words[0]!r}"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/api/v1/events")
    parser.add_argument("--tokens-file", default="")
    parser.add_argument("--hello", action="store_true", help="wait for a first frame (Hello)")
    parser.add_argument("--concurrency", type=int, default=64)
    raise_nofile()
    Client(parser.parse_args()).run()
