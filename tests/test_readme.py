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
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from .helpers import healthy

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIO_EVENTS_")}
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
        if process.returncode is None:
            process.kill()
            await process.wait()


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
    assert process.stdout is not None
    buffer = getattr(process, "_test_buffer", b"")
    while buffer.count(b"\n") < count:
        chunk = await process.stdout.receive_some(65536)
        assert chunk, "tail ended early"
        buffer += chunk
    *lines, rest = buffer.split(b"\n", count)
    process._test_buffer = rest  # type: ignore[attr-defined]
    return [line.decode() for line in lines]


async def test_run_serve_starts_and_stops(tmp_path: Path) -> None:
    """The README's first command: ``./run serve`` (here with a free port and a
    temporary data directory), then SIGTERM."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_EVENTS_")}
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
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "created the first administrator user=admin password=" in text
    assert "stopped" in text


async def test_run_serve_refuses_an_impossible_port() -> None:
    """The README's example of a configuration error, as written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_EVENTS_")}
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
