"""Small test helpers shared across the suite: a sink that keeps what it gets, one polling
helper, and one way to start the daemon as its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
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


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, what: str = "", every: float = 0.005
) -> Any:
    """Poll until ``predicate`` returns something truthy; generous, never a timing check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")


REPO = Path(__file__).resolve().parents[1]


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Stop a server a fixture started: SIGTERM, then SIGKILL if it does not go in time."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def start_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``liquid-gateway run -c CONFIG`` in its own process, from this tree, its log (stderr)
    appended to ``log``; the caller stops it (SIGTERM) and waits."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
