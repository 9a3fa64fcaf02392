"""JSON shapes of the contract: camelCase names over the attrs domain classes.

A private cattrs converter (never the global one) renames every field of the
domain classes to camelCase; services and the API call :func:`unstructure`.
"""

from __future__ import annotations

from typing import Any

import attrs
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter

from .model import User

__all__ = ["camel", "converter", "unstructure"]

converter = make_converter()


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _register_camel(cls: type) -> None:
    overrides: dict[str, Any] = {f.name: override(rename=camel(f.name)) for f in attrs.fields(cls)}
    converter.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, converter, **overrides))


for _cls in (User,):
    _register_camel(_cls)


def unstructure(value: object) -> Any:
    return converter.unstructure(value)
