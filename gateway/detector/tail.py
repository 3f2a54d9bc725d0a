"""How unusual is this value of a statistic, judged against its own recent history?

The anomaly statistic (a short average of log surprise, or the second-largest of the last
few) is skewed, and differently so on every stream: a Gaussian fit puts its 0.999 point
far too low on heavy-tailed streams and far too high on quantised ones. Instead we keep the
last ``size`` values seen while the stream was healthy, read off its 50th, 90th and 99th
percentiles, and model the tail beyond the 90th as exponential (peaks over a threshold):

    P(X > x) = 0.1 * exp(-(x - q90) / beta),   beta = (q99 - q90) / ln 10

Below the 90th percentile the tail probability is interpolated from the quantiles. The score
is the probability that a healthy stream stays below the value for ``horizon`` readings.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_REFRESH = 25  # recompute the quantiles every this many updates once the buffer is full


class TailModel:
    def __init__(
        self, size: int = 1000, min_count: int = 30, beta_floor: float = 0.1, horizon: int = 100
    ) -> None:
        self._horizon = horizon
        self._values = np.zeros(size, np.float32)
        self._pos = 0
        self.count = 0
        self._since_refresh = 0
        self._min_count = min_count
        self._beta_floor = beta_floor
        self._q = (0.0, 0.0, 0.0)

    @property
    def ready(self) -> bool:
        return self.count >= self._min_count

    def update(self, value: float) -> None:
        self._values[self._pos] = value
        self._pos = (self._pos + 1) % len(self._values)
        self.count += 1
        self._since_refresh += 1
        if self.count <= len(self._values) or self._since_refresh >= _REFRESH:
            self._refresh()

    def _refresh(self) -> None:
        n = min(self.count, len(self._values))
        q50, q90, q99 = np.percentile(self._values[:n], (50.0, 90.0, 99.0))
        self._q = (float(q50), float(q90), float(q99))
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
        return {"values": self._values.tolist(), "pos": self._pos, "count": self.count}

    def restore(self, data: dict[str, Any]) -> None:
        values = np.asarray(data["values"], np.float32)
        if values.shape != self._values.shape or not np.all(np.isfinite(values)):
            raise ValueError("tail model state does not fit")
        self._values = values
        self._pos = int(data["pos"]) % len(values)
        self.count = int(data["count"])
        if self.count:
            self._refresh()
