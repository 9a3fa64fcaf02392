"""The ``trio-events`` command, run in-process (it calls ``trio.run`` itself) and as a process."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest
import trio

from trio_events import passwords
from trio_events.cli import main
from trio_events.config import load_config

from .helpers import free_port

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"
DB_NAME = "trio_events.sqlite3"


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a directory without config.toml, so nothing reaches the repository's data."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    shutil.copyfile(REPO_CONFIG, path)
    return path


@pytest.fixture
def common(tmp_path: Path, config_file: Path) -> list[str]:
    return ["--config", str(config_file), "--data-dir", str(tmp_path / "data")]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def password_hash(data_dir: Path, name: str) -> str:
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        (stored,) = conn.execute(
            "SELECT password_hash FROM users WHERE user_name = ?", (name,)
        ).fetchone()
    finally:
        conn.close()
    return str(stored)


def token_hashes(data_dir: Path) -> list[str]:
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        rows = conn.execute("SELECT secret_hash FROM credentials WHERE kind = 'token'").fetchall()
    finally:
        conn.close()
    return [str(row[0]) for row in rows]


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("trio-events: error:")
    return lines[0]


def serve_error_line(err: str) -> str:
    """``serve`` logs before it fails; the failure itself is still one line."""
    assert "Traceback" not in err, err
    own = [line for line in err.splitlines() if " trio_events." not in line]
    return one_error_line("\n".join(own))


def test_init_writes_config_and_prints_password_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "new" / "config.toml"
    data = tmp_path / "data"
    code, out, err = run(capsys, "init", "--config", str(config), "--data-dir", str(data))
    assert code == 0, err
    # The packaged defaults, naming the data directory it was given.
    written = config.read_text().splitlines()
    defaults = REPO_CONFIG.read_text().splitlines()
    changed = [(a, b) for a, b in zip(defaults, written, strict=True) if a != b]
    assert [b.split("#")[0].strip() for _, b in changed] == [f'data_dir = "{data}"']
    assert load_config(config).data_dir == data
    (password,) = out.splitlines()
    assert len(password) >= 8
    assert passwords.verify_password_sync(password_hash(data, "admin"), password)

    code, out, err = run(capsys, "init", "--config", str(config), "--data-dir", str(data))
    assert code == 0, err
    assert out == ""
    assert "nothing to create" in err
    assert passwords.verify_password_sync(password_hash(data, "admin"), password)


def test_init_with_admin_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    data = tmp_path / "data"
    code, out, err = run(
        capsys,
        "init",
        "--config",
        str(config),
        "--data-dir",
        str(data),
        "--admin-password",
        "chosen-password",
    )
    assert code == 0, err
    assert out == ""
    assert "chosen-password" not in err
    assert passwords.verify_password_sync(password_hash(data, "admin"), "chosen-password")


def test_user_add_list_passwd_suspend(
    tmp_path: Path, common: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    code, out, err = run(
        capsys,
        "user",
        "add",
        "bob",
        "--password",
        "bob-password",
        "--display-name",
        "Bob B.",
        *common,
    )
    assert code == 0, err
    assert out == ""
    code, out, err = run(
        capsys, "user", "add", "root2", "--password", "root-password", "--admin", *common
    )
    assert code == 0, err

    code, out, err = run(capsys, "user", "list", *common)
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows == [
        ["1", "bob", "Bob B.", "user", "Active"],
        ["2", "root2", "root2", "admin", "Active"],
    ]

    code, out, err = run(capsys, "user", "passwd", "bob", "--password", "bob-password-2", *common)
    assert code == 0, err
    assert passwords.verify_password_sync(password_hash(data, "bob"), "bob-password-2")
    assert not passwords.verify_password_sync(password_hash(data, "bob"), "bob-password")

    code, out, err = run(capsys, "user", "suspend", "bob", *common)
    assert code == 0, err
    code, out, err = run(capsys, "user", "list", *common)
    assert out.splitlines()[0].split("\t")[-1] == "Suspended"


def test_password_from_stdin(
    tmp_path: Path,
    common: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("piped-password\n"))
    code, _, err = run(capsys, "user", "add", "carol", "--password", "-", *common)
    assert code == 0, err
    assert passwords.verify_password_sync(
        password_hash(tmp_path / "data", "carol"), "piped-password"
    )


def test_token_prints_one_line(
    tmp_path: Path, common: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert run(capsys, "user", "add", "dave", "--password", "dave-password", *common)[0] == 0
    code, out, err = run(capsys, "token", "dave", *common)
    assert code == 0, err
    (first,) = out.splitlines()
    assert token_hashes(data) == [passwords.hash_secret(first)]
    code, out, err = run(capsys, "token", "dave", *common)
    (second,) = out.splitlines()
    assert second != first
    assert token_hashes(data) == [passwords.hash_secret(second)]


def test_token_for_suspended_user_fails(
    common: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "user", "add", "erin", "--password", "erin-password", *common)[0] == 0
    assert run(capsys, "user", "suspend", "erin", *common)[0] == 0
    code, out, err = run(capsys, "token", "erin", *common)
    assert code != 0
    assert out == ""
    assert "erin" in one_error_line(err)


def test_bad_config_value(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file.write_text(config_file.read_text().replace("port = 7777", "port = 70000"))
    code, out, err = run(
        capsys, "user", "list", "--config", str(config_file), "--data-dir", str(tmp_path)
    )
    assert code == 2
    assert out == ""
    assert "server.port" in one_error_line(err)


def test_bad_env_value(
    common: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIO_EVENTS_AUTH__LOGIN_RATE", "many")
    code, _, err = run(capsys, "user", "list", *common)
    assert code == 2
    assert "auth.login_rate" in one_error_line(err)


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "user", "list", "--config", str(tmp_path / "absent.toml"))
    assert code == 2
    assert "absent.toml" in one_error_line(err)


@pytest.mark.parametrize(
    "argv",
    [
        ("user", "passwd", "nobody", "--password", "some-password"),
        ("user", "suspend", "nobody"),
        ("token", "nobody"),
    ],
)
def test_unknown_user(
    argv: tuple[str, ...], common: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *argv, *common)
    assert code != 0
    assert out == ""
    assert "nobody" in one_error_line(err)


def test_invalid_user_add(common: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "user", "add", "frank", "--password", "short", *common)
    assert code != 0
    one_error_line(err)
    assert run(capsys, "user", "add", "frank", "--password", "long-enough", *common)[0] == 0
    code, _, err = run(capsys, "user", "add", "FRANK", "--password", "long-enough", *common)
    assert code != 0
    one_error_line(err)


def test_options_before_the_action_are_honoured(
    tmp_path: Path, common: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # `trio-events user --help` lists --config and --data-dir before ACTION.
    code, _, err = run(capsys, "user", *common, "add", "gina", "--password", "gina-password")
    assert code == 0, err
    _, out, _ = run(capsys, "user", "list", *common)
    assert "gina" in out


def test_init_without_data_dir_keeps_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    code, _, err = run(capsys, "init", "--config", str(config), "--admin-password", "pw-123456")
    assert code == 0, err
    assert config.read_bytes() == REPO_CONFIG.read_bytes()


@pytest.mark.parametrize("argv", [["user", "list"], ["token", "admin"], ["room", "list"]])
def test_a_file_that_is_not_a_database_is_one_line(
    tmp_path: Path, common: list[str], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / DB_NAME).write_text("not a database\n")
    code, _, err = run(capsys, *argv, *common)
    assert code == 2
    line = one_error_line(err)
    assert str(data / DB_NAME) in line
    assert "not a database" in line
    assert (data / DB_NAME).read_text() == "not a database\n"


def test_serve_on_a_port_in_use_is_one_line(
    common: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(capsys, "serve", *common, "--port", str(port))
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in serve_error_line(err)


def test_serve_on_an_unresolvable_host_is_one_line(
    common: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "serve", *common, "--host", "999.1.1.1", "--port", "0")
    assert code == 2
    assert "cannot listen on 999.1.1.1:0" in serve_error_line(err)


def test_serve_with_a_data_dir_that_is_a_file_is_one_line(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    argv = ["serve", "--config", str(config_file), "--data-dir", str(afile), "--port", "0"]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert f"cannot create the data directory {afile}" in serve_error_line(err)


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_serve_with_unusable_tls_files_is_one_line(
    tmp_path: Path,
    common: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    content: str | None,
) -> None:
    pem = tmp_path / "server.pem"
    if content is not None:
        pem.write_text(content)
    monkeypatch.setenv("TRIO_EVENTS_SERVER__CERTFILE", str(pem))
    monkeypatch.setenv("TRIO_EVENTS_SERVER__KEYFILE", str(pem))
    code, _, err = run(capsys, "serve", *common, "--port", "0")
    assert code == 2
    assert f"server.certfile/keyfile: cannot load {pem}" in serve_error_line(err)
    assert not (tmp_path / "data").exists(), "nothing is created before the check"


@pytest.mark.parametrize(
    ("server", "url"),
    [
        ({}, "http://127.0.0.1:7777"),
        ({"host": "0.0.0.0", "port": 8000}, "http://127.0.0.1:8000"),
        ({"host": "::", "port": 8001}, "http://[::1]:8001"),
        ({"host": "chat.example", "port": 443}, "http://chat.example:443"),
    ],
)
def test_tail_finds_the_server_from_the_config(
    tmp_path: Path, server: dict[str, object], url: str
) -> None:
    from trio_events.cli import _tail_url, build_parser

    config = tmp_path / "config.toml"
    config.write_text("[server]\n" + "".join(f"{k} = {v!r}\n" for k, v in server.items()))
    args = build_parser().parse_args(["tail", "--config", str(config), "--token", "t"])
    assert _tail_url(args) == url.replace("'", '"')
    args = build_parser().parse_args(["tail", "--config", str(config), "--url", "http://x:1"])
    assert _tail_url(args) == "http://x:1"


# --- the server as a process -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_stops_cleanly_on_signal(
    tmp_path: Path, config_file: Path, signum: signal.Signals
) -> None:
    port = free_port()
    stderr_path = tmp_path / "stderr.txt"
    env = dict(os.environ)
    argv = [
        sys.executable,
        "-m",
        "trio_events",
        "serve",
        "--port",
        str(port),
        "--config",
        str(config_file),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    with trio.fail_after(40), stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(argv, stderr=stderr, env=env)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                with trio.fail_after(20):
                    while True:
                        try:
                            response = await client.get("/healthz")
                        except httpx.TransportError:
                            assert process.poll() is None, stderr_path.read_text()
                            await trio.sleep(0.1)
                            continue
                        break
            assert response.status_code == 200
            process.send_signal(signum)
            with trio.fail_after(10):
                code = await process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                await process.wait()
    log = stderr_path.read_text()
    assert code == 0, log
    assert "stopped" in log
    assert "Traceback" not in log
