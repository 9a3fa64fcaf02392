"""The README's commands work as written: the curl tour and ``trio-events tail``.

The blocks are taken from README.md itself and run with bash in a fresh
directory against a real ``trio-events serve`` process, with only the port
and the path of the command replaced.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from .contract_helpers import contract as load_contract
from .helpers import free_port, healthy, reap, stop_process

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
CLI = str(Path(sys.executable).parent / "trio-events")
ADMIN_PASSWORD = "admin-password-1"


def block_after(heading: str) -> str:
    """The first ```sh block after ``heading``."""
    rest = README[README.index(heading) :]
    match = re.search(r"```sh\n(.*?)```", rest, re.S)
    assert match is not None, heading
    return match.group(1)


class Served:
    def __init__(self, cwd: Path, port: int, env: dict[str, str]) -> None:
        self.cwd, self.port, self.env = cwd, port, env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def adapt(self, script: str) -> str:
        return script.replace("http://127.0.0.1:7777", self.url).replace(
            ".venv/bin/trio-events", CLI
        )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    shutil.copyfile(REPO / "config.toml", tmp_path / "config.toml")
    port = free_port()
    env = dict(os.environ)
    env.update(
        TRIO_EVENTS_SERVER__PORT=str(port),
        TRIO_EVENTS_BOOTSTRAP__ADMIN_PASSWORD=ADMIN_PASSWORD,
        TRIO_EVENTS_SERVER__LOG_LEVEL="warning",
    )
    process = await trio.lowlevel.open_process(
        [CLI, "serve"], cwd=tmp_path, env=env, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(30):
            while not await healthy(port):
                assert process.poll() is None, "the server did not start"
                await trio.sleep(0.1)
        yield Served(tmp_path, port, env)
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(20):
            await process.wait()
        await reap(process)


async def test_the_curl_tour_runs_as_written(served: Served) -> None:
    script = served.adapt(block_after("## A five-minute tour with curl"))
    with trio.fail_after(60):
        result = await trio.run_process(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=served.cwd,
            env=served.env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    # curl prints the bodies back to back: split them at "}{" boundaries
    answers = [
        json.loads(text) for text in re.split(r"(?<=\})(?=\{)", result.stdout.decode().strip())
    ]
    # What the README says comes back, in order.
    assert len(answers) == 15
    assert [answer["httpStatusCode"] for answer in answers] == [200] * 12 + [403, 200, 200]
    assert answers[0]["userId"] == 2  # alice, after the admin
    assert [room["displayName"] for room in answers[1]["rooms"]] == ["General", "Ops"]
    assert [room["unreadMessageCount"] for room in answers[1]["rooms"]] == [0, 0]
    assert answers[2]["messageId"] == 1
    assert answers[4]["message"]["text"] == "Hello, whole team"
    assert answers[5]["userId"] == 3  # bob
    for before_after, unread in ((answers[6], 1), (answers[8], 0)):
        assert [room["displayName"] for room in before_after["rooms"]] == ["General"]
        assert before_after["rooms"][0]["unreadMessageCount"] == unread
    (message,) = answers[9]["messages"]
    assert message["text"] == "Hello, whole team"
    assert message["commentCount"] == 1
    assert [comment["text"] for comment in answers[10]["messages"]] == ["A comment"]
    flags = answers[11]["roomPermissions"]["permissions"]
    assert flags["canSendMessagesInMainThread"] is True
    assert flags["canEditOrDeleteOwnMessagesInMainThread"] is True
    assert answers[12]["errorText"] in " ".join(README.split())
    assert answers[-1]["userId"] == 2  # the bearer token is alice's


async def test_tail_prints_the_stream_as_written(served: Served) -> None:
    with trio.fail_after(60):
        for name in ("alice", "bob"):
            await trio.run_process(
                [CLI, "user", "add", name, "--password", f"{name}-secret-1"],
                cwd=served.cwd,
                env=served.env,
                capture_stderr=True,
            )
        await trio.run_process(
            [CLI, "room", "add", "General", "--type", "Public"],
            cwd=served.cwd,
            env=served.env,
            capture_stderr=True,
        )
        first, second = served.adapt(block_after("## Watching the stream")).strip().splitlines()
        tails = []
        for line in (first, second):
            command = line.split("#")[0].strip().replace("tail ", f"tail --url {served.url} ", 1)
            tails.append(
                await trio.lowlevel.open_process(
                    ["bash", "-c", f"exec {command}"],
                    cwd=served.cwd,
                    env=served.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        try:
            outputs = [await read_lines(tail, 1) for tail in tails]  # the Hellos
            assert all(json.loads(lines[0])["type"] == "Hello" for lines in outputs)
            async with httpx.AsyncClient(base_url=served.url) as client:
                await client.post(
                    "/api/v1/login", json={"userName": "alice", "password": "alice-secret-1"}
                )
                response = await client.post(
                    "/api/v1/rooms/1/messages", json={"content": "seen by both"}
                )
                assert response.status_code == 200
            for tail in tails:
                # the CLI's RoomCreated (another process: the broker's poll
                # finds it) may come first
                frame = json.loads((await read_lines(tail, 1))[0])
                if frame["type"] == "RoomCreated":
                    frame = json.loads((await read_lines(tail, 1))[0])
                assert frame["type"] == "TextMessagesCreated"
                assert frame["data"]["messages"][0]["text"] == "seen by both"
                assert json.loads((await read_lines(tail, 1))[0])["type"] == "RoomUpdated"
        finally:
            for tail in tails:
                tail.send_signal(signal.SIGINT)
            for tail in tails:
                with trio.move_on_after(10):
                    await tail.wait()
                if tail.returncode is None:
                    tail.kill()
                    await tail.wait()
        assert [tail.returncode for tail in tails] == [0, 0]


async def read_lines(process: trio.Process, count: int) -> list[str]:
    """The next ``count`` lines of ``tail``; each must be a frame of the contract."""
    assert process.stdout is not None
    buffer = getattr(process, "_test_buffer", b"")
    while buffer.count(b"\n") < count:
        chunk = await process.stdout.receive_some(65536)
        assert chunk, "tail ended early"
        buffer += chunk
    *lines, rest = buffer.split(b"\n", count)
    process._test_buffer = rest  # type: ignore[attr-defined]
    texts = [line.decode() for line in lines]
    for text in texts:
        assert load_contract().check_frame(text, "tail output") == []
    return texts


async def test_run_serve_starts_and_stops(tmp_path: Path) -> None:
    """The README's first command: ``./run serve`` (here with a free port and a
    temporary data directory), then SIGTERM."""
    port = free_port()
    env = dict(os.environ)
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [
                *[str(REPO / "run"), "serve", "--port", str(port), "--host", "127.0.0.1"],
                *["--data-dir", str(tmp_path)],
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            with trio.fail_after(120):  # may install into .venv on a fresh checkout
                while not await healthy(port):
                    assert process.poll() is None, log.read_text()
                    await trio.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                code = await process.wait()
        finally:
            await reap(process)
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "created the first administrator user=admin password=" in text
    assert "stopped" in text


async def test_run_serve_refuses_an_impossible_port() -> None:
    """The README's example of a configuration error, as written."""
    env = dict(os.environ)
    env["TRIO_EVENTS_SERVER__PORT"] = "70000"
    with trio.fail_after(120):
        result = await trio.run_process(
            [str(REPO / "run"), "serve"],
            cwd=REPO,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 2
    expected = "trio-events: error: server.port: must be between 0 and 65535, got 70000"
    assert expected in README
    assert result.stderr.decode().strip().splitlines()[-1] == expected


def blocks_after(heading: str) -> list[str]:
    """Every ```sh block of the section that starts at ``heading``."""
    rest = README[README.index(heading) + len(heading) :]
    section = rest[: rest.index("\n## ")]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def end_of(log: Path) -> str:
    return log.read_text()[-3000:]


async def wait_healthy(process: trio.Process, port: int, log: Path) -> None:
    with trio.fail_after(120):  # ./run may install into .venv on a fresh checkout
        while not await healthy(port):
            assert process.poll() is None, end_of(log)
            await trio.sleep(0.2)


@pytest.mark.slow
async def test_the_scaling_commands_run_as_written(tmp_path: Path) -> None:
    """Both Scaling blocks: ``--workers 2``, then two processes on two ports,
    on a database of their own (the README's name with a unique suffix)."""
    from .cluster_helpers import new_channel, require_redis
    from .pg_helpers import require_postgres

    require_postgres()
    require_redis()
    workers_block, two_block = blocks_after("## Scaling")
    database = f"trio_events_readme_{os.getpid()}_{free_port()}"
    setup = workers_block.replace("trio_events\n", f"{database}\n")
    assert setup.count(database) == 2, "createdb and the URL name the database"
    port = free_port()
    setup = setup.replace("./run serve --workers 2", f"exec ./run serve --workers 2 --port {port}")
    env = dict(os.environ)
    env.update(
        TRIO_EVENTS_SERVER__DATA_DIR=str(tmp_path / "data"),
        TRIO_EVENTS_BOOTSTRAP__ADMIN_PASSWORD=ADMIN_PASSWORD,
        TRIO_EVENTS_BUS__CHANNEL=new_channel(),
    )
    log = tmp_path / "serve.log"
    try:
        with log.open("wb") as stderr:
            workers = await trio.lowlevel.open_process(
                ["bash", "-euo", "pipefail", "-c", setup],
                cwd=REPO,
                env=env,
                stdout=stderr,
                stderr=stderr,
            )
            try:
                await wait_healthy(workers, port, log)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    ready = (await client.get("/readyz")).json()
                    login = await client.post(
                        "/api/v1/login", json={"userName": "admin", "password": ADMIN_PASSWORD}
                    )
            finally:
                assert await stop_process(workers) == 0, end_of(log)
        assert ready == {"status": "ready", "storage": "ok", "bus": "ok", "httpStatusCode": 200}
        assert login.status_code == 200

        # The same four variables, as the README says, and the two lines.
        for line in setup.splitlines():
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                env[name] = value
        ports = [free_port(), free_port()]
        processes = []
        with log.open("ab") as stderr:
            try:
                for line, other in zip(two_block.strip().splitlines(), ports, strict=True):
                    command = line.removesuffix("&").strip()
                    command = re.sub(r"--port \d+", f"--port {other}", command)
                    command = command.replace("shared-data", str(tmp_path / "shared-data"))
                    processes.append(
                        await trio.lowlevel.open_process(
                            ["bash", "-c", f"exec {command}"],
                            cwd=REPO,
                            env=env,
                            stdout=stderr,
                            stderr=stderr,
                        )
                    )
                for process, other in zip(processes, ports, strict=True):
                    await wait_healthy(process, other, log)
                first, second = (
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{other}") for other in ports
                )
                async with first, second:
                    for client in (first, second):
                        response = await client.post(
                            "/api/v1/login",
                            json={"userName": "admin", "password": ADMIN_PASSWORD},
                        )
                        assert response.status_code == 200
                    created = await first.post(
                        "/api/v1/rooms", json={"displayName": "Both", "roomType": "Public"}
                    )
                    room_id = created.json()["roomId"]
                    posted = await first.post(
                        f"/api/v1/rooms/{room_id}/messages", json={"content": "from 1"}
                    )
                    assert posted.status_code == 200, posted.text
                    seen = await second.get(f"/api/v1/rooms/{room_id}/messages")
            finally:
                codes = [await stop_process(process) for process in processes]
        assert codes == [0, 0], end_of(log)
        assert [m["text"] for m in seen.json()["messages"]] == ["from 1"]
    finally:
        await trio.run_process(
            ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", database],
            check=False,
            capture_stderr=True,
        )


@pytest.mark.slow
async def test_the_embedding_snippet_runs_as_written(tmp_path: Path) -> None:
    """The README's program, on a fresh data directory: it publishes its event,
    and Ctrl-C (SIGINT) stops it cleanly."""
    rest = README[README.index("## Embedding in a Trio program") :]
    match = re.search(r"```python\n(.*?)```", rest, re.S)
    assert match is not None
    (tmp_path / "embed.py").write_text(match.group(1))
    shutil.copyfile(REPO / "config.toml", tmp_path / "config.toml")
    port = free_port()
    env = dict(os.environ)
    env.update(
        TRIO_EVENTS_SERVER__PORT=str(port),
        TRIO_EVENTS_SERVER__DATA_DIR=str(tmp_path / "data"),
        TRIO_EVENTS_BOOTSTRAP__ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    log = tmp_path / "embed.log"
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "embed.py"], cwd=tmp_path, env=env, stderr=stderr
        )
        try:
            await wait_healthy(process, port, log)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await client.post(
                    "/api/v1/login", json={"userName": "admin", "password": ADMIN_PASSWORD}
                )
                with trio.fail_after(20):
                    while True:
                        caught_up = (await client.get("/api/v1/events?since=0")).json()
                        types = [event["type"] for event in caught_up["events"]]
                        if "BuildFinished" in types:
                            break
                        await trio.sleep(0.1)
            process.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                code = await process.wait()
        finally:
            await reap(process)
    assert code == 0, end_of(log)
    assert "Traceback" not in end_of(log)
