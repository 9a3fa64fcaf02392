"""Configuration: ``config.toml`` + ``TRIO_EVENTS_<SECTION>__<KEY>`` + CLI flags.

Layers, lowest first: the defaults of the attrs classes below, the TOML file,
environment variables, then explicit overrides (the CLI's ``--host`` and
friends).  The merged mapping is structured by a private cattrs converter that
forbids unknown keys, and the attrs validators reject impossible values.  Every
problem becomes one :class:`ConfigError` whose message names the key, so the CLI
can print one line instead of a traceback.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import attrs
import cattrs
from cattrs.preconf.json import make_converter

__all__ = [
    "AuthConfig",
    "BootstrapConfig",
    "BusConfig",
    "Config",
    "ConfigError",
    "EventsConfig",
    "LimitsConfig",
    "ServerConfig",
    "StorageConfig",
    "load_config",
]

ENV_PREFIX = "TRIO_EVENTS_"


class ConfigError(Exception):
    """A configuration problem, with a message that names the offending key."""


class _FieldError(ValueError):
    """An impossible value, raised by a validator and reported with its key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _in_range(low: float, high: float | None = None) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
        if not math.isfinite(value):
            raise _FieldError(attribute.name, f"must be a finite number, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise _FieldError(attribute.name, f"must be {bound}, got {value!r}")

    return check


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value):
        raise _FieldError(attribute.name, f"must be a finite number, got {value!r}")
    if value <= 0:
        raise _FieldError(attribute.name, f"must be greater than 0, got {value!r}")


def _channel_name(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not 1 <= len(value) <= 200 or not value.isprintable() or " " in value:
        raise _FieldError(attribute.name, f"must be 1 to 200 printable characters, got {value!r}")


LogLevel = Literal["debug", "info", "warning", "error"]


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = attrs.field(default=7777, validator=_in_range(0, 65535))
    data_dir: str = "data"
    certfile: str = ""
    keyfile: str = ""
    allowed_origins: list[str] = attrs.field(factory=list)
    static_dir: str = ""
    log_level: LogLevel = "info"
    graceful_timeout: float = attrs.field(default=5.0, validator=_in_range(0))
    keep_alive_timeout: float = attrs.field(default=5.0, validator=_positive)
    request_timeout: float = attrs.field(default=30.0, validator=_positive)
    header_timeout: float = attrs.field(default=10.0, validator=_positive)
    max_header_bytes: int = attrs.field(default=16 * 1024, validator=_in_range(1024, 1 << 20))
    keep_alive_max_requests: int = attrs.field(default=1000, validator=_in_range(1))

    def __attrs_post_init__(self) -> None:
        if bool(self.certfile) != bool(self.keyfile):
            raise _FieldError("keyfile", "certfile and keyfile must be given together")

    @property
    def tls(self) -> bool:
        return bool(self.certfile)


@attrs.frozen
class StorageConfig:
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    path: str = ""
    url: str = ""
    durability: Literal["normal", "full"] = "normal"
    busy_timeout: float = attrs.field(default=5.0, validator=_positive)
    read_connections: int = attrs.field(default=4, validator=_in_range(1, 64))


@attrs.frozen
class BusConfig:
    backend: Literal["local", "redis"] = "local"
    url: str = ""
    channel: str = attrs.field(default="trio_events", validator=_channel_name)
    fallback_poll_interval: float = attrs.field(default=0.25, validator=_in_range(0.01, 60))


@attrs.frozen
class EventsConfig:
    heartbeat_interval: float = attrs.field(default=20.0, validator=_positive)
    heartbeat_timeout: float = attrs.field(default=10.0, validator=_positive)
    send_queue_size: int = attrs.field(default=1000, validator=_in_range(1))
    max_streams_per_user: int = attrs.field(default=10, validator=_in_range(1))
    max_client_frame: int = attrs.field(default=4096, validator=_in_range(16))
    client_frame_rate: int = attrs.field(default=20, validator=_in_range(1))
    retention_events: int = attrs.field(default=1_000_000, validator=_in_range(1))
    retention_seconds: float = attrs.field(default=86_400.0, validator=_positive)
    max_replay: int = attrs.field(default=10_000, validator=_in_range(1))


@attrs.frozen
class AuthConfig:
    session_ttl: float = attrs.field(default=30 * 86_400.0, validator=_positive)
    cookie_secure: bool = False
    login_rate: int = attrs.field(default=10, validator=_in_range(1))
    login_window: float = attrs.field(default=60.0, validator=_positive)


@attrs.frozen
class LimitsConfig:
    max_request_bytes: int = attrs.field(default=1 << 20, validator=_in_range(1024))
    max_message_bytes: int = attrs.field(default=64 * 1024, validator=_in_range(1))
    max_page: int = attrs.field(default=1000, validator=_in_range(1))
    max_avatar_bytes: int = attrs.field(default=1 << 20, validator=_in_range(1))
    max_attachment_bytes: int = attrs.field(default=50 << 20, validator=_in_range(1))
    max_upload_bytes: int = attrs.field(default=100 << 20, validator=_in_range(1))
    max_files_per_message: int = attrs.field(default=20, validator=_in_range(1))
    max_name_length: int = attrs.field(default=100, validator=_in_range(1))


@attrs.frozen
class BootstrapConfig:
    admin_user: str = "admin"
    admin_password: str = ""


@attrs.frozen
class Config:
    server: ServerConfig = ServerConfig()
    storage: StorageConfig = StorageConfig()
    bus: BusConfig = BusConfig()
    events: EventsConfig = EventsConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()

    def __attrs_post_init__(self) -> None:
        # Keys that only make sense together, checked once the whole file is read.
        if self.storage.backend == "postgresql" and not self.storage.url:
            raise ConfigError("storage.url: required when storage.backend is 'postgresql'")
        if self.bus.backend == "redis" and not self.bus.url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                "bus.url: a redis://host[:port][/db] URL is required when bus.backend"
                f" is 'redis', got {self.bus.url!r}"
            )

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def sqlite_path(self) -> Path:
        if self.storage.path:
            return Path(self.storage.path)
        return self.data_dir / "trio_events.sqlite3"


_converter = make_converter(forbid_extra_keys=True)


def _structure_strict_float(value: object, _: type) -> float:
    # TOML gives ints for "5"; accept them, but not strings or booleans.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _structure_strict_int(value: object, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _structure_strict_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _structure_strict_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _structure_str_list(value: object, _: type) -> list[str]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list of strings, got {value!r}")
    return [_structure_strict_str(item, str) for item in value]


_converter.register_structure_hook_func(lambda t: t == list[str], _structure_str_list)
_converter.register_structure_hook(float, _structure_strict_float)
_converter.register_structure_hook(int, _structure_strict_int)
_converter.register_structure_hook(str, _structure_strict_str)
_converter.register_structure_hook(bool, _structure_strict_bool)


def _sections() -> dict[str, type]:
    return {field.name: field.type for field in attrs.fields(Config)}  # type: ignore[misc]


def _is_text(hint: object) -> bool:
    if hint is str:
        return True
    return get_origin(hint) is Literal and all(isinstance(arg, str) for arg in get_args(hint))


def _text_keys() -> set[tuple[str, str]]:
    """The (section, key) pairs whose value is a string, whatever it looks like."""
    return {
        (section, key)
        for section, cls in get_type_hints(Config).items()
        for key, hint in get_type_hints(cls).items()
        if _is_text(hint)
    }


def _parse_env_value(raw: str, *, text: bool) -> object:
    """Read an environment value as a TOML value when it is one, else as a string.

    A string key takes the value as written (a password ``12345678`` stays a
    string), unless it is quoted the TOML way.
    """
    if text and not raw.startswith(('"', "'")):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, object]]:
    overrides: dict[str, dict[str, object]] = {}
    text_keys = _text_keys()
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name[len(ENV_PREFIX) :]:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        section, key = section.lower(), key.lower()
        text = (section, key) in text_keys
        overrides.setdefault(section, {})[key] = _parse_env_value(raw, text=text)
    return overrides


def _first_message(exc: BaseException, path: str) -> str:
    """Turn a cattrs error (possibly a nested group) into one readable line."""
    if isinstance(exc, cattrs.ClassValidationError | cattrs.IterableValidationError):
        for sub in exc.exceptions:
            subpath = path
            for note in getattr(sub, "__notes__", []):
                name = getattr(note, "name", None)
                index = getattr(note, "index", None)
                if name is not None:
                    subpath = f"{path}.{name}" if path else str(name)
                elif index is not None:
                    subpath = f"{path}[{index}]"
            return _first_message(sub, subpath)
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        keys = ", ".join(f"{path}.{key}" if path else key for key in sorted(exc.extra_fields))
        return f"unknown key{'s' if len(exc.extra_fields) > 1 else ''} {keys}"
    if isinstance(exc, _FieldError):
        path = f"{path}.{exc.field}" if path else exc.field
    message = str(exc)
    literal = re.fullmatch(r"(.*) not in literal typing\.Literal\[(.*)\]", message)
    if literal:
        message = f"must be one of {literal.group(2)}, got {literal.group(1)!r}"
    return f"{path}: {message}" if path else message


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> Config:
    """Load the configuration, raising :class:`ConfigError` with a one-line message."""
    data: dict[str, dict[str, object]] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                loaded = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        for section, values in loaded.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{section}: expected a [{section}] table")
            data[section] = dict(values)
    layers = [_env_overrides(os.environ if environ is None else environ), overrides or {}]
    for layer in layers:
        for section, values in layer.items():
            data.setdefault(section, {}).update(values)
    unknown = sorted(set(data) - set(_sections()))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]")
    try:
        return _converter.structure(data, Config)
    except Exception as exc:  # cattrs raises groups and plain errors alike
        raise ConfigError(_first_message(exc, "")) from None


def default_config_path() -> Path | None:
    """``$TRIO_EVENTS_CONFIG``, else ``./config.toml`` when it exists, else nothing."""
    explicit = os.environ.get("TRIO_EVENTS_CONFIG")
    if explicit:
        return Path(explicit)
    candidate = Path("config.toml")
    return candidate if candidate.exists() else None
