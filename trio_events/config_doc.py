"""The configuration reference, generated from the config classes.

``python -m trio_events.config_doc`` prints the Markdown table that the
README carries between its ``config-reference`` markers; a test keeps the two
identical, and the comments come from the packaged ``default_config.toml``,
whose keys the same test checks against the classes.
"""

from __future__ import annotations

import re
from importlib import resources

import attrs

from .config import Config

__all__ = ["default_comments", "reference_markdown"]


def default_comments() -> dict[tuple[str, str], str]:
    """``(section, key) -> comment`` from the packaged default_config.toml."""
    text = resources.files("trio_events").joinpath("default_config.toml").read_text()
    comments: dict[tuple[str, str], str] = {}
    section = ""
    for line in text.splitlines():
        header = re.fullmatch(r"\[(\w+)\]", line.strip())
        if header:
            section = header.group(1)
            continue
        entry = re.match(r"(\w+)\s*=\s*[^#]*?(?:#\s*(.*))?$", line)
        if entry and section:
            comments[(section, entry.group(1))] = (entry.group(2) or "").strip()
    return comments


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[]" if not value else repr(value)
    return repr(value)


def reference_markdown() -> str:
    comments = default_comments()
    lines = ["| key | default | meaning |", "|---|---|---|"]
    defaults = Config()
    for section in attrs.fields(Config):
        values = getattr(defaults, section.name)
        for field in attrs.fields(type(values)):
            comment = comments.get((section.name, field.name), "").replace("|", "\\|")
            default = _show(getattr(values, field.name)).replace("|", "\\|")
            lines.append(f"| `{section.name}.{field.name}` | `{default}` | {comment} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
