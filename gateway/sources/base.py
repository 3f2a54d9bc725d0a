"""What every source has in common: its threads, its stop event, its counters.

A source reads from the outside world and puts ``Reading``, ``DeadLetter`` and ``Event``
records into a sink that never blocks (the ingest queue). It owns its I/O objects and the
threads that use them. A thread body is called again and again until ``stop()``; an
unexpected exception in it is caught here, at the top of the loop, counted and logged
(rate-limited) — a source thread never dies silently and never spins on a broken device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gateway.records import DeadLetter, Event, Reading, Record
from gateway.sources.parsers import Parsed

log = logging.getLogger(__name__)

ERROR_PAUSE = 1.0  # seconds a thread waits after an unexpected error before carrying on


class Sink(Protocol):
    """Where records go; a sink may also offer ``put_many(records)`` (the ingest queue
    does), which sources use for a burst of readings."""

    def put(self, record: Record) -> None: ...


class RateLimitedLog:
    """Log the first occurrence of a key at once, then at most once per ``interval``
    seconds, saying how many were suppressed in between."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(
        self, level: int, key: str, msg: str, *args: Any, exc_info: BaseException | None = None
    ) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] += 1
                return
            suppressed = self._suppressed.pop(key, 0)
            self._last[key] = now
        if suppressed:
            msg += " (%d more since the last report)"
            args = (*args, suppressed)
        self._logger.log(level, msg, *args, exc_info=exc_info)


class Source:
    """Base class: subclasses return their thread bodies from ``_bodies()``."""

    def __init__(self, section: Any, sink: Sink) -> None:
        self.section = section
        self.name: str = section.name
        self._sink = sink
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._readings = 0
        self._dead_letters: Counter[str] = Counter()
        self._events: Counter[str] = Counter()
        self._errors = 0
        self._last_reading_ts: float | None = None
        self._connected: bool | None = None
        self._reconnects = 0
        self._log = RateLimitedLog(log)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            raise RuntimeError(f"source {self.name} already started")
        for body in self._bodies():
            thread = threading.Thread(
                target=self._run, args=(body,), name=f"source-{self.name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Ask every thread to finish and interrupt blocking I/O; does not wait."""
        self._stop.set()
        self._interrupt()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads; True when all have finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        return not any(t.is_alive() for t in self._threads)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stats(self) -> dict[str, Any]:
        """Counters for the ``status`` command; plain JSON types only."""
        with self._lock:
            stats: dict[str, Any] = {
                "type": getattr(self.section, "type", type(self).__name__),
                "readings": self._readings,
                "dead_letters": dict(self._dead_letters),
                "dead_letters_total": sum(self._dead_letters.values()),
                "connected": self._connected,
                "last_reading_ts": self._last_reading_ts,
                "reconnects": self._reconnects,
                "errors": self._errors,
                "events": dict(self._events),
            }
        stats.update(self._extra_stats())
        return stats

    # --- for subclasses ------------------------------------------------------------------

    def _bodies(self) -> Sequence[Callable[[], None]]:
        """One callable per thread; each call does one unit of work and returns."""
        return []

    def _interrupt(self) -> None:
        """Unblock I/O so threads notice the stop event (called from another thread)."""

    def _cleanup(self) -> None:
        """Close I/O; runs on the source's own thread after its loop ends."""

    def _extra_stats(self) -> dict[str, Any]:
        return {}

    def _run(self, body: Callable[[], None]) -> None:
        try:
            while not self._stop.is_set():
                try:
                    body()
                except Exception as exc:  # the top of the thread loop: count, log, carry on
                    self._error(exc)
                    self._stop.wait(ERROR_PAUSE)
        finally:
            try:
                self._cleanup()
            except Exception as exc:
                self._error(exc)

    def _error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors += 1
        self._log(
            logging.ERROR,
            f"error:{type(exc).__name__}",
            "source %s: unexpected %s: %s",
            self.name,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )

    def _emit(self, parsed: Parsed, payload: bytes | str, where: str = "") -> None:
        """Readings to the sink; the record's rejected fields as one dead letter."""
        self._emit_readings(parsed.readings)
        if parsed.rejects:
            detail = parsed.rejects_detail()
            self._dead_letter(parsed.rejects[0].reason, payload, f"{where}{detail}")

    def _emit_readings(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        put_many = getattr(self._sink, "put_many", None)
        if put_many is not None:
            put_many(readings)
        else:
            for reading in readings:
                self._sink.put(reading)
        with self._lock:
            self._readings += len(readings)
            self._last_reading_ts = readings[-1].ts

    def _dead_letter(self, reason: str, payload: bytes | str, detail: str = "") -> None:
        self._sink.put(DeadLetter.of(self.name, reason, payload, detail))
        with self._lock:
            self._dead_letters[reason] += 1
        self._log(
            logging.WARNING,
            f"dead:{reason}",
            "source %s: dead letter (%s) %s",
            self.name,
            reason,
            detail[:200],
        )

    def _event(self, kind: str, subject: str | None = None, **detail: Any) -> None:
        self._sink.put(Event(kind=kind, subject=subject or self.name, detail=detail))
        with self._lock:
            self._events[kind] += 1

    def _set_connected(self, connected: bool, reconnect: bool = False) -> None:
        with self._lock:
            self._connected = connected
            if reconnect:
                self._reconnects += 1
