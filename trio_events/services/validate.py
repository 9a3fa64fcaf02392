"""Checks for client-supplied JSON fields: each failure is a clear 400."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from ..errors import BadRequest

__all__ = [
    "MAX_ID",
    "check_display_name",
    "check_password",
    "check_user_name",
    "optional_bool",
    "optional_enum",
    "optional_id_list",
    "optional_str",
    "require_object",
    "required_str",
    "reject_unknown",
]

E = TypeVar("E", bound=StrEnum)

_USER_NAME = re.compile(r"[\w.@+-]+")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
# Ids are 1 to 2**53 - 1 (the contract's Id): every client, JavaScript
# included, holds them exactly, and the store never sees a number it cannot.
MAX_ID = 2**53 - 1


def require_object(body: object, where: str = "") -> Mapping[str, Any]:
    if not isinstance(body, dict):
        if where:
            raise BadRequest(f"Field {where!r} must be a JSON object")
        raise BadRequest("The request body must be a JSON object")
    return body


def reject_unknown(body: Mapping[str, Any], allowed: set[str], where: str = "") -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise BadRequest(f"Unknown field {name!r}")


def required_str(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise BadRequest(f"Field {name!r} is required")
    if not isinstance(value, str):
        raise BadRequest(f"Field {name!r} must be a string")
    return value


def optional_str(body: Mapping[str, Any], name: str) -> str | None:
    if body.get(name) is None:
        return None
    return required_str(body, name)


def optional_bool(body: Mapping[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise BadRequest(f"Field {name!r} must be true or false")
    return value


def optional_enum(body: Mapping[str, Any], name: str, enum: type[E], where: str = "") -> E | None:
    label = f"{where}.{name}" if where else name
    value = body.get(name)
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return enum(value)
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise BadRequest(f"Field {label!r} must be one of {choices}") from None


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def optional_id_list(
    body: Mapping[str, Any], name: str, max_items: int, where: str = ""
) -> list[int] | None:
    """A list of at most ``max_items`` ids, duplicates dropped (first kept)."""
    raw = body.get(name)
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > max_items or not all(_is_id(x) for x in raw):
        label = f"{where}.{name}" if where else name
        raise BadRequest(
            f"Field {label!r} must be a list of at most {max_items} user ids"
            f" (integers from 1 to {MAX_ID})"
        )
    return list(dict.fromkeys(raw))


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"} for ch in text)


def check_user_name(value: str, max_length: int) -> str:
    if not 1 <= len(value) <= max_length or not _USER_NAME.fullmatch(value):
        raise BadRequest(f"Field 'userName' must be 1 to {max_length} letters, digits or . _ @ + -")
    return value


def check_display_name(value: str, max_length: int, field: str = "displayName") -> str:
    value = value.strip()
    if not 1 <= len(value) <= max_length or _has_control(value):
        raise BadRequest(f"Field {field!r} must be 1 to {max_length} printable characters")
    return value


def check_password(value: str) -> str:
    if not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise BadRequest(
            f"Field 'password' must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long"
        )
    return value


def query_value(values: Sequence[str], name: str) -> str | None:
    """The value of query parameter ``name`` (``values``: each occurrence), or
    None when it is absent; a 400 when it is given more than once, since
    servers and proxies disagree on which occurrence counts.  (Parameters an
    endpoint does not know are ignored: clients and proxies add
    cache-busters such as ``_=1700000000``.)"""
    if len(values) > 1:
        raise BadRequest(f"Query parameter {name!r} must be given at most once")
    return values[0] if values else None


def page_limit(raw: str | None, cap: int) -> int:
    """A ``limit`` query value: at most ``cap``; absent or empty asks for the
    cap, and so does any larger number, however many digits it has."""
    if raw is None or raw == "":
        return cap
    digits = raw.lstrip("0")
    if not (raw.isascii() and raw.isdigit()) or not digits:
        raise BadRequest("Query parameter 'limit' must be a positive integer")
    return cap if len(digits) > len(str(cap)) else min(int(digits), cap)
