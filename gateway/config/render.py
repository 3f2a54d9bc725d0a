"""The config as text: ``config show`` (the effective config) and ``config sample``.

Both are written from the schema and a validated ``Config``, never from a second list of keys,
so neither can drift from what the loader accepts; and both load again unchanged.
"""

from __future__ import annotations

import textwrap
from typing import Any, Literal, get_args, get_origin

import yaml

from gateway.config.base import Section
from gateway.config.schema import Config, redacted

_SHOW_HEADER = """\
# The effective config{source}
# Defaults filled in, included files merged, ${{VAR}} substituted, relative paths made
# absolute. No secret is shown: password_file and password_env say where each is read
# from. This text loads again as it is.
"""


def show_text(config: Config, source: str | None = None) -> str:
    """What ``config show`` prints: YAML that loads into the same ``Config``."""
    # A file name is written into a comment: a newline in it would end the comment.
    name = "".join(c if c.isprintable() else "?" for c in source) if source else None
    header = _SHOW_HEADER.format(source=f" of {name}." if name else ".")
    return header + yaml.safe_dump(
        _in_order(Config, redacted(config)), sort_keys=False, allow_unicode=True, width=1_000_000
    )


def field_order(model: type[Any]) -> list[str]:
    """The keys of a section as ``config sample`` and ``config show`` print them: the ones
    the section declares itself first (an output's ``type``, ``name``, ``url``), then the
    ones it shares with others through a base class, in the base's order; a key it only
    redeclares (a new default) stays in the base's place. Pydantic alone puts every
    inherited key first, so a shared base would print ``type:`` last."""
    inherited: set[str] = set()
    for base in model.__mro__[1:]:
        inherited.update(getattr(base, "model_fields", None) or {})
    fields = list(model.model_fields)
    return [n for n in fields if n not in inherited] + [n for n in fields if n in inherited]


def _in_order(model: type[Any], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a dump of ``model``) with the keys of every section in ``field_order``."""
    ordered: dict[str, Any] = {}
    for name in field_order(model):
        if name not in data:
            continue
        value = data[name]
        models = section_models(model.model_fields[name].annotation)
        if models and _is_mapping(model.model_fields[name].annotation):
            value = {k: _in_order(models[0], v) for k, v in value.items()}
        elif models and isinstance(value, dict):
            value = _in_order(_model_for(models, value), value)
        elif models and isinstance(value, list):
            value = [_in_order(_model_for(models, v), v) for v in value]
        ordered[name] = value
    return ordered


def _is_mapping(annotation: Any) -> bool:
    """``dict[K, Section]``, alone or in a union with None: names to sections."""
    return get_origin(annotation) is dict or any(
        get_origin(arg) is dict for arg in get_args(annotation)
    )


# --- config sample ---------------------------------------------------------------------------

_WIDTH = 92

_SAMPLE_HEADER = """\
# A Liquid Gateway config: every key, its meaning and its default, written from the schema
# by `liquid-gateway config sample` (so it is always the running version's). Durations:
# 250ms, 90s, 5m, 1h30m, 7d; sizes: 512MB, 1GiB; relative paths: from this file's folder.
# More files: a top-level `include: [conf.d/*.yaml]` merges them in name order.
# Values from the environment: ${NAME}, or ${NAME:-default}.
# Commented blocks are examples: remove the leading '# ' of each of their lines to use one.
"""


def sample_text(examples: bool = False) -> str:
    """What ``config sample`` prints: every section with its defaults and each field's
    description; what is empty by default (sources, upstream) as commented examples, built
    from each field's ``examples`` and validated like any config. ``examples``: write them
    as live YAML instead (the tests load both)."""
    config = Config() if not examples else Config.model_validate(_example_data(Config, True))
    lines = _block(Config, config.model_dump(mode="json"), 0, examples)
    return _SAMPLE_HEADER + "\n" + "\n".join(lines).rstrip("\n") + "\n"


def _block(model: type[Any], data: dict[str, Any], indent: int, live: bool) -> list[str]:
    """The lines of one section: per field its description, then ``key: value``."""
    pad = " " * indent
    lines: list[str] = []
    for name in field_order(model):
        info = model.model_fields[name]
        if info.exclude:
            continue
        value = data[name]
        if info.description:
            width = max(40, _WIDTH - indent - 2)
            lines += [f"{pad}# {text}" for text in textwrap.wrap(info.description, width)]
        models = section_models(info.annotation)
        if isinstance(value, dict) and len(models) == 1 and models[0].model_fields:
            if _is_mapping(info.annotation):
                lines.append(f"{pad}{name}: {_flow(value)}")
                continue
            lines.append(f"{pad}{name}:")
            lines += _block(models[0], value, indent + 2, live)
        elif isinstance(value, list) and value and models:
            lines.append(f"{pad}{name}:")
            for item in value:
                lines += _item(_model_for(models, item), item, indent, live)
        elif models and not value and not live and get_origin(info.annotation) is not dict:
            # Empty by default: the key without a value (null: the default, [] or none),
            # then a commented example of each kind, to uncomment line by line.
            lines.append(f"{pad}{name}:")
            for kind in models:
                example = kind.model_validate(_example_data(kind)).model_dump(mode="json")
                if isinstance(value, list):
                    body = _item(kind, example, indent, live)
                else:
                    body = _block(kind, example, indent + 2, live)
                lines += [f"{pad}# {line[indent:]}" for line in body]
        else:
            lines.append(f"{pad}{name}: {_flow(value)}")
            if info.examples and not live and value != info.examples[0]:
                lines.append(f"{pad}# e.g. {name}: {_flow(info.examples[0])}")
        if indent == 0:
            lines.append("")
    return lines


def _item(model: type[Any], data: dict[str, Any], indent: int, live: bool) -> list[str]:
    """One list item: the section's lines with ``- `` before its first key (whose comment,
    the item's kind, stands at the level of the ``-``)."""
    lines = _block(model, data, indent + 2, live)
    first = next(n for n, line in enumerate(lines) if not line.lstrip().startswith("#"))
    for n in range(first):
        lines[n] = lines[n][2:]
    lines[first] = " " * indent + "- " + lines[first][indent + 2 :]
    return lines


def _flow(value: Any) -> str:
    """One value as YAML in flow style, quoted where YAML needs it (``'5'``, ``'off'``)."""
    text = yaml.safe_dump([value], default_flow_style=True, width=1_000_000, allow_unicode=True)
    return text.strip()[1:-1]


def section_models(annotation: Any) -> list[type[Any]]:
    """The config sections an annotation holds: ``X``, ``X | None``, ``list[X]``, a union."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return [annotation]
    found: list[type[Any]] = []
    for arg in get_args(annotation):
        found += [m for m in section_models(arg) if m not in found]
    return found


def _model_for(models: list[type[Any]], item: dict[str, Any]) -> type[Any]:
    """Which member of a tagged union (sources) an item is."""
    for model in models:
        tag = model.model_fields.get("type")
        if len(models) == 1 or (tag is not None and item.get("type") in get_args(tag.annotation)):
            return model
    raise ValueError(f"no section for {item.get('type')!r}")


def _example_data(model: type[Any], everything: bool = False) -> dict[str, Any]:
    """Input that validates as ``model``: each field's first example, the value of a
    one-value Literal (a source's ``type``), an example of each required section.
    ``everything``: also of each optional section of ``model`` and of each kind in a list
    (all sources), though not further down."""
    data: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        models = section_models(info.annotation)
        if info.examples:
            data[name] = info.examples[0]
        elif get_origin(info.annotation) is Literal and len(get_args(info.annotation)) == 1:
            data[name] = get_args(info.annotation)[0]
        elif (
            models
            and (info.is_required() or everything)
            and get_origin(info.annotation) is not dict
        ):
            listed = get_origin(info.annotation) is list
            items = [_example_data(m) for m in (models if everything else models[:1])]
            data[name] = items if listed else items[0]
    return data
