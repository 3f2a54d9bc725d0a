"""The detectors the benchmarks compare, behind one shape: a file in, per-row alert flags out.

The gateway's detector is run through ``gateway.pipeline.replay.replay`` (the code path the
``replay`` command uses), never by calling the engine directly, so the benchmark measures what
an operator would get from a backtest. Label columns are stripped with replay's ``ignore`` parameter.
``replay`` writes no events, so ``run_replay`` swaps in a Detector subclass that records the
events the engine emits (drift) without changing what it computes.

The two classical baselines are deliberately simple and use no labels:

- rolling z-score: per channel, the mean and standard deviation of the previous ``window``
  rows (the current row excluded); alert while max |z| over channels > ``z`` for at least
  ``min_run`` consecutive rows;
- static band: per-channel mean +- ``k`` std of the first ``train_rows`` rows; alert while any
  channel is outside its band (no alert during the training rows).

Both floor a channel's standard deviation as the engine does (``1e-4 |mean| + 1e-9``), so a
channel that was constant is judged on relative, not infinite, deviations.

``NoPredictionModel`` is the second ablation: it predicts nothing (NaN), which the engine (both
cores) treats as "no prediction", so a reading can only fail the level and stuck tests. Beside
the CfC and the naive predictor it shows what the prediction test adds at all, and what the
liquid model adds to it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

import gateway.pipeline.replay
from gateway.config import Config
from gateway.detector import Detector
from gateway.detector.engine import DetectorOutput
from gateway.model.naive import NaiveModel
from gateway.model.runtime import StepModel
from gateway.records import Event

SCALE_FLOOR_REL = 1e-4
SCALE_FLOOR_ABS = 1e-9


class NoPredictionModel(NaiveModel):
    """The StepModel interface with no prediction: ``pred`` is NaN, so the detector's
    prediction test never runs; level, stuck, tails, latch and adaptation are unchanged."""

    runtime = "none"

    def __init__(self) -> None:
        super().__init__(log_var=0.0)
        self.name = "no-prediction"
        self.model_id = f"{self.name}@{self.sha256[:8]}"
        self.path = Path("no-prediction")

    def step(
        self, x: np.ndarray, h: np.ndarray, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pred, log_var, h_new = super().step(x, h, dt)  # its shape checks
        return np.full_like(pred, np.nan), log_var, h_new


@dataclass
class ReplayRun:
    timestamps: list[str]
    score: np.ndarray
    alert: np.ndarray
    channels: list[str]
    seconds: float
    events: list[Event] = field(default_factory=list)
    core: str = ""  # the detector core that ran ("compiled" or "python")

    @property
    def rows_per_second(self) -> float:
        return len(self.alert) / self.seconds if self.seconds > 0 else math.nan


def run_replay(
    path: Path,
    config: Config,
    model: StepModel,
    sep: str = ",",
    time_column: str | None = None,
    ignore: tuple[str, ...] = (),
) -> ReplayRun:
    """Replay one CSV file in memory and parse its output back into arrays."""
    events: list[Event] = []

    class RecordingDetector(Detector):
        def process_ticks(self, ticks: Any) -> DetectorOutput:
            out = super().process_ticks(ticks)
            events.extend(out.events)
            return out

    buffer = io.StringIO()
    with mock.patch.object(gateway.pipeline.replay, "Detector", RecordingDetector):
        summary = gateway.pipeline.replay.replay(
            path, buffer, config, model, sep=sep, time_column=time_column, ignore=ignore
        )
    buffer.seek(0)
    reader = csv.reader(buffer)
    header = next(reader)
    i_ts, i_score, i_alert = (header.index(c) for c in ("timestamp", "anomaly_score", "alert"))
    stamps: list[str] = []
    scores: list[float] = []
    alerts: list[int] = []
    for row in reader:
        stamps.append(row[i_ts])
        scores.append(float(row[i_score]))
        alerts.append(int(row[i_alert]))
    return ReplayRun(
        stamps,
        np.asarray(scores),
        np.asarray(alerts, np.int8),
        list(summary.channels),
        summary.seconds,
        events,
        summary.core,
    )


def floored(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The engine's scale floor: a constant channel is judged on relative, not infinite,
    deviations."""
    return np.maximum(std, SCALE_FLOOR_REL * np.abs(mean) + SCALE_FLOOR_ABS)


def as_2d(values: np.ndarray) -> np.ndarray:
    """``values`` as float ``[rows, channels]``; a 1-D array is one channel."""
    x = np.asarray(values, dtype=float)
    return x[:, None] if x.ndim == 1 else x


def rolling_z(values: np.ndarray, window: int = 60) -> np.ndarray:
    """``|z|[rows, channels]`` of each reading against the mean and sd of the previous
    ``window`` rows (NaN = missing); NaN where there is no z (before ``window`` rows, fewer than
    two readings in the window, or a missing reading). Causal."""
    x = as_2d(values)
    rows = x.shape[0]
    z = np.full(x.shape, np.nan)
    if rows <= window:
        return z
    filled = np.where(np.isnan(x), 0.0, x)
    zero = np.zeros((1, x.shape[1]))
    c_n = np.concatenate([zero, np.cumsum(~np.isnan(x), axis=0)])
    c_s = np.concatenate([zero, np.cumsum(filled, axis=0)])
    c_q = np.concatenate([zero, np.cumsum(filled * filled, axis=0)])
    i = np.arange(window, rows)
    n = c_n[i] - c_n[i - window]
    s = c_s[i] - c_s[i - window]
    q = c_q[i] - c_q[i - window]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        std = np.sqrt(np.maximum(q / n - mean * mean, 0.0))
        zi = np.abs(x[i] - mean) / floored(std, mean)
    z[window:] = np.where(n >= 2, zi, np.nan)
    return z


def rolling_z_score(values: np.ndarray, window: int = 60) -> np.ndarray:
    """The largest channel |z| per row (0 where there is none): ``rolling_z_alert``'s score."""
    z = rolling_z(values, window)
    return np.max(np.where(np.isnan(z), 0.0, z), axis=1)


def rolling_z_alert(
    values: np.ndarray, window: int = 60, z: float = 3.0, min_run: int = 3
) -> np.ndarray:
    """``values[rows, channels]`` (NaN = missing) -> 0/1 per row: some channel's |z| over
    ``z`` for ``min_run`` rows in a row; causal."""
    over = rolling_z_score(values, window) > z
    run = np.zeros(over.shape[0], np.int64)
    for i in range(over.shape[0]):
        run[i] = run[i - 1] + 1 if over[i] and i > 0 else int(over[i])
    return (run >= min_run).astype(np.int8)


def static_band_alert(values: np.ndarray, train_rows: int, k: float = 4.0) -> np.ndarray:
    """Per-channel mean +- k std of the first ``train_rows`` rows; alert outside any band."""
    x = as_2d(values)
    train = x[:train_rows]
    mean = np.nanmean(train, axis=0)
    std = floored(np.nanstd(train, axis=0), mean)
    with np.errstate(invalid="ignore"):
        outside = np.abs(x - mean) > k * std
    alert = np.any(outside & ~np.isnan(x), axis=1)
    alert[:train_rows] = False
    return alert.astype(np.int8)
