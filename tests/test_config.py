"""Configuration loading: layers, validation and one-line errors that name the key."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import pytest

from trio_events.config import Config, ConfigError, load_config

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


def packaged_defaults() -> bytes:
    return resources.files("trio_events").joinpath("default_config.toml").read_bytes()


def config_error(overrides: Mapping[str, Mapping[str, object]]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults() -> None:
    config = load_config(None, environ={})
    assert config == Config()
    assert config.server.port == 7777
    assert config.server.host == "127.0.0.1"
    assert not config.server.tls
    assert config.sqlite_path == Path("data") / "trio_events.sqlite3"


def test_overrides_apply() -> None:
    config = load_config(
        None,
        environ={},
        overrides={"server": {"port": 0, "data_dir": "/srv/x"}, "auth": {"login_rate": 3}},
    )
    assert config.server.port == 0
    assert config.data_dir == Path("/srv/x")
    assert config.auth.login_rate == 3
    assert config.sqlite_path == Path("/srv/x/trio_events.sqlite3")


def test_int_accepted_for_float() -> None:
    config = load_config(None, environ={}, overrides={"server": {"graceful_timeout": 2}})
    assert config.server.graceful_timeout == 2.0
    assert isinstance(config.server.graceful_timeout, float)


def test_unknown_key() -> None:
    message = config_error({"server": {"bogus": 1}})
    assert "bogus" in message
    assert "server" in message


def test_unknown_section() -> None:
    message = config_error({"nosuch": {"a": 1}})
    assert "nosuch" in message


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("server", "port", "7777"),
        ("server", "port", True),
        ("server", "port", 1.5),
        ("server", "host", 1),
        ("server", "graceful_timeout", "soon"),
        ("auth", "cookie_secure", "yes"),
        ("auth", "login_rate", 2.5),
        ("limits", "max_page", None),
    ],
)
def test_wrong_type(section: str, key: str, value: object) -> None:
    assert f"{section}.{key}" in config_error({section: {key: value}})


def test_wrong_list_item_type() -> None:
    assert "server.allowed_origins" in config_error({"server": {"allowed_origins": [1]}})


def test_string_for_list_is_rejected() -> None:
    # A lone string must not be split into a list of one-character origins.
    message = config_error({"server": {"allowed_origins": "https://chat.example"}})
    assert "server.allowed_origins" in message


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("server", "port", 70000),
        ("server", "port", -1),
        ("server", "graceful_timeout", -1.0),
        ("server", "request_timeout", -5),
        ("server", "keep_alive_timeout", 0),
        ("storage", "busy_timeout", 0.0),
        ("storage", "read_connections", 0),
        ("auth", "login_rate", 0),
        ("limits", "max_request_bytes", 10),
    ],
)
def test_out_of_range(section: str, key: str, value: object) -> None:
    message = config_error({section: {key: value}})
    assert f"{section}.{key}" in message
    assert str(value) in message


@pytest.mark.parametrize(
    ("section", "key"),
    [("server", "request_timeout"), ("server", "graceful_timeout"), ("auth", "session_ttl")],
)
def test_nan_is_rejected(section: str, key: str) -> None:
    assert f"{section}.{key}" in config_error({section: {key: float("nan")}})


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("server", "log_level", "loud"),
        ("storage", "backend", "mysql"),
        ("storage", "durability", "extra"),
        ("bus", "backend", "kafka"),
    ],
)
def test_bad_literal(section: str, key: str, value: str) -> None:
    message = config_error({section: {key: value}})
    assert f"{section}.{key}" in message
    assert value in message


def test_certfile_without_keyfile() -> None:
    message = config_error({"server": {"certfile": "cert.pem"}})
    assert "server.keyfile" in message
    assert "certfile" in message


def test_certfile_with_keyfile() -> None:
    config = load_config(
        None, environ={}, overrides={"server": {"certfile": "c.pem", "keyfile": "k.pem"}}
    )
    assert config.server.tls


def test_env_var_override() -> None:
    config = load_config(None, environ={"TRIO_EVENTS_SERVER__PORT": "8000", "OTHER": "x"})
    assert config.server.port == 8000


def test_env_var_string_and_list() -> None:
    config = load_config(
        None,
        environ={
            "TRIO_EVENTS_SERVER__HOST": "0.0.0.0",
            "TRIO_EVENTS_SERVER__ALLOWED_ORIGINS": '["https://a.example"]',
            "TRIO_EVENTS_AUTH__COOKIE_SECURE": "true",
        },
    )
    assert config.server.host == "0.0.0.0"
    assert config.server.allowed_origins == ["https://a.example"]
    assert config.auth.cookie_secure is True


def test_env_var_for_a_string_key_is_taken_as_written() -> None:
    """A password or directory that looks like a TOML number or boolean stays text."""
    config = load_config(
        None,
        environ={
            "TRIO_EVENTS_BOOTSTRAP__ADMIN_PASSWORD": "12345678",
            "TRIO_EVENTS_SERVER__DATA_DIR": "2024",
            "TRIO_EVENTS_SERVER__HOST": "true",
            "TRIO_EVENTS_STORAGE__PATH": "[x]",
        },
    )
    assert config.bootstrap.admin_password == "12345678"
    assert config.server.data_dir == "2024"
    assert config.server.host == "true"
    assert config.storage.path == "[x]"
    quoted = load_config(None, environ={"TRIO_EVENTS_BOOTSTRAP__ADMIN_PASSWORD": '"a b"'})
    assert quoted.bootstrap.admin_password == "a b"


def test_bad_env_var_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_config(None, environ={"TRIO_EVENTS_SERVER__PORT": "eighty"})
    with pytest.raises(ConfigError, match="nope"):
        load_config(None, environ={"TRIO_EVENTS_NOPE__X": "1"})


def test_layers_order(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[server]\nport = 1000\nhost = 'file-host'\n[auth]\nlogin_rate = 4\n")
    config = load_config(
        path,
        environ={"TRIO_EVENTS_SERVER__PORT": "2000", "TRIO_EVENTS_SERVER__HOST": "env-host"},
        overrides={"server": {"port": 3000}},
    )
    assert config.server.port == 3000  # overrides beat the environment
    assert config.server.host == "env-host"  # the environment beats the file
    assert config.auth.login_rate == 4  # the file beats the defaults


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[server]\nport = 9000\nallowed_origins = ["https://a.example"]\n'
        '[storage]\ndurability = "full"\n'
    )
    config = load_config(path, environ={})
    assert config.server.port == 9000
    assert config.server.allowed_origins == ["https://a.example"]
    assert config.storage.durability == "full"


def test_toml_file_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[limits]\nmax_page = 0\n")
    with pytest.raises(ConfigError, match=r"limits\.max_page"):
        load_config(path, environ={})


def test_toml_section_not_a_table(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("server = 5\n")
    with pytest.raises(ConfigError, match="server"):
        load_config(path, environ={})


def test_malformed_toml(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[server\nport = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)
    assert "TOML" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == f"config file not found: {path}"


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path)):
        load_config(tmp_path, environ={})  # a directory, not a file


def test_repo_config_is_the_packaged_defaults() -> None:
    assert REPO_CONFIG.read_bytes() == packaged_defaults()


def test_repo_config_loads_as_defaults() -> None:
    assert load_config(REPO_CONFIG, environ={}) == Config()


def test_packaged_defaults_load_from_a_copy(tmp_path: Path) -> None:
    copy = tmp_path / "config.toml"
    shutil.copyfile(REPO_CONFIG, copy)
    assert load_config(copy, environ={}) == Config()
