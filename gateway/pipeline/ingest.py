"""The bounded hand-off between sources and the pipeline.

Three bounded lanes, so that one kind of record can never push out another:

* readings, bounded by ``queue_size``; when the pipeline falls behind the ``overflow``
  policy applies — ``drop_oldest`` (the default: the newest readings are the ones worth
  scoring) or ``drop_newest`` — and every dropped reading is counted, per source, for
  ``status``;
* events (port lost, stale, ...) — never displaced by readings or dead letters; their own
  bound only guards memory against a runaway source, and an overflow there is counted;
* dead letters — a flood of junk fills only this lane; the oldest are dropped first and
  counted per source and reason, so the junk is still accounted for.

``put`` never blocks: it is called from paho callbacks and reader threads.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Sequence

from gateway.config import IngestSection
from gateway.records import DeadLetter, Event, Reading, Record

EVENT_CAPACITY = 10_000


class IngestQueue:
    def __init__(
        self,
        capacity: int = 100_000,
        side_capacity: int = 10_000,
        overflow: str = "drop_oldest",
        event_capacity: int = EVENT_CAPACITY,
    ) -> None:
        if overflow not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"unknown overflow policy {overflow!r}")
        self._readings: deque[Reading] = deque()
        self._events: deque[Event] = deque()
        self._dead: deque[DeadLetter] = deque()
        self._capacity = capacity
        self._side_capacity = side_capacity
        self._event_capacity = event_capacity
        self.overflow = overflow
        self._cond = threading.Condition()
        self.dropped_readings = 0
        self.dropped_events = 0
        self.dropped_by_source: Counter[str] = Counter()  # readings, per source
        self.dropped_dead_letters: Counter[str] = Counter()  # "source/reason"
        self.accepted: Counter[str] = Counter()  # per source, readings accepted
        self.high_water = 0  # most readings ever waiting at once

    @classmethod
    def from_section(cls, section: IngestSection) -> IngestQueue:
        return cls(section.queue_size, section.dead_letter_queue, section.overflow)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def dropped_side(self) -> int:
        """Events and dead letters dropped (kept for the existing ``status`` key)."""
        return self.dropped_events + sum(self.dropped_dead_letters.values())

    def put(self, record: Record) -> None:
        """Never blocks: safe to call from paho callbacks and reader threads."""
        with self._cond:
            self._put(record)
            self._cond.notify()

    def put_many(self, records: Sequence[Record]) -> None:
        """Like ``put`` for each record, under one lock and with one wake-up: a source
        that parsed a burst hands it over at once instead of contending per record."""
        if not records:
            return
        with self._cond:
            for record in records:
                self._put(record)
            self._cond.notify()

    def _put(self, record: Record) -> None:
        if isinstance(record, Reading):
            if len(self._readings) >= self._capacity:
                if self.overflow == "drop_newest":
                    self.dropped_readings += 1
                    self.dropped_by_source[record.source] += 1
                    return
                old = self._readings.popleft()
                self.dropped_readings += 1
                self.dropped_by_source[old.source] += 1
            self._readings.append(record)
            self.accepted[record.source] += 1
            if len(self._readings) > self.high_water:
                self.high_water = len(self._readings)
        elif isinstance(record, Event):
            if len(self._events) >= self._event_capacity:
                self._events.popleft()
                self.dropped_events += 1
            self._events.append(record)
        else:
            if len(self._dead) >= self._side_capacity:
                old_dl = self._dead.popleft()
                self.dropped_dead_letters[f"{old_dl.source}/{old_dl.reason}"] += 1
            self._dead.append(record)

    def get_batch(
        self, max_items: int, timeout: float
    ) -> tuple[list[Reading], list[DeadLetter | Event]]:
        """Wait up to ``timeout`` s for anything, then take up to ``max_items`` readings
        and every pending event and dead letter (events first)."""
        with self._cond:
            if not self._readings and not self._events and not self._dead:
                self._cond.wait(timeout)
            n = min(max_items, len(self._readings))
            readings = [self._readings.popleft() for _ in range(n)]
            side: list[DeadLetter | Event] = [*self._events, *self._dead]
            self._events.clear()
            self._dead.clear()
            return readings, side

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until anything is queued; True if something is."""
        with self._cond:
            if not self._readings and not self._events and not self._dead:
                self._cond.wait(timeout)
            return bool(self._readings or self._events or self._dead)

    def stats(self) -> dict[str, object]:
        """Back-pressure counters for ``status``."""
        with self._cond:
            return {
                "queue_size": self._capacity,
                "overflow": self.overflow,
                "waiting_readings": len(self._readings),
                "high_water": self.high_water,
                "dropped_readings": self.dropped_readings,
                "dropped_by_source": dict(self.dropped_by_source),
                "dropped_events": self.dropped_events,
                "dropped_dead_letters": dict(self.dropped_dead_letters),
            }

    def __len__(self) -> int:
        with self._cond:
            return len(self._readings) + len(self._events) + len(self._dead)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
