"""The gateway's SQLite database: readings, alerts, events, the outbox, dead letters and
detector state. ``database.py`` holds the ``Store`` and its schema migrations; this module is
the public face other packages import from."""

from gateway.store.database import (
    DEFAULT_OUTPUT,
    MIGRATIONS,
    AlertRow,
    AlertState,
    Durability,
    EventRow,
    Health,
    Migration,
    OutboxRow,
    Retention,
    StartCheck,
    Store,
    StreamRow,
    disk_bytes,
    find_damage,
    migrate,
    move_aside,
    salvage_outbox,
    schema_version,
)
from gateway.store.wal import WalCheckpointer

__all__ = [
    "AlertRow",
    "DEFAULT_OUTPUT",
    "AlertState",
    "Durability",
    "EventRow",
    "Health",
    "MIGRATIONS",
    "Migration",
    "OutboxRow",
    "Retention",
    "StartCheck",
    "Store",
    "StreamRow",
    "WalCheckpointer",
    "disk_bytes",
    "find_damage",
    "salvage_outbox",
    "migrate",
    "move_aside",
    "schema_version",
]
