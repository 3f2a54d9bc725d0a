"""Where a config keeps its database, read without validating the whole config.

The query commands (``status``, ``streams``, ``alerts list/show/export``, ``events list``)
need only the database and the gateway's name, and they are what an operator types most:
building the whole schema (pydantic, ~0.1 s) for two values made each one slow (#14 item 10).

One reading, not a second parser: the file is read by the full loader's own code
(``documents.py``: the same bounds, ``${ENV}`` substitution and ``include:`` merging), and the
defaults, the name rule and the rule for relative paths are defined here and used by the
schema. Where a value is not plainly what the full loader accepts (not a string, a key the
``gateway`` section does not have, any issue reading the files), ``locate_database`` answers
None and the caller loads the config in full, so an operator sees the full loader's error
with its file:line. Sections other than ``gateway`` are not checked: ``config validate`` does
that, and a config broken elsewhere does not keep an operator from the alerts its gateway
stored. ``tests/config/test_locate.py`` holds this to the full loader on every example config.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError

# Names that end up inside MQTT topics and file names: no wildcards, separators or spaces.
# Always checked with fullmatch (``is_name``): with ``match``, "$" also matches before a final
# newline, and one stream named "ok\n" made every upstream publish behind it fail.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
_NAME_RE = re.compile(NAME_PATTERN)

DEFAULT_GATEWAY_ID = "liquid-gateway"
DEFAULT_DATA_DIR = Path("/var/lib/liquid-gateway")
DATABASE_FILE = "gateway.db"
GATEWAY_KEYS = frozenset({"id", "data_dir", "log_level"})  # GatewaySection's fields


def is_name(value: str) -> bool:
    """Whether ``value`` is a valid gateway, source, stream or asset name (the whole string)."""
    return _NAME_RE.fullmatch(value) is not None


def resolved(path: Path, base: Path) -> Path:
    """A path from the config as the gateway uses it: ``~`` expanded, a relative path taken
    from ``base`` (the config file's folder)."""
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def demo_config_path() -> Path:
    """The embedded demo config: in the wheel, or in the source tree."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "_data" / "demo.yaml"
    if packaged.exists():
        return packaged
    return package.parent / "config" / "demo.yaml"


@dataclass(frozen=True)
class DatabaseLocation:
    gateway_id: str
    database_path: Path


def locate_database(path: str | os.PathLike[str]) -> DatabaseLocation | None:
    """The gateway's name and database file as ``load_config(path)`` would give them, or
    None when only the full loader can tell (it then says what is wrong)."""
    # documents.py (PyYAML) is imported here: `version` and tab completion never need it.
    from gateway.config.documents import MAX_CONFIG_BYTES, construct, read_bounded, read_tree

    file = Path(path)
    try:
        text = read_bounded(file, MAX_CONFIG_BYTES).decode("utf-8")
        base = file.resolve().parent
        tree = read_tree(text, str(file), base, file)
        data = construct(tree.root)
    except (ConfigError, OSError, UnicodeDecodeError, ValueError):
        return None
    if data is None:
        data = {}
    if not isinstance(data, dict) or any(
        key[:1] == ("gateway",) for key, *_ in tree.lines.duplicates
    ):
        return None
    section = data.get("gateway")
    if section is None:  # `gateway:` left empty is the default section, as in the schema
        section = {}
    if not isinstance(section, dict) or not GATEWAY_KEYS.issuperset(section):
        return None
    gateway_id = section.get("id", DEFAULT_GATEWAY_ID)
    data_dir = section.get("data_dir", str(DEFAULT_DATA_DIR))
    if not (isinstance(gateway_id, str) and is_name(gateway_id)):
        return None
    if not isinstance(data_dir, str):
        return None
    return DatabaseLocation(gateway_id, resolved(Path(data_dir), base) / DATABASE_FILE)
