"""Notice streams that fall silent, and streams that keep coming and going.

A sensor that stops talking is not an anomaly in its values — there are none — so the
detector cannot see it. This tracker, owned by the pipeline thread, learns each stream's
usual interval (a running average of the gaps between its reading timestamps, long gaps
left out) and reports:

* ``stale`` when the stream has been silent for ``stale_factor`` x its usual interval (and at
  least ``stale_min``), once;
* ``recovered`` when a stale stream reads again, with how long it was silent;
* ``flapping`` when a stream went stale ``flap_limit`` times within ``flap_window``: reported
  once, after which its stale/recovered events are held back (still counted) until it has
  been steady for a whole window, which is reported as ``steady``;
* ``source_stale`` / ``source_recovered`` instead of the streams' own events when
  ``COALESCE_AT`` or more streams of one source go stale in one scan, or come back in one
  batch: a blip of a broker is one event naming the source, with how many streams and a
  sample of their names, not one per stream.

Silence is measured on the pipeline's monotonic clock (when it received the reading), not on
device timestamps, so a device clock that jumps does not make streams stale. Pure logic:
the clocks are passed in, so tests drive it without waiting.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.config import IngestSection
from gateway.records import Event, Reading

INTERVAL_WEIGHT = 0.1  # weight of the newest gap in the running interval
MIN_GAPS = 3  # gaps seen before a stream's interval is trusted
SCAN_EVERY = 0.25  # seconds between scans of every stream (the pipeline loops faster)
COALESCE_AT = 3  # streams of one source changing together: one source-level event
SAMPLE = 10  # stream names a source-level event lists


@dataclass(slots=True)
class _Stream:
    last_seen: float  # monotonic
    last_ts: float  # reading timestamp
    source: str = ""
    interval: float | None = None
    gaps: int = 0
    stale_since: float | None = None  # monotonic
    stale_times: deque[float] = field(default_factory=deque)
    flapping: bool = False
    steady_since: float = 0.0


class StalenessTracker:
    def __init__(
        self,
        section: IngestSection,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.section = section
        self._monotonic = monotonic
        self._wall = wall
        self._streams: dict[str, _Stream] = {}
        self.suppressed = 0  # events held back while streams flap
        self._last_scan = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.section.stale_factor is not None

    def stale_streams(self) -> list[str]:
        return sorted(n for n, s in self._streams.items() if s.stale_since is not None)

    def interval(self, stream: str) -> float | None:
        state = self._streams.get(stream)
        return None if state is None else state.interval

    def forget(self, streams: Iterable[str]) -> None:
        """Streams the detector forgot (``limits.stream_retention``): no longer watched."""
        for stream in streams:
            self._streams.pop(stream, None)

    def observe(self, readings: Iterable[Reading]) -> list[Event]:
        """Note readings the pipeline received; ``recovered`` events for stale streams."""
        if not self.enabled:
            return []
        now = self._monotonic()
        events: list[Event] = []
        for reading in readings:
            state = self._streams.get(reading.stream)
            if state is None:
                self._streams[reading.stream] = _Stream(
                    now, reading.ts, reading.source, steady_since=now
                )
                continue
            gap = reading.ts - state.last_ts
            if state.stale_since is not None:
                events += self._recover(reading.stream, state, now)
            elif gap > 0 and not self._is_long(state, gap):
                if state.interval is None:
                    state.interval = gap
                else:
                    state.interval += INTERVAL_WEIGHT * (gap - state.interval)
                state.gaps += 1
            state.last_seen = now
            state.last_ts = max(state.last_ts, reading.ts)
        return self._coalesce(events, "recovered", "source_recovered")

    def check(self) -> list[Event]:
        """``stale``, ``flapping`` and ``steady`` events due now."""
        if not self.enabled:
            return []
        now = self._monotonic()
        if now - self._last_scan < SCAN_EVERY:
            return []
        self._last_scan = now
        events: list[Event] = []
        window = self.section.flap_window
        for name, state in self._streams.items():
            if state.flapping and state.stale_since is None and now - state.steady_since > window:
                state.flapping = False
                state.stale_times.clear()
                events.append(self._event("steady", name, window_s=window))
            if state.stale_since is not None:
                continue
            limit = self._limit(state)
            if limit is None or now - state.last_seen <= limit:
                continue
            state.stale_since = now
            while state.stale_times and now - state.stale_times[0] > window:
                state.stale_times.popleft()
            state.stale_times.append(now)
            detail = {
                "silent_s": round(now - state.last_seen, 3),
                "usual_interval_s": round(state.interval or 0.0, 6),
            }
            if state.flapping:
                self.suppressed += 1
            elif len(state.stale_times) >= self.section.flap_limit:
                state.flapping = True
                events.append(
                    self._event("flapping", name, stale_count=len(state.stale_times), **detail)
                )
            else:
                events.append(self._event("stale", name, **detail))
        return self._coalesce(events, "stale", "source_stale")

    def _coalesce(self, events: list[Event], kind: str, source_kind: str) -> list[Event]:
        """Events of ``kind`` for COALESCE_AT or more streams of one source become one
        ``source_kind`` event about the source."""
        by_source: dict[str, list[Event]] = {}
        for event in events:
            if event.kind == kind:
                by_source.setdefault(self._streams[event.subject].source, []).append(event)
        merged = {s: group for s, group in by_source.items() if len(group) >= COALESCE_AT}
        if not merged:
            return events
        out = [e for e in events if e.kind != kind or self._streams[e.subject].source not in merged]
        for source, group in merged.items():
            silent = max(float(e.detail.get("silent_s", 0.0)) for e in group)
            sample = sorted(e.subject for e in group)[:SAMPLE]
            detail: dict[str, float | int | str] = {
                "streams": len(group),
                "sample": ", ".join(sample),
                "silent_s": round(silent, 3),
            }
            out.append(Event(source_kind, source, ts=self._wall(), detail=detail))
        return out

    def _recover(self, name: str, state: _Stream, now: float) -> list[Event]:
        assert state.stale_since is not None
        silent = now - state.last_seen
        state.stale_since = None
        state.steady_since = now
        if state.flapping:
            self.suppressed += 1
            return []
        return [self._event("recovered", name, silent_s=round(silent, 3))]

    def _limit(self, state: _Stream) -> float | None:
        factor = self.section.stale_factor
        if factor is None or state.interval is None or state.gaps < MIN_GAPS:
            return None
        return max(self.section.stale_min, factor * state.interval)

    def _is_long(self, state: _Stream, gap: float) -> bool:
        """A gap that is itself a silence must not teach the stream a longer interval."""
        limit = self._limit(state)
        return limit is not None and gap > limit

    def _event(self, kind: str, stream: str, **detail: float | int) -> Event:
        return Event(kind=kind, subject=stream, ts=self._wall(), detail=dict(detail))
