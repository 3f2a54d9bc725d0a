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

The multi-corpus benchmark (``tools/bench_detect.py``) adds, further down:

- Event matching with a grace period and drift windows (``match_fault_events``): onsets are the
  rising edges of the alert flag on the scored rows alone, so an alert that is already on at the
  first scored row is an onset there (otherwise an alert raised during the training rows and
  never cleared would cost nothing; ``bench_skab`` takes its edges on the whole file). A fault
  ``[start, end)`` that starts on or after the first scored row is detected by the first onset
  in ``[start, end + grace)``; later onsets in that window (or in the window of a fault that
  started before the scored rows) are re-alerts, neither detections nor false alarms; any other
  onset is a false alarm, and if it falls in an ``expect_drift`` window ``[a, b)`` it is also
  counted as a drift false alarm. The delay is the detecting onset's time minus ``start``, and
  its row minus the first row at or after ``start``. Precision = detected / (detected + false
  alarms), recall = detected / faults, F1 = 2 P R / (P + R), and 0 when either is 0 (a silent
  detector on faults scores 0).
- Average precision (PR-AUC) of a continuous score against the row labels
  (``average_precision``): the distinct score values are the thresholds, from the highest down
  (tied rows enter together); ``AP = sum_k (R_k - R_{k-1}) P_k`` with ``R_0 = 0``, P and R the
  row precision and recall at ``score >= threshold_k`` (scikit-learn's definition).
- VUS-PR (Paparrizos et al., "Volume Under the Surface: A New Accuracy Evaluation Measure for
  Time-Series Anomaly Detection", PVLDB 15(11), 2022) (``vus_pr``, ``range_pr_auc``). For a
  buffer length ``l`` every labelled range ``[s, e]`` (rows) gets ``l // 2`` buffer rows on
  each side whose soft label is ``sqrt(1 - d / l)`` at distance ``d = 1 .. l // 2`` from the
  range (overlapping buffers add, capped at 1; ``l <= 1`` adds nothing). With ``y`` the binary
  labels, ``y_l`` the soft labels, at a threshold ``tau`` (``pred = score >= tau``):

  * ``P_l = (sum y + sum y_l) / 2``, ``TP_l = sum(y_l * pred)``;
  * range recall ``= min(TP_l / P_l, 1) * existence``, ``existence`` = the share of the ranges
    of ``y_l > 0`` that hold at least one predicted row;
  * range precision ``= TP_l / sum(pred)``;
  * ``RangePR_l = sum_k (Rec_k - Rec_{k-1}) Prec_k`` over the thresholds from the highest down
    (``Rec_0 = 0``), i.e. the same step integral as AP;
  * ``VUS-PR = mean of RangePR_l over l = 0 .. L``.

  At ``l = 0`` the range recall is the row recall times the existence share. Three deliberate
  differences from the authors' reference code (TheDatumOrg/VUS, also copied by aeon and
  TimeEval): (1) the reference evaluates 250 thresholds sampled from the sorted scores; here
  every distinct score value is a threshold (exact), or, when pooling many series, a fixed grid
  (below); (2) the reference integrates with trapezoids from the point (recall 0, precision 1),
  which gives a constant score about 0.5 whatever the labels; the step integral gives it the
  base rate, as AP does. (3) The reference's slope after a range starts at the range's last row,
  so it has one buffer row fewer after a range than before; here both sides have ``l // 2``.
- Pooling threshold-free metrics over series (``score_curve``, ``curve_average_precision``,
  ``curve_range_pr``): every count above (``sum pred``, ``TP_l``, ranges that exist, ``P``,
  ``sum y_l``) is a sum over rows, so a corpus is pooled by adding each series' counts at the
  same thresholds, and a bootstrap draw by adding them with the draw's multiplicities. The
  thresholds of a pooled curve are a grid (``threshold_grid``): every distinct value if there
  are at most ``grid`` of them, else quantiles of the positive rows' scores and of the
  negative rows' scores, half each, so the curve keeps resolution where the faults are.
- Bootstrap helpers for pooled statistics that are not ratios of sums: ``bootstrap_weights``
  (the multiplicity of every unit in every draw, the same draws ``resample_sums`` makes),
  ``weighted_median`` (equal to ``np.median`` of the expanded list) and ``interval``.
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


# --- fault events with a grace period and drift windows ---------------------------------


@dataclass
class EventCounts:
    """One series' (or a pool's) fault events; see the module docstring for the rules."""

    faults: int = 0
    detected: int = 0
    false_alarms: int = 0
    drift_false_alarms: int = 0  # false alarms inside an expect_drift window (also counted above)
    re_alerts: int = 0
    onsets: int = 0
    delays_s: list[float] = field(default_factory=list)
    delays_rows: list[int] = field(default_factory=list)

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(
            self.faults + other.faults,
            self.detected + other.detected,
            self.false_alarms + other.false_alarms,
            self.drift_false_alarms + other.drift_false_alarms,
            self.re_alerts + other.re_alerts,
            self.onsets + other.onsets,
            self.delays_s + other.delays_s,
            self.delays_rows + other.delays_rows,
        )

    @property
    def precision(self) -> float:
        flagged = self.detected + self.false_alarms
        return self.detected / flagged if flagged else float("nan")

    @property
    def recall(self) -> float:
        return self.detected / self.faults if self.faults else float("nan")

    @property
    def f1(self) -> float:
        return f1_score(self.precision, self.recall)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"precision": self.precision, "recall": self.recall, "f1": self.f1}


def f1_score(precision: Any, recall: Any) -> Any:
    """``2 P R / (P + R)``, elementwise. 0 where either is 0: a detector that never alarms on
    faults it should have seen (recall 0, precision undefined) scores 0, not "undefined";
    NaN where either is undefined otherwise (no faults to find)."""
    p = np.asarray(precision, dtype=float)
    r = np.asarray(recall, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = 2.0 * p * r / (p + r)
    f = np.where((p == 0) | (r == 0), 0.0, f)
    return float(f) if f.ndim == 0 else f


def match_fault_events(
    times: Sequence[float] | np.ndarray,
    alert: Sequence[int] | np.ndarray,
    faults: Sequence[tuple[float, float]],
    grace: float,
    first_scored: int = 0,
    expect_drift: Sequence[tuple[float, float]] = (),
) -> EventCounts:
    """Onsets of ``alert`` (rows ``>= first_scored``) against faults ``[start, end)`` in
    seconds, each detectable until ``end + grace`` (module docstring, first item)."""
    t = np.asarray(times, dtype=float)
    a = np.asarray(alert)
    if len(t) != len(a):
        raise ValueError(f"{len(t)} timestamps for {len(a)} alert flags")
    result = EventCounts()
    if first_scored >= len(t):
        return result
    t_first = float(t[first_scored])
    edges = rising_edges(a[first_scored:]) + first_scored
    result.onsets = len(edges)
    # A fault that began before scoring cannot be detected on time; its window still owns the
    # onsets in it (the detector is right to be alerting), so they are re-alerts, not alarms.
    scored = [(float(s), float(e)) for s, e in faults if s >= t_first]
    unscored = [(float(s), float(e)) for s, e in faults if s < t_first]
    result.faults = len(scored)
    onset_t = t[edges]
    owned = np.zeros(len(edges), bool)
    detecting = np.zeros(len(edges), bool)
    for start, end in scored:
        inside = (onset_t >= start) & (onset_t < end + grace)
        owned |= inside
        hits = np.flatnonzero(inside)
        if hits.size:
            k = int(hits[0])
            detecting[k] = True
            result.detected += 1
            result.delays_s.append(float(onset_t[k] - start))
            result.delays_rows.append(int(edges[k] - np.searchsorted(t, start, side="left")))
    for start, end in unscored:
        owned |= (onset_t >= start) & (onset_t < end + grace)
    result.re_alerts = int(np.sum(owned & ~detecting))
    false = ~owned
    result.false_alarms = int(np.sum(false))
    in_drift = np.zeros(len(edges), bool)
    for start, end in expect_drift:
        in_drift |= (onset_t >= start) & (onset_t < end)
    result.drift_false_alarms = int(np.sum(false & in_drift))
    return result


# --- threshold-free score quality: AP and VUS-PR -----------------------------------------

VUS_MAX_BUFFER = 20  # rows; see tools/bench_detect.py for why 20


def label_ranges(labels: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the runs of ``labels > 0``."""
    y = np.asarray(labels, dtype=float) > 0
    change = np.diff(np.concatenate([[0], y.astype(np.int8), [0]]))
    return np.flatnonzero(change == 1), np.flatnonzero(change == -1)


def soft_labels(labels: Sequence[float] | np.ndarray, buffer: int) -> np.ndarray:
    """VUS's continuous labels for buffer length ``buffer`` (module docstring)."""
    y = (np.asarray(labels, dtype=float) > 0).astype(float)
    half = int(buffer) // 2
    if half == 0:
        return y
    n = len(y)
    starts, ends = label_ranges(y)
    soft = y.copy()
    for d in range(1, half + 1):
        weight = math.sqrt(1.0 - d / buffer)
        before = starts - d
        after = ends - 1 + d
        np.add.at(soft, before[before >= 0], weight)
        np.add.at(soft, after[after < n], weight)
    return np.minimum(soft, 1.0)


@dataclass
class ScoreCurve:
    """Counts of one series (or a pool) at descending thresholds ``tau_g``: everything AP and
    VUS-PR need, and all of it sums over series. ``buffers[b]`` is the buffer length of row
    ``b`` of the 2-D fields; buffer 0 is the plain labels."""

    thresholds: np.ndarray  # (G,) descending
    buffers: np.ndarray  # (B,)
    rows: float
    positives: float  # sum of the binary labels
    predicted: np.ndarray  # (G,) rows with score >= tau_g
    tp: np.ndarray  # (B, G) sum of soft labels over rows with score >= tau_g
    soft: np.ndarray  # (B,) sum of soft labels
    ranges: np.ndarray  # (B,) ranges of soft label > 0
    existing: np.ndarray  # (B, G) ranges whose highest score is >= tau_g


def score_curve(
    labels: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    thresholds: np.ndarray | None = None,
    max_buffer: int = VUS_MAX_BUFFER,
) -> ScoreCurve:
    """Counts at ``thresholds`` (default: every distinct score, i.e. the exact curve)."""
    y = (np.asarray(labels, dtype=float) > 0).astype(float)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be equal 1-D shapes")
    if np.isnan(s).any():
        raise ValueError("scores must not be NaN")
    tau = np.unique(s)[::-1] if thresholds is None else np.asarray(thresholds, dtype=float)
    if len(tau) > 1 and np.any(np.diff(tau) >= 0):
        raise ValueError("thresholds must be strictly descending")
    order = np.argsort(s, kind="stable")
    ascending = s[order]
    # Rows at or above tau_g are the rows from index first[g] on in ascending order.
    first = np.searchsorted(ascending, tau, side="left")
    buffers = np.arange(max_buffer + 1)
    tp = np.zeros((len(buffers), len(tau)))
    soft_sums = np.zeros(len(buffers))
    range_counts = np.zeros(len(buffers))
    existing = np.zeros((len(buffers), len(tau)))
    for b, buffer in enumerate(buffers):
        yl = soft_labels(y, int(buffer))
        prefix = np.concatenate([[0.0], np.cumsum(yl[order])])
        tp[b] = prefix[-1] - prefix[first]
        soft_sums[b] = prefix[-1]
        starts, _ = label_ranges(yl)
        range_counts[b] = len(starts)
        if len(starts):
            # reduceat runs from each start to the next one; the rows between two ranges are
            # masked out, so each value is the highest score inside its own range.
            inside = np.where(yl > 0, s, -np.inf)
            peaks = np.sort(np.maximum.reduceat(inside, starts))
            existing[b] = len(peaks) - np.searchsorted(peaks, tau, side="left")
    return ScoreCurve(
        thresholds=tau,
        buffers=buffers,
        rows=float(len(s)),
        positives=float(y.sum()),
        predicted=(len(s) - first).astype(float),
        tp=tp,
        soft=soft_sums,
        ranges=range_counts,
        existing=existing,
    )


def curve_average_precision(positives: Any, predicted: Any, tp: Any) -> Any:
    """AP from counts at descending thresholds; leading axes (draws) broadcast.
    ``positives (...)``, ``predicted (..., G)``, ``tp (..., G)`` (buffer 0)."""
    pos = np.asarray(positives, dtype=float)[..., None]
    pred = np.asarray(predicted, dtype=float)
    hit = np.asarray(tp, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = hit / pos
        precision = np.where(pred > 0, hit / np.where(pred > 0, pred, 1.0), 1.0)
    step = np.diff(recall, axis=-1, prepend=0.0)
    ap = np.sum(step * precision, axis=-1)
    ap = np.where(pos[..., 0] > 0, ap, np.nan)
    return float(ap) if ap.ndim == 0 else ap


def _step_integral(tpr: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """``sum_g (tpr_g - tpr_{g-1}) precision_g`` with ``tpr_{-1} = 0``, over the last axis,
    without the temporaries of diff and a product (this runs on every bootstrap draw)."""
    area = tpr[..., 0] * precision[..., 0]
    if tpr.shape[-1] > 1:
        step = np.subtract(tpr[..., 1:], tpr[..., :-1])
        step *= precision[..., 1:]
        area = area + step.sum(axis=-1)
    return area


def curve_range_pr(
    positives: Any, predicted: Any, tp: Any, soft: Any, ranges: Any, existing: Any
) -> Any:
    """Range-PR AUC per buffer from counts: ``positives (...)``, ``predicted (..., G)``,
    ``tp``/``existing (..., B, G)``, ``soft``/``ranges (..., B)`` -> ``(..., B)``."""
    pos = np.asarray(positives, dtype=float)[..., None]
    pred = np.asarray(predicted, dtype=float)[..., None, :]
    hit = np.asarray(tp, dtype=float)
    p_l = (pos + np.asarray(soft, dtype=float)) / 2.0
    n_ranges = np.asarray(ranges, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Range recall = min(TP_l / P_l, 1) x existence; precision = TP_l / predicted rows, 1
        # above the highest score (nothing flagged, and then TP_l is 0 too).
        tpr = hit * (1.0 / p_l)[..., None]
        np.minimum(tpr, 1.0, out=tpr)
        tpr *= np.asarray(existing, dtype=float)
        tpr *= (1.0 / n_ranges)[..., None]
        precision = hit * np.where(pred > 0, 1.0 / np.where(pred > 0, pred, 1.0), 0.0)
        precision += pred == 0
    area = _step_integral(tpr, precision)
    return np.where(pos > 0, area, np.nan)


def curve_vus_pr(
    positives: Any, predicted: Any, tp: Any, soft: Any, ranges: Any, existing: Any
) -> Any:
    """VUS-PR: the mean of ``curve_range_pr`` over the buffers."""
    area = np.mean(curve_range_pr(positives, predicted, tp, soft, ranges, existing), axis=-1)
    return float(area) if np.ndim(area) == 0 else area


def average_precision(
    labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float:
    """Exact AP of ``scores`` against binary ``labels`` (NaN without a positive row)."""
    c = score_curve(labels, scores, max_buffer=0)
    return float(curve_average_precision(c.positives, c.predicted, c.tp[0]))


def range_pr_auc(
    labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray, buffer: int
) -> float:
    """Exact range-PR AUC at one buffer length (NaN without a positive row)."""
    c = score_curve(labels, scores, max_buffer=buffer)
    area = curve_range_pr(c.positives, c.predicted, c.tp, c.soft, c.ranges, c.existing)
    return float(area[-1])


def vus_pr(
    labels: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    max_buffer: int = VUS_MAX_BUFFER,
) -> float:
    """Exact VUS-PR over buffers ``0 .. max_buffer`` (NaN without a positive row)."""
    c = score_curve(labels, scores, max_buffer=max_buffer)
    return float(curve_vus_pr(c.positives, c.predicted, c.tp, c.soft, c.ranges, c.existing))


def threshold_grid(
    labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray, grid: int = 1024
) -> np.ndarray:
    """Descending thresholds for a pooled curve: all distinct scores if at most ``grid``, else
    ``grid // 2`` quantiles of the positive rows' scores and as many of the negative rows'
    (each set including its highest and lowest value)."""
    y = np.asarray(labels, dtype=float) > 0
    s = np.asarray(scores, dtype=float)
    distinct = np.unique(s)
    if len(distinct) <= grid:
        return distinct[::-1]
    q = np.linspace(0.0, 100.0, max(grid // 2, 2))
    parts = [np.percentile(s[m], q, method="lower") for m in (y, ~y) if m.any()]
    return np.unique(np.concatenate(parts))[::-1]


# --- bootstrap helpers -------------------------------------------------------------------


def bootstrap_weights(n: int, draws: int, seed: int = 0) -> np.ndarray:
    """``[draws, n]``: how often each of ``n`` units is in each resample. The picks are the
    ones ``resample_sums`` makes for the same ``n``, ``draws`` and ``seed``, so
    ``weights @ table`` equals its sums."""
    if n < 1 or draws < 1:
        raise ValueError("need at least one unit and one draw")
    picks = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    flat = (picks + n * np.arange(draws)[:, None]).ravel()
    return np.bincount(flat, minlength=draws * n).reshape(draws, n).astype(float)


def weighted_median(values: Sequence[float] | np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median of ``values`` repeated ``weights[d, i]`` times (integer weights), per row ``d``:
    the same as ``np.median`` of the expanded list (mean of the two middle values when the
    total is even); NaN for a row with no weight."""
    v = np.asarray(values, dtype=float)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    if v.size == 0:
        return np.full(w.shape[0], np.nan)
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[:, order]
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1]
    lo_pos = np.floor((total - 1) / 2.0)
    hi_pos = np.floor(total / 2.0)
    # The element at expanded position k (0-based) is the first i with cum[i] > k.
    lo = np.argmax(cum > lo_pos[:, None], axis=1)
    hi = np.argmax(cum > hi_pos[:, None], axis=1)
    return np.where(total > 0, (v[lo] + v[hi]) / 2.0, np.nan)


def interval(values: Any, percentiles: tuple[float, float] = (5.0, 95.0)) -> list[float]:
    """The percentiles of the defined (non-NaN) draws; ``[nan, nan]`` if none is defined."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return [float("nan"), float("nan")]
    return [float(x) for x in np.percentile(v, percentiles)]
