"""Small test helpers shared by the source and ingest tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gateway.records import DeadLetter, Event, Reading, Record


class ListSink:
    """Stands where the ingest queue stands: records what a source puts."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def put(self, record: Record) -> None:
        self.records.append(record)

    def readings(self, stream: str | None = None) -> list[Reading]:
        return [
            r
            for r in self.records
            if isinstance(r, Reading) and (stream is None or r.stream == stream)
        ]

    def dead(self) -> list[DeadLetter]:
        return [r for r in self.records if isinstance(r, DeadLetter)]

    def events(self, kind: str | None = None) -> list[Event]:
        return [
            r for r in self.records if isinstance(r, Event) and (kind is None or r.kind == kind)
        ]

    def count(self, kind: str) -> int:
        return len(self.events(kind))


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll until ``predicate`` returns something truthy; generous, never a timing check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")
