"""Alert hysteresis: turn a stream of anomaly scores into raise/clear decisions.

Kept apart from scoring (as river separates a detector's score from its threshold filter):
a score says how unusual a reading is; the latch decides when an operator is told.
A raise needs ``min_duration`` consecutive scores at or above ``threshold``; a clear needs
``min_duration`` consecutive scores below ``clear_threshold``; after a clear no new alert is
raised for ``cooldown`` seconds, so a flapping signal produces one alert, not twenty.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

Transition = Literal["raised", "cleared"]


@dataclass
class AlertLatch:
    threshold: float
    clear_threshold: float
    min_duration: int
    cooldown: float
    active: bool = False
    above: int = 0
    below: int = 0
    cooldown_until: float = -math.inf

    def update(self, score: float, ts: float, armed: bool = True) -> Transition | None:
        """Feed one score. ``armed`` is False during warm-up: nothing can be raised then."""
        if self.active:
            self.below = self.below + 1 if score < self.clear_threshold else 0
            if self.below >= self.min_duration:
                self.active = False
                self.below = 0
                self.above = 0
                self.cooldown_until = ts + self.cooldown
                return "cleared"
            return None
        self.above = self.above + 1 if score >= self.threshold else 0
        if armed and self.above >= self.min_duration and ts >= self.cooldown_until:
            self.active = True
            self.above = 0
            self.below = 0
            return "raised"
        return None

    def state(self) -> dict[str, Any]:
        data = asdict(self)
        if math.isinf(self.cooldown_until):
            data["cooldown_until"] = None
        return data

    def restore(self, data: dict[str, Any]) -> None:
        self.active = bool(data.get("active", False))
        self.above = int(data.get("above", 0))
        self.below = int(data.get("below", 0))
        until = data.get("cooldown_until")
        self.cooldown_until = -math.inf if until is None else float(until)
