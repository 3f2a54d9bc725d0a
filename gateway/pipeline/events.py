"""The upstream event rate: a subject that keeps producing events cannot flood the broker."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from gateway.records import Event


class EventRate:
    """At most ``burst`` events per subject go upstream, refilled at ``per_hour``: a stream or
    source that keeps producing events (a flapping link, a device resetting every minute)
    cannot flood the upstream broker. The rest are recorded locally (``events`` table,
    ``liquid-gateway events``) and counted."""

    def __init__(
        self,
        burst: int = 10,
        per_hour: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        max_subjects: int = 10_000,
    ) -> None:
        self.burst = burst
        self.rate_s = per_hour / 3600.0
        self._monotonic = monotonic
        self.max_subjects = max_subjects
        self._tokens: dict[str, tuple[float, float]] = {}  # subject -> (tokens, at)
        self.held_back = 0

    def sort(self, events: list[Event]) -> list[Event]:
        """The same events, those over the rate marked ``upstream=False``."""
        if not events:
            return events
        now = self._monotonic()
        tokens = self._tokens
        out: list[Event] = []
        for event in events:
            have, at = tokens.get(event.subject, (float(self.burst), now))
            have = min(float(self.burst), have + (now - at) * self.rate_s)
            if have >= 1.0:
                have -= 1.0
                out.append(event)
            else:
                self.held_back += 1
                out.append(dataclasses.replace(event, upstream=False))
            if event.subject not in tokens and len(tokens) >= self.max_subjects:
                tokens.pop(next(iter(tokens)))  # the oldest subject: it starts full again
            tokens[event.subject] = (have, now)
        return out
