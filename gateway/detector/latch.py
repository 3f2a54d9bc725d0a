"""Alert hysteresis: turn a stream of anomaly scores into raise/clear decisions.

Kept apart from scoring (as river separates a detector's score from its threshold filter):
a score says how unusual a reading is; the latch decides when an operator is told.
A raise needs ``min_duration`` consecutive scores at or above ``threshold``; a clear needs
``min_duration`` consecutive scores below ``clear_threshold``. For ``cooldown`` seconds after a
clear, a new alert needs ``cooldown_min_duration`` consecutive scores at or above the threshold
instead: a flapping signal still produces one alert, not twenty, but a fault whose score dipped
for a moment right after it was raised is not hidden for the whole cooldown. (Blocking every
raise during the cooldown did hide them: on SKAB, alerts raised on a pressure blip and cleared
four readings later left the flow fault that followed, at score 1.0, unreported for five
minutes; a quarter of all missed fault readings were such blind spots.)
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
    cooldown_min_duration: int = 0  # 0: no raise at all during the cooldown
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
        if ts >= self.cooldown_until:
            needed = self.min_duration
        elif self.cooldown_min_duration > 0:
            needed = max(self.min_duration, self.cooldown_min_duration)
        else:
            return None
        if armed and self.above >= needed:
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
