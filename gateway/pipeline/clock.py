"""Time that comes from outside: device timestamps and the wall clock itself.

Two rules, each in one place:

- ``TimeGuard``: a reading stamped more than ``ingest.max_clock_skew`` ahead of the gateway's
  clock, or that far behind the newest reading of its stream, is dead-lettered
  (``future_timestamp``, ``timestamp_went_back``) instead of being scored: a device clock that
  jumps back and forth is quarantined and reported once (a ``device_clock`` event per stream,
  at most one per ``EVENT_EVERY_S``), not learned as silences and restarts.
- ``WallClock``: the gateway's own clock may jump (an NTP step, an operator, a board without a
  real-time clock). Between two prunes it is compared with the monotonic clock; after a jump
  pruning by age waits one retention of monotonic time before it trusts the clock again, so a
  clock set a year ahead does not delete a year of history (pruning by size still runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.records import DeadLetter, Event, Reading

EVENT_EVERY_S = 3600.0  # a device_clock event per stream at most this often (monotonic)
JUMP_S = 120.0  # the wall clock moving this much more (or less) than the monotonic one


@dataclass
class _Stream:
    newest: float
    letters: int = 0  # readings dead-lettered since the last event
    reported_at: float = -float("inf")  # monotonic


class TimeGuard:
    def __init__(
        self,
        skew_s: float | None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.skew_s = skew_s
        self._wall = wall
        self._monotonic = monotonic
        self._streams: dict[str, _Stream] = {}
        self.quarantined = 0

    def check(self, readings: list[Reading]) -> tuple[list[Reading], list[DeadLetter | Event]]:
        """(the readings to score, dead letters and events for the others)."""
        skew = self.skew_s
        if skew is None or not readings:
            return readings, []
        ahead = self._wall() + skew
        streams = self._streams
        kept: list[Reading] = []
        side: list[DeadLetter | Event] = []
        for r in readings:
            state = streams.get(r.stream)
            if r.ts > ahead:
                reason, detail = "future_timestamp", f"more than {skew:g} s ahead of the gateway"
            elif state is not None and r.ts < state.newest - skew:
                reason = "timestamp_went_back"
                detail = f"more than {skew:g} s before the stream's newest reading"
            else:
                if state is None:
                    streams[r.stream] = _Stream(r.ts)
                elif r.ts > state.newest:
                    state.newest = r.ts
                kept.append(r)
                continue
            self.quarantined += 1
            side.append(
                DeadLetter.of(r.source, reason, f"{r.stream} {r.value!r} @ {r.ts!r}", detail)
            )
            if state is None:
                continue  # a stream's very first reading: nothing to compare a clock with
            state.letters += 1
            now = self._monotonic()
            if now - state.reported_at >= EVENT_EVERY_S:
                state.reported_at = now
                info: dict[str, float | int | str] = {
                    "reason": reason,
                    "reading_ts": r.ts,
                    "newest_ts": state.newest,
                    "quarantined": state.letters,
                }
                side.append(Event("device_clock", r.stream, ts=self._wall(), detail=info))
                state.letters = 0
        return kept, side

    def forget(self, streams: Iterable[str]) -> None:
        for stream in streams:
            self._streams.pop(stream, None)


class WallClock:
    """Notices jumps of the wall clock against the monotonic one, at each ``jumped`` call."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._ref = (wall(), monotonic())
        self._distrust_until = -float("inf")  # monotonic

    def now(self) -> float:
        return self._wall()

    def jumped(self, hold_s: float) -> float | None:
        """The jump since the last call, in seconds (None if none); after one, ``trusted``
        is False for ``hold_s`` of monotonic time."""
        wall, mono = self._wall(), self._monotonic()
        jump = (wall - self._ref[0]) - (mono - self._ref[1])
        self._ref = (wall, mono)
        if abs(jump) <= JUMP_S:
            return None
        self._distrust_until = mono + hold_s
        return jump

    @property
    def trusted(self) -> bool:
        return self._monotonic() >= self._distrust_until
