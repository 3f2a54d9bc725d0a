"""The config as text: ``config show`` (the effective config) and ``config sample``.

Both are written from the schema and a validated ``Config``, never from a second list of keys,
so neither can drift from what the loader accepts; and both load again unchanged.
"""

from __future__ import annotations

import yaml

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
        redacted(config), sort_keys=False, allow_unicode=True, width=1_000_000
    )
