"""The bounded hand-off between sources and the pipeline.

Readings are bounded by ``capacity``; when the pipeline falls behind, the oldest readings
are dropped and counted (the operator sees the count in ``status``). Events and dead letters
never displace readings and are never dropped silently: they have their own bound, and
overflow there is counted too.
"""

from __future__ import annotations

import threading
from collections import Counter, deque

from gateway.records import DeadLetter, Event, Reading, Record


class IngestQueue:
    def __init__(self, capacity: int = 100_000, side_capacity: int = 10_000) -> None:
        self._readings: deque[Reading] = deque()
        self._side: deque[DeadLetter | Event] = deque()
        self._capacity = capacity
        self._side_capacity = side_capacity
        self._cond = threading.Condition()
        self.dropped_readings = 0
        self.dropped_side = 0
        self.accepted: Counter[str] = Counter()  # per source, readings accepted

    def put(self, record: Record) -> None:
        """Never blocks: safe to call from paho callbacks and reader threads."""
        with self._cond:
            if isinstance(record, Reading):
                if len(self._readings) >= self._capacity:
                    self._readings.popleft()
                    self.dropped_readings += 1
                self._readings.append(record)
                self.accepted[record.source] += 1
            else:
                if len(self._side) >= self._side_capacity:
                    self._side.popleft()
                    self.dropped_side += 1
                self._side.append(record)
            self._cond.notify()

    def put_many(self, records: list[Record]) -> None:
        for record in records:
            self.put(record)

    def get_batch(
        self, max_items: int, timeout: float
    ) -> tuple[list[Reading], list[DeadLetter | Event]]:
        """Wait up to ``timeout`` s for anything, then take up to ``max_items`` readings
        and every pending event and dead letter."""
        with self._cond:
            if not self._readings and not self._side:
                self._cond.wait(timeout)
            n = min(max_items, len(self._readings))
            readings = [self._readings.popleft() for _ in range(n)]
            side = list(self._side)
            self._side.clear()
            return readings, side

    def __len__(self) -> int:
        with self._cond:
            return len(self._readings) + len(self._side)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
