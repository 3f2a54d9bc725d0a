"""How unusual is this value of a statistic, judged against its own recent history?

The anomaly statistic (a short average of surprise, or the second-largest of the last few)
is skewed, and differently so on every stream: a Gaussian fit puts its extreme quantiles far
too low on heavy-tailed streams and far too high on quantised ones. Instead we keep the last
``size`` values seen while the stream was healthy, read off its 50th, 90th and 99th
percentiles, and model the tail beyond the 90th as exponential (peaks over a threshold):

    P(X > x) = 0.1 * exp(-(x - q90) / beta),   beta = (q99 - q90) / ln 10

Below the 90th percentile the tail probability is interpolated from the quantiles. The score
is the probability that a healthy stream stays below the value for ``horizon`` readings.

The history is kept twice: as a ring (what to forget next) and sorted (bisect), so a
quantile is an index, not a sort: this runs once per reading on every stream.

A value beyond the 1-in-``learn_p`` point of the tail is not learned. Such a value is either
a fault that has not (yet) raised an alert or a rare healthy excursion; learning the first
kind is how a detector comes to accept a slowly arriving fault as normal (measured on SKAB: a
flow drop of two quantisation steps entered the 90th percentile within a minute and was never
alarmed), and skipping the second kind costs almost nothing, since the quantiles the tail is
read from (50/90/99 %) are far from 1-in-3,000. A tail that is too light to begin with still
corrects itself: the values between its 99th percentile and the skip point are learned.
"""

from __future__ import annotations

import base64
import bisect
import math
import struct
from typing import Any

import numpy as np

_REFRESH = 25  # recompute the quantiles every this many updates once the buffer is full
LEARN_P = 3e-4  # values rarer than this (under the current tail) are not learned
_F32 = struct.Struct("f")


def _float32(value: float) -> float:
    """Values are kept at float32 precision (they are persisted, and that is plenty)."""
    return _F32.unpack(_F32.pack(value))[0]


class TailModel:
    def __init__(
        self,
        size: int = 1000,
        min_count: int = 30,
        beta_floor: float = 0.1,
        horizon: int = 100,
        learn_p: float = LEARN_P,
    ) -> None:
        self._learn_p = learn_p
        self._horizon = horizon
        self._size = size
        self._ring: list[float] = []
        self._sorted: list[float] = []
        self._pos = 0
        self.count = 0
        self._since_refresh = 0
        self._min_count = min_count
        self._beta_floor = beta_floor
        self._q = (0.0, 0.0, 0.0)

    @property
    def ready(self) -> bool:
        return self.count >= self._min_count

    def update(self, value: float) -> bool:
        """Learn one healthy value; False when it was too far out in the tail to learn."""
        if self.count >= self._min_count and self.exceedance(value) < self._learn_p:
            return False
        value = _float32(value)
        if len(self._ring) < self._size:
            self._ring.append(value)
        else:
            old = self._ring[self._pos]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
            self._ring[self._pos] = value
        bisect.insort(self._sorted, value)
        self._pos = (self._pos + 1) % self._size
        self.count += 1
        self._since_refresh += 1
        if self.count <= self._size or self._since_refresh >= _REFRESH:
            self._refresh()
        return True

    def _quantile(self, q: float) -> float:
        """Linear interpolation between order statistics (numpy's default percentile)."""
        values = self._sorted
        pos = (len(values) - 1) * q
        lo = int(pos)
        hi = min(lo + 1, len(values) - 1)
        t = pos - lo
        a, b = values[lo], values[hi]
        return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t

    def _refresh(self) -> None:
        self._q = (self._quantile(0.5), self._quantile(0.9), self._quantile(0.99))
        self._since_refresh = 0

    def exceedance(self, value: float) -> float:
        """P(a healthy value >= value), from the quantiles and the exponential tail."""
        q50, q90, q99 = self._q
        # The 99th percentile of a few hundred values is itself noisy; the 50-90 gap is a
        # steadier second estimate of the tail's scale, and we take the more cautious one.
        beta = max((q99 - q90) / math.log(10.0), (q90 - q50) / math.log(5.0), self._beta_floor)
        if value > q90:
            return 0.1 * math.exp(-(value - q90) / beta)
        if value > q50:
            return 0.5 - 0.4 * (value - q50) / max(q90 - q50, 1e-12)
        return 0.5

    def score(self, value: float) -> float:
        """In [0, 1]: the probability that ``horizon`` healthy readings in a row would all stay
        below ``value``. Per-reading tail probabilities would alarm once every 1/(1-threshold)
        readings on a healthy stream; over a horizon, 0.999 means a 1e-5 tail per reading."""
        if not self.ready:
            return 0.0
        return math.exp(-self._horizon * self.exceedance(value))

    def state(self) -> dict[str, Any]:
        """Compact: the ring as base64 float32 (about 5 KB, not 20 KB of JSON numbers),
        since every stream's tail is checkpointed."""
        packed = np.asarray(self._ring, np.float32).tobytes()
        return {
            "ring": base64.b64encode(packed).decode("ascii"),
            "pos": self._pos,
            "count": self.count,
        }

    def raw(self) -> tuple[bytes, int, int, int, float, float, float]:
        """Everything, exactly (the compiled detector core keeps tails in C and trades them
        with this): the ring as float32 bytes, position, counters and current quantiles."""
        ring = np.asarray(self._ring, np.float32).tobytes()
        return (ring, self._pos, self.count, self._since_refresh, *self._q)

    def load_raw(self, raw: tuple[bytes, int, int, int, float, float, float]) -> None:
        """The inverse of ``raw``: no checks, the values come from a live TailModel."""
        ring, pos, count, since, q50, q90, q99 = raw
        self._ring = np.frombuffer(ring, np.float32).tolist()
        self._sorted = sorted(self._ring)
        self._pos, self.count, self._since_refresh = pos, count, since
        self._q = (q50, q90, q99)

    def restore(self, data: dict[str, Any]) -> None:
        ring = np.frombuffer(base64.b64decode(data["ring"], validate=True), np.float32)
        count, pos = int(data["count"]), int(data["pos"])
        if len(ring) != min(count, self._size) or count < 0 or not np.all(np.isfinite(ring)):
            raise ValueError("tail model state does not fit")
        self._ring = ring.tolist()
        self._sorted = sorted(self._ring)
        self._pos = pos % self._size
        self.count = count
        if self.count:
            self._refresh()
