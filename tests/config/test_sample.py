"""``config sample`` (#14 item 12): written from the schema, so it cannot drift from it;
it loads as it is, and with its commented examples uncommented."""

from __future__ import annotations

import re
from typing import Any

from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.config import Config, Section, parse_config
from gateway.config.render import sample_text, section_models

runner = CliRunner()


def _sections(model: type[Any] = Config, seen: set[type[Any]] | None = None) -> set[type[Any]]:
    seen = seen if seen is not None else set()
    seen.add(model)
    for info in model.model_fields.values():
        for sub in section_models(info.annotation):
            if sub not in seen:
                _sections(sub, seen)
    return seen


def test_the_sample_is_every_default() -> None:
    result = runner.invoke(app, ["config", "sample"])
    assert result.exit_code == 0, result.output
    assert result.output == sample_text()
    assert parse_config(result.output, "sample.yaml") == Config()


def test_every_key_has_a_description_and_is_in_the_sample() -> None:
    """A new key without a description fails here, so the sample documents it."""
    text = sample_text()
    sections = _sections()
    assert len(sections) >= 15
    for model in sections:
        for name, info in model.model_fields.items():
            if info.exclude:
                continue
            assert info.description, f"{model.__name__}.{name} has no description"
            assert re.search(rf"^[ #]*(- )?{name}:( |$)", text, re.MULTILINE), name


def _uncommented(text: str) -> str:
    """The sample as an operator edits it: every commented example block made live, every
    ``# e.g.`` line put in place of the line above it."""
    out: list[str] = []
    live = False
    for line in text.splitlines():
        if line in ("sources:", "upstream:", "outputs:"):
            live = True
        elif not line.startswith("#"):
            live = False
        if line.lstrip().startswith("# e.g. "):
            out[-1] = line.replace("# e.g. ", "", 1)
            continue
        out.append(line[2:] if live and line.startswith("# ") else line)
    return "\n".join(out) + "\n"


def test_the_commented_examples_validate_when_uncommented() -> None:
    config = parse_config(_uncommented(sample_text()), "edited.yaml")
    assert [s.type for s in config.sources] == ["serial", "mqtt", "simulate", "modbus", "opcua"]
    assert config.upstream is not None
    assert config == parse_config(sample_text(examples=True), "examples.yaml")
    assert isinstance(config.gateway, Section)
