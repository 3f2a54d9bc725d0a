"""What every benchmark corpus is made of: labelled series, generated at bench time.

A corpus is a function ``generate(seed, size) -> list[Series]``, deterministic for a seed.
Nothing is ever written into the repository: ``write_csv`` puts a series where ``replay``
can read it (a temporary folder), in the replay format (a ``timestamp`` column in epoch
seconds, then one column per channel; the ``label`` column is written too and stripped with
replay's ``ignore``).

Faults are half-open intervals of timestamps ``[start, end)``; ``labels`` marks the same rows.
``train_rows`` leading rows are guaranteed fault-free: benchmarks score only rows after them
(the detector sees every row, as it would in the field). ``expect_drift`` marks windows where
the series drifts on purpose (no fault): an alert there is a false alarm, and a ``drift`` event
is expected.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

SIZES = ("smoke", "quick", "full")  # smoke: for tests, seconds; quick: minutes; full: the table
LABEL_COLUMN = "label"
T0 = 1_700_000_000.0


@dataclass
class Series:
    name: str  # unique within its corpus; a valid file stem (letters, digits, _ . -)
    corpus: str
    t: np.ndarray  # float64 epoch seconds, strictly increasing, shape (n,)
    x: np.ndarray  # float64, shape (n, channels); NaN = missing cell
    channels: list[str]
    labels: np.ndarray  # uint8, shape (n,): 1 = a fault row
    faults: list[tuple[float, float]] = field(default_factory=list)  # [start, end) seconds
    train_rows: int = 0
    expect_drift: list[tuple[float, float]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # kind, fault, period, ... for tables

    def __post_init__(self) -> None:
        n = len(self.t)
        if self.x.ndim != 2 or self.x.shape != (n, len(self.channels)):
            raise ValueError(f"{self.name}: x must be (rows, channels)")
        if self.labels.shape != (n,):
            raise ValueError(f"{self.name}: one label per row")
        if n > 1 and not np.all(np.diff(self.t) > 0):
            raise ValueError(f"{self.name}: timestamps must increase strictly")

    @property
    def rows(self) -> int:
        return len(self.t)

    @property
    def hours(self) -> float:
        """Stream time after the training rows, in hours (what false alarms are counted in)."""
        if self.rows <= self.train_rows + 1:
            return 0.0
        return float(self.t[-1] - self.t[self.train_rows]) / 3600.0


def labels_from_faults(t: np.ndarray, faults: Sequence[tuple[float, float]]) -> np.ndarray:
    labels = np.zeros(len(t), np.uint8)
    for start, end in faults:
        labels[(t >= start) & (t < end)] = 1
    return labels


def retime(series: Series, interval_s: float, suffix: str | None = None) -> Series:
    """The same values at another sampling interval: every gap between rows is scaled by
    ``interval_s / median gap``, so jitter and gaps keep their shape in units of the typical
    interval, and faults move with their rows."""
    gaps = np.diff(series.t)
    factor = interval_s / float(np.median(gaps)) if len(gaps) else 1.0
    t = T0 + (series.t - series.t[0]) * factor

    def move(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [
            (T0 + (a - series.t[0]) * factor, T0 + (b - series.t[0]) * factor) for a, b in windows
        ]

    label = suffix or _interval_label(interval_s)
    return replace(
        series,
        name=f"{series.name}@{label}",
        t=t,
        faults=move(series.faults),
        expect_drift=move(series.expect_drift),
        tags={**series.tags, "interval": label},
    )


def _interval_label(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("min", 60.0), ("s", 1.0)):
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{seconds:g}s"


def write_csv(series: Series, folder: Path) -> Path:
    """``folder/<name>.csv`` in the replay format; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{series.name.replace('@', '_at_')}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["timestamp", *series.channels, LABEL_COLUMN])
        for ts, row, label in zip(series.t, series.x, series.labels, strict=True):
            cells = ["" if np.isnan(v) else repr(float(v)) for v in row]
            writer.writerow([f"{ts:.3f}", *cells, int(label)])
    return path
