"""The configuration reference in the README is generated and current."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path

import attrs

from trio_events.config import Config
from trio_events.config_doc import default_comments, reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_carries_the_generated_reference() -> None:
    text = README.read_text()
    match = re.search(
        r"<!-- config-reference:start[^>]*-->\n(.*?)<!-- config-reference:end -->", text, re.S
    )
    assert match is not None
    assert match.group(1) == reference_markdown(), "run: python -m trio_events.config_doc"


def test_default_config_has_every_key_with_a_comment() -> None:
    packaged = resources.files("trio_events").joinpath("default_config.toml").read_text()
    loaded = tomllib.loads(packaged)
    comments = default_comments()
    for section in attrs.fields(Config):
        fields = {f.name for f in attrs.fields(getattr(Config(), section.name).__class__)}
        assert set(loaded[section.name]) == fields, section.name
        for name in fields:
            assert comments.get((section.name, name)), f"{section.name}.{name} has no comment"
