"""Helpers for the cluster tests: Redis, several server processes on one
PostgreSQL database, stream readers that run in the background, the log as
an oracle.

Redis.  :func:`require_redis` skips a test (fails it on CI, ``CI=true``)
when no Redis can be had: the shared one at ``$TRIO_EVENTS_TEST_REDIS``
(default ``redis://127.0.0.1:6379/0``) must answer ``PING``, or a
``redis-server`` binary must exist to start a private one.  :class:`RedisServer`
is such a private instance, without persistence, on a free port; it can be
SIGKILLed and started again on the same port.  The ``redis_url`` fixture
yields the shared Redis when it answers, else a private one.

Processes.  :func:`open_cluster` starts K ``trio_events serve`` processes
(:class:`~tests.fault_helpers.ServerProcess`), each on its own port with its
own data directory and log, all on one PostgreSQL database and one Redis, on
a pub/sub channel named for this cluster alone (so tests running in parallel
on one Redis never hear each other), and waits until every process says
``/readyz`` ready.  :class:`Supervisor` is ``serve --workers N`` with the
/proc look-ups the worker tests need (its children; which worker holds a
client's connection).

Streams.  :class:`Watcher` reads one stream in a background task and keeps
every frame, asserting strictly increasing eventIds; tests wait on it for a
condition (a message arrived, the stream closed), never for a time.
:func:`catch_up` reads the log through ``GET /api/v1/events?since=0`` on a
given process: the expectation every stream is compared with.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import attrs
import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from .fault_helpers import START_TIMEOUT, ServerProcess
from .helpers import (
    ADMIN_NAME,
    ADMIN_PASSWORD,
    USER_PASSWORD,
    ChildProcess,
    free_port,
    login,
    serve_argv,
    session_headers,
)

__all__ = [
    "DEGRADED",
    "READY",
    "REDIS_URL",
    "ChatUser",
    "Cluster",
    "Headers",
    "Json",
    "RedisServer",
    "Streams",
    "Supervisor",
    "Watcher",
    "add_user",
    "admin_headers",
    "alive",
    "catch_up",
    "child_pids",
    "connection_owner",
    "create_room",
    "events_stream",
    "metric",
    "new_channel",
    "open_clients",
    "open_cluster",
    "open_streams",
    "post",
    "readiness",
    "redis_url_fixture",
    "require_redis",
    "wait_readiness",
    "write_cluster_config",
]

Json = dict[str, Any]
Headers = dict[str, str]

# Read at import: the autouse fixture of conftest.py removes TRIO_EVENTS_* variables.
REDIS_URL = os.environ.get("TRIO_EVENTS_TEST_REDIS", "redis://127.0.0.1:6379/0")
REDIS_SERVER = shutil.which("redis-server")
PROBE_TIMEOUT = 1.0  # seconds a Redis gets to answer PING
REDIS_START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0  # seconds a SIGTERMed process gets before it is killed
POLL = 0.02  # seconds between two looks at a condition nothing signals
READY = {"status": "ready", "storage": "ok", "bus": "ok", "httpStatusCode": 200}
DEGRADED = {"status": "degraded", "storage": "ok", "bus": "unavailable", "httpStatusCode": 200}


# Redis: availability


def _ping(host: str, port: int) -> str | None:
    """Why the Redis at ``host:port`` does not answer PING, or None."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    if not reply.startswith(b"+PONG"):
        return f"it answered {reply!r} to PING"
    return None


@functools.cache
def _shared_problem() -> str | None:
    """Why the shared Redis cannot be used, or None; asked once per session."""
    parts = urlsplit(REDIS_URL)
    why = _ping(parts.hostname or "127.0.0.1", parts.port or 6379)
    return None if why is None else f"Redis at {REDIS_URL} is not usable: {why}"


def _redis_problem(private: bool) -> str | None:
    binary = None if REDIS_SERVER else "no redis-server on PATH to start a private Redis"
    if private:
        return binary
    shared = _shared_problem()
    if shared is None or binary is None:
        return None
    return f"{shared}, and {binary}"


def require_redis(*, private: bool = False) -> None:
    """Skip the test (fail it on CI) when no Redis can be had: the shared one or
    a private ``redis-server``; ``private=True``: the binary is required (the
    test kills its Redis)."""
    reason = _redis_problem(private)
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


async def redis_answers(port: int) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers PING now."""
    try:
        with trio.fail_after(PROBE_TIMEOUT):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                await stream.send_all(b"PING\r\n")
                reply = await stream.receive_some(64)
            finally:
                await stream.aclose()
    except (OSError, trio.BrokenResourceError, trio.TooSlowError):
        return False
    return reply.startswith(b"+PONG")


@attrs.define
class RedisServer(ChildProcess):
    """A private ``redis-server`` without persistence; ``start`` returns once it
    answers PING.  It can be SIGKILLed and started again on the same port."""

    LOG_NAME: ClassVar[str] = "redis"
    READY_POLL: ClassVar[float] = POLL

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        assert REDIS_SERVER is not None, "require_redis(private=True) first"
        argv = [
            *[REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"],
            *["--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
        ]
        ready = functools.partial(redis_answers, self.port)
        await self.launch(argv, ready, trio.current_time() + REDIS_START_TIMEOUT)


@pytest.fixture(name="redis_url")
async def redis_url_fixture(tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a Redis for the test: the shared one when it answers, else a
    private instance stopped afterwards.  Tests share a Redis safely because
    every cluster has its own channel."""
    require_redis()
    if _shared_problem() is None:
        yield REDIS_URL
        return
    async with private_redis(tmp_path) as server:
        yield server.url


@contextlib.asynccontextmanager
async def private_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A :class:`RedisServer` of the test's own, started, killed on exit."""
    server = RedisServer(tmp_path / "redis")
    try:
        await server.start()
        yield server
    finally:
        await server.ensure_dead()


# server processes


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    raise TypeError(f"no TOML for {value!r}")


def new_channel() -> str:
    """A Redis channel name no other test (or test run) uses."""
    return f"trio-events-test-{secrets.token_hex(8)}"


def write_cluster_config(
    path: Path,
    *,
    database_url: str,
    redis_url: str,
    channel: str,
    sections: Mapping[str, Mapping[str, object]] | None = None,
) -> Path:
    """A config file for PostgreSQL at ``database_url`` and the Redis bus on
    ``channel``, with ``sections`` merged over the test defaults."""
    data: dict[str, dict[str, object]] = {
        "server": {"host": "127.0.0.1", "log_level": "info", "graceful_timeout": 2.0},
        "storage": {"backend": "postgresql", "url": database_url},
        "bus": {"backend": "redis", "url": redis_url, "channel": channel},
        "events": {"heartbeat_interval": 5.0},
        "bootstrap": {"admin_password": ADMIN_PASSWORD},
    }
    for section, values in (sections or {}).items():
        data.setdefault(section, {}).update(values)
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


async def readiness(url: str) -> Json:
    """The body of ``GET /readyz`` (which must answer 200)."""
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, dict)
    return body


async def wait_readiness(urls: Sequence[str], expected: Json) -> None:
    """Poll ``/readyz`` of every process until each answers ``expected``
    (bounded by the caller)."""
    for url in urls:
        while await readiness(url) != expected:  # noqa: ASYNC110 - polling is the probe
            await trio.sleep(POLL)


@attrs.define
class Cluster:
    """K server processes sharing one database and one Redis channel."""

    nodes: list[ServerProcess]
    config_file: Path
    channel: str

    def url(self, index: int) -> str:
        return self.nodes[index].url

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def logs(self) -> str:
        parts = []
        for index, node in enumerate(self.nodes):
            for start in range(1, node.starts + 1):
                path = node.workdir / f"server-{start}.log"
                if path.exists():
                    parts.append(f"--- node{index} start {start} ---\n{path.read_text()}")
        return "\n".join(parts)

    async def stop_all(self) -> None:
        """SIGTERM every living process at once; each must exit 0, and no log
        may hold a traceback."""
        codes: dict[int, int] = {}

        async def stop(index: int) -> None:
            codes[index] = await self.nodes[index].stop()

        async with trio.open_nursery() as nursery:
            for index, node in enumerate(self.nodes):
                if node.process is not None:
                    nursery.start_soon(stop, index)
        logs = self.logs()
        assert all(code == 0 for code in codes.values()), (codes, logs)
        assert "Traceback" not in logs, logs


@contextlib.asynccontextmanager
async def open_cluster(
    tmp_path: Path,
    count: int,
    *,
    database_url: str,
    redis_url: str,
    **sections: Mapping[str, object],
) -> AsyncIterator[Cluster]:
    """Start ``count`` processes (concurrently) on one database and one Redis
    channel; yield once every one answers ``/readyz`` ready; kill what is left
    on exit."""
    channel = new_channel()
    config = write_cluster_config(
        tmp_path / "cluster.toml",
        database_url=database_url,
        redis_url=redis_url,
        channel=channel,
        sections=sections,
    )
    nodes = []
    for index in range(count):
        workdir = tmp_path / f"node{index}"
        workdir.mkdir()
        nodes.append(ServerProcess(workdir, config_file=config, data_dir=workdir / "data"))
    cluster = Cluster(nodes, config, channel)
    try:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(node.start)
        with trio.fail_after(START_TIMEOUT):
            await wait_readiness(cluster.urls, READY)
        yield cluster
    finally:
        for node in nodes:
            await node.ensure_dead()


@contextlib.asynccontextmanager
async def open_clients(urls: Sequence[str]) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One HTTP client per process."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=10.0))
            for url in urls
        ]


# users, rooms, messages over REST


@attrs.frozen
class ChatUser:
    """A user with a Web API token."""

    name: str
    user_id: int
    token: str

    @property
    def bearer(self) -> Headers:
        return {"Authorization": f"Bearer {self.token}"}


def _body(response: httpx.Response) -> Json:
    assert response.status_code == 200, (response.request.url, response.text)
    body = response.json()
    assert isinstance(body, dict)
    return body


async def admin_headers(client: httpx.AsyncClient) -> Headers:
    return session_headers(await login(client, ADMIN_NAME, ADMIN_PASSWORD))


async def add_user(
    client: httpx.AsyncClient, admin: Headers, name: str, *, token_client: httpx.AsyncClient
) -> ChatUser:
    """Create ``name`` through ``client`` and give it a token issued through
    ``token_client`` (another process, if the test wants)."""
    made = _body(
        await client.post(
            "/api/v1/users", json={"userName": name, "password": USER_PASSWORD}, headers=admin
        )
    )
    session = session_headers(await login(token_client, name, USER_PASSWORD))
    token = _body(await token_client.post("/api/v1/token", headers=session))["token"]
    assert isinstance(token, str)
    return ChatUser(name, int(made["userId"]), token)


async def create_room(
    client: httpx.AsyncClient,
    admin: Headers,
    name: str,
    room_type: str = "Public",
    member_ids: Sequence[int] = (),
) -> int:
    payload: Json = {"displayName": name, "roomType": room_type}
    if member_ids:
        payload["memberIds"] = list(member_ids)
    return int(_body(await client.post("/api/v1/rooms", json=payload, headers=admin))["roomId"])


async def post(client: httpx.AsyncClient, headers: Headers, room_id: int, content: str) -> int:
    """Post one message; return its id (the write is acknowledged)."""
    response = await client.post(
        f"/api/v1/rooms/{room_id}/messages", json={"content": content}, headers=headers
    )
    return int(_body(response)["messageId"])


async def catch_up(
    client: httpx.AsyncClient, headers: Headers, after: int, through: int
) -> list[Json]:
    """The frames the user may receive in (``after``, ``through``], read through
    this process's HTTP catch-up from ``since=0``, waiting until the process has
    routed ``through`` (bounded by the caller)."""
    frames: list[Json] = []
    cursor = 0
    while cursor < through:
        response = await client.get(
            "/api/v1/events", params={"since": str(cursor), "limit": "1000"}, headers=headers
        )
        body = _body(response)
        frames.extend(body["events"])
        if body["eventId"] == cursor:
            await trio.sleep(POLL)  # this process has not routed `through` yet
        cursor = int(body["eventId"])
    return [f for f in frames if after < f["eventId"] <= through]


# streams


@contextlib.asynccontextmanager
async def events_stream(
    base_url: str, headers: Mapping[str, str], since: int | None
) -> AsyncIterator[tuple[WebSocketConnection, Json]]:
    """``/api/v1/events`` at ``base_url`` with ``headers`` (cookie or bearer),
    resumed from ``since`` if given; yields it and its Hello data.

    trio-websocket leaves the TCP stream open after an abnormal close, so it
    is closed here (as in stream_helpers.bearer_stream).
    """
    url = base_url.replace("http", "ws", 1) + "/api/v1/events"
    if since is not None:
        url += f"?since={since}"
    encoded = [(name.encode(), value.encode()) for name, value in headers.items()]
    connection: WebSocketConnection | None = None
    try:
        async with open_websocket_url(
            url,
            extra_headers=encoded,
            message_queue_size=0,
            max_message_size=16 << 20,
            disconnect_timeout=5,
        ) as ws:
            connection = ws
            hello = json.loads(await ws.get_message())
            assert hello["type"] == "Hello", hello
            assert set(hello) == {"type", "data"}, hello
            yield ws, hello["data"]
    finally:
        if connection is not None:
            await connection._stream.aclose()


def created_ids(frame: Json) -> list[int]:
    if frame["type"] != "TextMessagesCreated":
        return []
    return [int(m["messageId"]) for m in frame["data"]["messages"]]


@attrs.define(eq=False)
class Watcher:
    """One stream read in the background: its Hello and every frame after it,
    whose eventIds must strictly increase (nothing twice, nothing backwards).
    ``close_code`` is set when the connection closed (1006: it was cut)."""

    label: str
    ws: WebSocketConnection
    hello: Json
    last: int  # the eventId of the newest frame (or where the stream started)
    frames: list[Json] = attrs.Factory(list)
    close_code: int | None = None
    ended: trio.Event = attrs.Factory(trio.Event)
    _changed: trio.Event = attrs.Factory(trio.Event)

    async def run(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                assert isinstance(message, str), message
                frame = json.loads(message)
                assert isinstance(frame, dict), frame
                assert set(frame) == {"type", "data", "eventId"}, (self.label, frame)
                event_id = frame["eventId"]
                assert isinstance(event_id, int), frame
                assert event_id > self.last, (self.label, "not increasing", event_id, self.last)
                self.last = event_id
                self.frames.append(frame)
                self._wake()
        except ConnectionClosed as exc:
            self.close_code = None if exc.reason is None else int(exc.reason.code)
        finally:
            self.ended.set()
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def event_ids(self) -> list[int]:
        return [f["eventId"] for f in self.frames]

    @property
    def message_ids(self) -> list[int]:
        return [m for f in self.frames for m in created_ids(f)]

    def event_of(self, message_id: int) -> int | None:
        """The eventId of the frame that created ``message_id``, if it arrived."""
        for frame in self.frames:
            if message_id in created_ids(frame):
                return int(frame["eventId"])
        return None

    async def wait_for(self, what: str, condition: Callable[[], bool]) -> None:
        """Until ``condition`` holds; fails if the stream ends first."""
        while not condition():
            if self.ended.is_set():
                raise AssertionError(
                    f"{self.label} closed (code {self.close_code}) before {what};"
                    f" it received {len(self.frames)} frames, the last {self.last}"
                )
            await self._changed.wait()

    async def wait_message(self, message_id: int) -> int:
        """Until the message has arrived; return the eventId of its frame."""
        await self.wait_for(f"message {message_id}", lambda: self.event_of(message_id) is not None)
        event_id = self.event_of(message_id)
        assert event_id is not None
        return event_id

    async def wait_closed(self) -> int | None:
        await self.ended.wait()
        return self.close_code

    def between(self, after: int, through: int) -> list[Json]:
        return [f for f in self.frames if after < f["eventId"] <= through]

    async def close(self) -> None:
        """The client disconnects (close 1000), as a client going away does."""
        await self.ws.aclose()
        await self.ws._stream.aclose()
        await self.ended.wait()


@attrs.define
class Streams:
    """Opens watchers whose streams close when the ``open_streams`` block ends."""

    stack: contextlib.AsyncExitStack
    nursery: trio.Nursery

    async def open(
        self, label: str, base_url: str, headers: Mapping[str, str], since: int | None = None
    ) -> Watcher:
        ws, hello = await self.stack.enter_async_context(events_stream(base_url, headers, since))
        start = int(hello["eventId"]) if since is None else since
        watcher = Watcher(label, ws, hello, start)
        self.nursery.start_soon(watcher.run)
        return watcher


@contextlib.asynccontextmanager
async def open_streams() -> AsyncIterator[Streams]:
    """The readers run in the outer nursery; the streams (each with trio-websocket's
    own nursery) live in the inner stack, which closes them first, so each
    reader then ends by itself."""
    async with trio.open_nursery() as nursery:
        async with contextlib.AsyncExitStack() as stack:
            yield Streams(stack, nursery)
        nursery.cancel_scope.cancel()


# serve --workers N


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def child_pids(parent: int) -> set[int]:
    """The living (not zombie) child processes of ``parent``, from /proc."""
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == parent and stat[0] != "Z":
                children.add(int(entry))
    return children


def _socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server side of the TCP connection from ``client_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (
                int(local.rsplit(":", 1)[1], 16) == server_port
                and int(remote.rsplit(":", 1)[1], 16) == client_port
            ):
                return int(fields[9])
    return None


def connection_owner(server_port: int, ws: WebSocketConnection, pids: Sequence[int]) -> int | None:
    """Which of ``pids`` holds the server side of ``ws``'s connection."""
    sock = ws._stream.socket  # type: ignore[attr-defined]  # a trio.SocketStream for ws://
    client_port = int(sock.getsockname()[1])
    inode = _socket_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            folder = f"/proc/{pid}/fd"
            for fd in os.listdir(folder):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{folder}/{fd}") == target:
                        return pid
    return None


@attrs.define
class Supervisor:
    """``trio_events serve --workers N`` as a child process."""

    config_file: Path
    workdir: Path
    workers: int
    port: int = attrs.field(factory=free_port)
    process: trio.Process | None = None
    seen_workers: set[int] = attrs.Factory(set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "supervisor.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        assert self.process is None
        workers = ["--workers", str(self.workers)]
        argv = serve_argv(self.port, self.workdir / "data", self.config_file, *workers)
        with self.log_path.open("wb") as log:
            self.process = await trio.lowlevel.open_process(
                argv, stdout=log, stderr=log, cwd=str(self.workdir)
            )

    def children(self) -> set[int]:
        """The living worker processes now (remembered for the clean-up)."""
        found = child_pids(self.pid)
        self.seen_workers |= found
        return found

    async def stop(self) -> tuple[int, float]:
        """SIGTERM; return the exit code and the seconds it took."""
        assert self.process is not None
        process, self.process = self.process, None
        started = trio.current_time()
        process.send_signal(signal.SIGTERM)
        try:
            with trio.fail_after(STOP_TIMEOUT):
                code = await process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                await process.wait()
        return code, trio.current_time() - started

    async def ensure_dead(self) -> None:
        """Kill the supervisor and every worker it ever had (workers run in
        their own session: nothing else would stop them)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            with trio.CancelScope(shield=True):
                await self.process.wait()
            self.process = None
        for pid in self.seen_workers:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def metric(url: str, name: str) -> float:
    """The value of the unlabelled metric ``name`` in the process's ``/metrics``."""
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    for line in response.text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics of {url}")
