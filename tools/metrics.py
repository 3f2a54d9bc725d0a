"""Scoring code shared by the benchmarks, kept apart from them so it can be tested on its own.

Three families, each written to match a published protocol rather than our own convenience:

- Row-wise outlier metrics as the SKAB leaderboard reports them: F1 = TP / (TP + (FP + FN) / 2),
  FAR = 100 FP / (FP + TN), MAR = 100 FN / (FN + TP), counts pooled over files.
- A NAB-style changepoint score (Lavin & Ahmad 2015, Numenta Anomaly Benchmark, "standard"
  profile A_tp = 1, A_fp = -0.11, A_fn = -1) with SKAB's windowing: one window of ``W`` seconds
  starting AT each true changepoint (not centred on it). Exactly what is computed:

  * Windows: rows ``i`` with ``t_cp <= t_i < t_cp + W``; windows that overlap or touch are merged
    into one (NAB merges overlapping windows too). Changepoints outside the scored rows are
    dropped.
  * Detections: rising edges of the alert signal (0 -> 1) on scored rows.
  * ``sigma(y) = 2 / (1 + exp(5 y)) - 1`` (NAB's scaled sigmoid; ``-1`` when ``y > 3``).
  * The FIRST detection inside a window of ``n`` rows ``[l, r]`` at row ``i`` scores
    ``A_tp * sigma(-(r - i + 1) / n)``: about 0.987 at the window's first row, 0 past its end.
    Further detections in the same window score nothing.
  * A window with no detection scores ``A_fn`` (-1).
  * A detection outside every window scores ``|A_fp| * sigma((i - r) / (n - 1))`` relative to
    the last window ``[l, r]`` before it (a mild penalty right after a window, ``A_fp`` far
    from it), and ``A_fp`` if no window precedes it (both as NAB's sweeper does).
  * Normalised score = ``100 (S - S_null) / (S_perfect - S_null)``, where the null detector
    never fires (``S_null = A_fn * windows``) and the perfect detector fires on the first row of
    every window (``S_perfect = A_tp * sigma(-1) * windows``). Pooled over files: sum S,
    S_null and S_perfect over files, then normalise once. 100 = perfect, 0 = silent.

  NAB's probationary period is not applied: the protocol's 400 training rows play that role.
- Fault-event matching for synthetic streams: a fault ``[start, end]`` is detected by the first
  alert rising edge in ``[start, end + grace]``; a rising edge inside no such window is a false
  alarm; precision = detected / (detected + false alarms), recall = detected / faults.

And one way to read any of them with the uncertainty a small benchmark carries: resample the
files (or streams) with replacement, the same draws for every detector, and report intervals
and how often one detector beats another (``resample_sums``, ``bootstrap_files``,
``compare_draws``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

A_TP = 1.0
A_FP = -0.11
A_FN = -1.0


# --- row-wise outlier metrics -----------------------------------------------------------


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )

    @property
    def f1(self) -> float:
        denominator = self.tp + (self.fp + self.fn) / 2.0
        return self.tp / denominator if denominator else float("nan")

    @property
    def far(self) -> float:
        negatives = self.fp + self.tn
        return 100.0 * self.fp / negatives if negatives else float("nan")

    @property
    def mar(self) -> float:
        positives = self.fn + self.tp
        return 100.0 * self.fn / positives if positives else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"f1": self.f1, "far": self.far, "mar": self.mar}


def confusion(labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray) -> Confusion:
    """Row-wise counts; both arrays 0/1 of the same length."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(preds).astype(bool)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in shape")
    return Confusion(
        tp=int(np.sum(y & p)),
        fp=int(np.sum(~y & p)),
        fn=int(np.sum(y & ~p)),
        tn=int(np.sum(~y & ~p)),
    )


def resample_sums(
    tables: Mapping[str, np.ndarray], draws: int = 2000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Column sums of each table over ``draws`` resamples of its rows (files, streams).

    ``tables[name]`` is ``[rows, k]`` counts, one row per file; rows are drawn with
    replacement, the same draws for every name, so a difference between two detectors is
    paired: it varies only with which files are in the draw. On a benchmark of a few dozen runs
    the file is the unit that varies (one hard fault more or less moves a pooled MAR by a point
    or two), and the spread of the draws says how far apart two pooled numbers must be before
    the difference means anything. Returns ``[draws, k]`` per name."""
    sizes = {len(t) for t in tables.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError("every detector needs counts for the same, non-empty list of files")
    (n,) = sizes
    picks = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    return {name: np.asarray(t, float)[picks].sum(axis=1) for name, t in tables.items()}


def bootstrap_files(
    counts: Mapping[str, Sequence[Confusion]], draws: int = 2000, seed: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    """Pooled F1, FAR and MAR of each detector over ``draws`` paired resamples of the files
    (``resample_sums``). ``counts[name][i]`` is file ``i``'s confusion for detector ``name``."""
    tables = {n: np.array([(c.tp, c.fp, c.fn, c.tn) for c in v]) for n, v in counts.items()}
    result: dict[str, dict[str, np.ndarray]] = {}
    for name, sums in resample_sums(tables, draws, seed).items():
        tp, fp, fn, tn = sums.T
        with np.errstate(invalid="ignore", divide="ignore"):
            result[name] = {
                "f1": tp / (tp + (fp + fn) / 2.0),
                "far": 100.0 * fp / (fp + tn),
                "mar": 100.0 * fn / (fn + tp),
            }
    return result


def compare_draws(
    stats: Mapping[str, Mapping[str, np.ndarray]],
    default: str,
    ablations: Sequence[str],
    higher_is_better: Mapping[str, bool],
    interval: tuple[float, float] = (5.0, 95.0),
) -> dict[str, Any]:
    """Read paired bootstrap draws (``stats[detector][metric]``, one value per draw): each
    detector's interval per metric, and for each ablation the interval of default minus
    ablation and the share of draws in which the default is better. A metric that is undefined
    in a draw (precision with no alert at all) is left out of the intervals and counts as "not
    better"."""
    report: dict[str, Any] = {"interval_percentiles": list(interval)}
    for name in (default, *ablations):
        report[name] = {k: np.nanpercentile(v, interval).tolist() for k, v in stats[name].items()}
    a = stats[default]
    report["default_vs"] = {}
    for ablation in ablations:
        b = stats[ablation]
        report["default_vs"][ablation] = {
            "difference": {k: np.nanpercentile(a[k] - b[k], interval).tolist() for k in a},
            "default_better_share": {
                k: float(np.mean(a[k] > b[k] if higher_is_better[k] else a[k] < b[k])) for k in a
            },
        }
    return report


def rising_edges(alert: Sequence[int] | np.ndarray) -> np.ndarray:
    """Indices ``i`` where ``alert[i]`` is on and ``alert[i-1]`` was off (or ``i`` is 0)."""
    a = np.asarray(alert).astype(bool)
    if a.size == 0:
        return np.zeros(0, np.int64)
    previous = np.concatenate([[False], a[:-1]])
    return np.flatnonzero(a & ~previous)


# --- NAB-style changepoint score --------------------------------------------------------


def scaled_sigmoid(y: float) -> float:
    """NAB's scoring curve: +0.987 at y=-1, 0 at y=0, towards -1 for y > 0 (-1 past 3)."""
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def nab_windows(
    times: Sequence[float] | np.ndarray,
    changepoints: Sequence[int] | np.ndarray,
    window_s: float,
    first_scored: int = 0,
) -> list[tuple[int, int]]:
    """Inclusive row ranges ``[l, r]``: ``t_cp <= t < t_cp + window_s``, merged if they meet."""
    t = np.asarray(times, dtype=float)
    spans: list[tuple[int, int]] = []
    for cp in sorted(int(c) for c in changepoints):
        if cp < first_scored or cp >= len(t):
            continue
        right = int(np.searchsorted(t, t[cp] + window_s, side="left")) - 1
        right = max(right, cp)
        if spans and cp <= spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], max(spans[-1][1], right))
        else:
            spans.append((cp, right))
    return spans


@dataclass
class NabResult:
    raw: float = 0.0
    null: float = 0.0
    perfect: float = 0.0
    windows: int = 0
    detected: int = 0
    false_positives: int = 0

    def __add__(self, other: NabResult) -> NabResult:
        return NabResult(
            self.raw + other.raw,
            self.null + other.null,
            self.perfect + other.perfect,
            self.windows + other.windows,
            self.detected + other.detected,
            self.false_positives + other.false_positives,
        )

    @property
    def score(self) -> float:
        span = self.perfect - self.null
        return 100.0 * (self.raw - self.null) / span if span else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"score": self.score}


def nab_score(
    windows: Sequence[tuple[int, int]],
    detections: Sequence[int] | np.ndarray,
    a_tp: float = A_TP,
    a_fp: float = A_FP,
    a_fn: float = A_FN,
) -> NabResult:
    """Raw, null and perfect scores of one file (see the module docstring for the rules)."""
    result = NabResult(windows=len(windows))
    result.null = a_fn * len(windows)
    result.perfect = a_tp * scaled_sigmoid(-1.0) * len(windows)
    hit = [False] * len(windows)
    for i in sorted(int(d) for d in detections):
        inside = next((k for k, (lo, hi) in enumerate(windows) if lo <= i <= hi), None)
        if inside is not None:
            if not hit[inside]:
                lo, hi = windows[inside]
                result.raw += a_tp * scaled_sigmoid(-(hi - i + 1) / (hi - lo + 1))
                hit[inside] = True
            continue
        result.false_positives += 1
        before = [(lo, hi) for lo, hi in windows if hi < i]
        if not before:
            result.raw += a_fp
            continue
        lo, hi = before[-1]
        width = hi - lo + 1
        position = (i - hi) / (width - 1) if width > 1 else math.inf
        result.raw += abs(a_fp) * scaled_sigmoid(position)
    result.detected = sum(hit)
    result.raw += a_fn * (len(windows) - result.detected)
    return result


# --- fault-event matching ---------------------------------------------------------------


@dataclass
class EventMatch:
    faults: int = 0
    detected: int = 0
    false_alarms: int = 0
    delays: list[float] = field(default_factory=list)
    hits: list[bool] = field(default_factory=list)

    def __add__(self, other: EventMatch) -> EventMatch:
        return EventMatch(
            self.faults + other.faults,
            self.detected + other.detected,
            self.false_alarms + other.false_alarms,
            self.delays + other.delays,
            self.hits + other.hits,
        )

    @property
    def precision(self) -> float:
        flagged = self.detected + self.false_alarms
        return self.detected / flagged if flagged else float("nan")

    @property
    def recall(self) -> float:
        return self.detected / self.faults if self.faults else float("nan")

    @property
    def median_delay(self) -> float:
        return float(np.median(self.delays)) if self.delays else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "faults": self.faults,
            "detected": self.detected,
            "false_alarms": self.false_alarms,
            "precision": self.precision,
            "recall": self.recall,
            "median_delay_s": self.median_delay,
        }


def match_events(
    faults: Sequence[tuple[float, float]],
    edge_times: Sequence[float] | np.ndarray,
    grace: float,
) -> EventMatch:
    """Match alert rising-edge times against fault intervals ``[start, end]`` (seconds)."""
    result = EventMatch(faults=len(faults), hits=[False] * len(faults))
    for t in sorted(float(e) for e in edge_times):
        inside = [k for k, (start, end) in enumerate(faults) if start <= t <= end + grace]
        if not inside:
            result.false_alarms += 1
            continue
        for k in inside:
            if not result.hits[k]:
                result.hits[k] = True
                result.delays.append(t - faults[k][0])
    result.detected = sum(result.hits)
    return result
