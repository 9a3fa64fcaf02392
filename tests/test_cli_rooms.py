"""``trio-events room ...``: create, list and change membership from the command line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from trio_events.cli import main

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


@pytest.fixture
def common(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.toml"
    shutil.copyfile(REPO_CONFIG, config)
    return ["--config", str(config), "--data-dir", str(tmp_path / "data")]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_room_add_list_and_membership(
    common: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "init", *common, "--admin-password", "admin-password-1")[0] == 0
    assert run(capsys, "user", "add", "bob", "--password", "bob-password-1", *common)[0] == 0

    code, _, err = run(capsys, "room", "add", "General", "--type", "Public", *common)
    assert code == 0
    assert "id=1" in err
    code, _, err = run(capsys, "room", "add", "Ops", "--member", "bob", *common)
    assert code == 0
    assert "id=2" in err

    code, out, _ = run(capsys, "room", "list", *common)
    assert code == 0
    assert out.splitlines() == ["1\tGeneral\tPublic", "2\tOps\tPrivate"]

    code, _, err = run(capsys, "room", "member-add", "Ops", "admin", "--moderator", *common)
    assert code == 0
    assert "member" in err
    code, _, err = run(capsys, "room", "member-remove", "2", "bob", *common)
    assert code == 0
    assert "removed" in err

    # removing again is an error, reported as one line
    code, out, err = run(capsys, "room", "member-remove", "Ops", "bob", *common)
    assert code == 1
    assert out == ""
    assert err.strip().count("\n") == 0
    assert err.startswith("trio-events: error:")
    assert "not a member" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["room", "add", ""], "displayName"),
        (["room", "add", "X", "--member", "nobody"], "No user named 'nobody'"),
        (["room", "member-add", "Nowhere", "admin"], "No room named 'Nowhere'"),
    ],
)
def test_room_errors_are_one_line(
    common: list[str], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run(capsys, "init", *common, "--admin-password", "admin-password-1")[0] == 0
    code, out, err = run(capsys, *argv, *common)
    assert code != 0
    assert out == ""
    assert err.count("\n") == 1
    assert message in err
