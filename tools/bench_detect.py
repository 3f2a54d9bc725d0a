"""One detection benchmark over every corpus: the table that decides whether a detector change
ships. A change lands only if no corpus gets worse beyond its interval (``--against``).

What runs. Every series of every corpus (``tools/corpora/<name>.py``, ``generate(seed, size)``
-> ``list[Series]``, see ``tools/corpora/base.py``) is written to a temporary CSV in the replay
format and scored by:

- ``default``: ``gateway.replay`` through ``tools.detectors.run_replay`` (the ``replay`` command's
  code path) with ``Config()`` and the packaged model (``load_model(None, --runtime)``);
- ``naive``: the same pipeline with the "next = current" model (``NaiveModel``), an ablation;
- ``no-prediction``: the same pipeline with no prediction test at all (``NoPredictionModel``);
- ``rolling-z``: per channel, mean and sd of the previous 60 rows; alert while max |z| > 3 for 3
  rows (``tools.detectors.rolling_z_alert``); score = max |z| over the channels;
- ``static-band``: per channel mean +- 4 sd of the ``train_rows`` (``static_band_alert``);
  score = max over channels of ``|x - mean| / (4 sd)`` (> 1 = outside the band);
- ``pca-t2q`` (series with 2 or more channels): standardise with the training rows' mean and sd
  (a missing cell repeats the channel's last reading), PCA of the training rows keeping the fewest
  components that explain >= 90 % of the variance, then per row Hotelling's
  ``T2 = sum_j t_j^2 / lambda_j`` and ``Q = |z - z P P'|^2`` (squared prediction error). Each is
  judged against ``1.5 x`` its training rows' 99.5th percentile (label-free; the margin is fixed
  a priori, not tuned: an in-sample 99.5th percentile of a few hundred rows is optimistic, and a
  baseline that alarms every 200 rows by construction would be a straw man); alert while either
  is over for 3 consecutive rows; score = ``max(T2 / thr_T2, Q / thr_Q)``.

Every detector sees every row (the training rows are its first readings); labels are never
read at run time. ``retimed`` re-runs every series of ``synthetic`` and ``gutentag`` re-timed
(``base.retime``) at 1 s, 1 min, 5 min and 1 h, with the three gateway detectors only (the
baselines count rows, so they are interval-independent by construction); it is reported per
interval. ``heldout`` runs only when asked: it is the validation set kept out of tuning, and
gets its own table.

What is measured, per series on the rows after ``train_rows`` (the scored rows), then pooled
per corpus by adding counts (sums, never means of ratios):

- Events (``tools.metrics.match_fault_events``). Onsets = rising edges of the alert flag on
  the scored rows (an alert already on at the first scored row is an onset there). grace = 10
  x the series' median sampling interval. A fault ``[start, end)`` is detected by the first
  onset in ``[start, end + grace)``; later onsets there are re-alerts
  (counted, not false alarms); any other onset is a false alarm, and one inside an
  ``expect_drift`` window is also a drift false alarm. event precision = detected / (detected +
  false alarms), recall = detected / faults, event F1 = 2 P R / (P + R); false alarms per
  1,000 h of scored stream time (``Series.hours``) and per 10,000 scored rows (rate-free);
  median detection delay over the pooled detections, in seconds and in rows.
- Rows (``tools.metrics.Confusion``, the SKAB leaderboard's definitions): F1 = TP / (TP + (FP +
  FN) / 2), FAR = 100 FP / (FP + TN), MAR = 100 FN / (FN + TP), and "fault rows in alert" =
  100 TP / (TP + FN) (row recall).
- Score quality, threshold-free, from each detector's continuous score (replay's
  ``anomaly_score``): PR-AUC (average precision against the row labels) and VUS-PR
  (Paparrizos et al., PVLDB 2022) with buffers 0 .. L, L = 20 rows: its slopes then reach
  10 rows either side of a fault, the same 10 sampling intervals as the event grace (the
  reference code likewise uses twice its window). Definitions in ``tools/metrics.py``. Per
  series they are exact; pooled, every series' counts are taken at one threshold grid per
  corpus and detector (all distinct values, or 256 quantiles of the fault rows' scores and 256
  of the others'), so pooled AP/VUS-PR are sums of counts too. Saturation: ``top share`` = the
  share of the pooled scored rows whose score equals the pooled maximum, ``at max`` = the share
  at exactly the largest possible value (1.0 for replay; none for the baselines). A score that
  ranks keeps both near zero.
- Drift: for series with ``expect_drift`` windows ``[a, b)``, the share of windows with a
  ``drift`` event (gateway detectors only; ``run_replay`` records the events) in ``[a, b +
  tags["drift_report_s"])``, or ``[a, b + grace)`` where the tag is absent.

Uncertainty: paired bootstrap. Series are resampled with replacement within each corpus
(``--draws``, default 2000; seed from ``--seed`` and the corpus name), the same draws for
every detector; every pooled metric is recomputed on each draw from the drawn series' counts
(the grid curves and delay medians too), and the 5th-95th percentiles are the 90 % interval.
"default beats X" = the share of draws with the default's event F1 strictly higher (a draw
where either is undefined counts as not better; a detector with recall 0 has F1 0).
``pca-t2q`` runs on multivariate series only: it is pooled over those, and compared with the
default on the same subset. Over all
main corpora the default is compared with the two ablations on event F1 stratified: each draw
resamples within every corpus, then the counts of all corpora are added.

Targets (each: pass/fail on the point estimates, the share of draws meeting it, the intervals):
on every corpus, default at least as good as the best baseline (highest event F1) on event F1
and false alarms per 1,000 h at once; synthetic and periodic: <= 5 false alarms per 1,000 h at
event recall >= 0.85; SKAB: row F1 >= 0.78 with FAR <= 13.6 % (Conv-AE's published numbers);
persistent: >= 80 % of fault rows in alert at FAR <= 2 %; every corpus: top share < 0.1 %;
pooled over corpora: the default beats each ablation on event F1 in >= 95 % of draws.

Output: the tables (main: one line per corpus x detector; breakdowns by tags, e.g. periodic by
shape x change; retimed by interval; comparisons; targets; time per corpus) and, with
``--out``, one JSON with the keys ``benchmark, argv, size, seed, seeds, draws, corpora_requested,
protocol, detectors, config, model, git, machine, corpora, pooled_over_corpora, targets,
seconds_total``; ``corpora[name]`` holds ``role`` (main/validation), ``seeds``, ``series``,
``rows``, ``seconds`` (generate, detect_wall, detect_cpu = the detectors' time summed over
the workers, score = pooling and bootstrap), ``pooled[detector][metric]``,
``intervals[detector][metric]`` (``[lo, hi]``), ``comparisons``, ``breakdown`` and
``per_series[series][detector]`` (the raw counts).
Undefined values (a ratio with a zero denominator) are ``null``.

Usage (from the repo root)::

    python tools/bench_detect.py [--size smoke|quick|full] [--corpora skab,synthetic,...]
        [--seed 0] [--seeds 1] [--jobs 2] [--detectors default,rolling-z] [--draws 2000]
        [--out results.json] [--against previous.json] [--runtime auto]

``--size smoke`` is for tests (seconds); ``quick`` for development (minutes); ``full`` is the
table. ``--seeds 3`` draws every generated corpus three times (seeds ``--seed`` to ``--seed`` + 2)
and pools the draws: one seed's quick corpus is a few dozen series, and a change that wins on
one draw and loses on the next (it happens) must not look like a win. A corpus module that is missing or fails to import stops the run with its name; leave it
out with ``--corpora``. A detector that fails on a series stops the run, naming both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.pool import Pool
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import Config  # noqa: E402
from gateway.model.naive import NaiveModel  # noqa: E402
from gateway.model.runtime import StepModel, load_model  # noqa: E402
from tools.corpora.base import LABEL_COLUMN, SIZES, Series, retime, write_csv  # noqa: E402
from tools.detectors import (  # noqa: E402
    NoPredictionModel,
    as_2d,
    floored,
    rolling_z_alert,
    rolling_z_score,
    run_replay,
    static_band_alert,
)
from tools.metrics import (  # noqa: E402
    VUS_MAX_BUFFER,
    Confusion,
    EventCounts,
    average_precision,
    bootstrap_weights,
    confusion,
    curve_average_precision,
    curve_vus_pr,
    f1_score,
    interval,
    match_fault_events,
    score_curve,
    threshold_grid,
    vus_pr,
    weighted_median,
)

REPO = Path(__file__).resolve().parents[1]
MAIN_CORPORA = ("skab", "synthetic", "gutentag", "periodic", "persistent", "retimed")
HELDOUT = "heldout"
KNOWN_CORPORA = (*MAIN_CORPORA, HELDOUT)
RETIMED = "retimed"
RETIME_FROM = ("synthetic", "gutentag")
RETIME_INTERVALS = (1.0, 60.0, 300.0, 3600.0)
GATEWAY = ("default", "naive", "no-prediction")
BASELINES = ("rolling-z", "static-band", "pca-t2q")
DETECTORS = (*GATEWAY, *BASELINES)
ABLATIONS = ("naive", "no-prediction")
GRACE_INTERVALS = 10.0
INTERVAL = (5.0, 95.0)  # percentiles of the draws: a 90 % interval
GRID = 512  # thresholds per pooled curve: AP within ~1e-3 of exact, and the draws stay cheap
ROLLING_WINDOW, ROLLING_Z, ROLLING_RUN = 60, 3.0, 3
STATIC_K = 4.0
PCA_VARIANCE, PCA_QUANTILE, PCA_MARGIN, PCA_RUN = 0.90, 99.5, 1.5, 3
REPLAY_MAX_SCORE = 1.0
DRAW_CHUNK = 32  # draws per block when contracting the grid curves (bounds memory)

# Which tags each corpus is broken down by, when the corpus module has no BREAKDOWN of its own
# (a tuple of tag names per table; a table is drawn only if every series has those tags). The
# corpora share the tag names "kind" (the stream: shape, oscillation, ...) and "fault" (the
# change injected); "n_channels" is added here (the series' channel count, in bands).
BREAKDOWNS: dict[str, list[tuple[str, ...]]] = {
    "skab": [("subset",)],
    "synthetic": [("fault",), ("kind",)],
    "gutentag": [("kind", "fault"), ("n_channels",)],  # oscillation x anomaly kind
    "periodic": [("kind", "fault")],  # shape x change
    "persistent": [("fault", "n_channels")],
    "retimed": [("interval",), ("source", "interval")],
    "heldout": [("kind",)],
}
CHANNEL_BANDS = ((1, "1"), (8, "2-8"), (24, "9-24"), (10**9, "25+"))
# Every pooled metric and its direction (written to the JSON; --against reads it).
HIGHER_IS_BETTER = {
    "event_f1": True,
    "event_precision": True,
    "event_recall": True,
    "false_alarms_per_1000h": False,
    "false_alarms_per_10k_rows": False,
    "drift_false_alarms_per_1000h": False,
    "median_delay_s": False,
    "median_delay_rows": False,
    "row_f1": True,
    "far_pct": False,
    "mar_pct": False,
    "fault_rows_in_alert_pct": True,
    "pr_auc": True,
    "vus_pr": True,
    "top_share_pct": False,
    "at_max_share_pct": False,
    "drift_event_share": True,
}
COUNT_FIELDS = (
    "faults",
    "detected",
    "false_alarms",
    "drift_false_alarms",
    "re_alerts",
    "onsets",
    "hours",
    "scored_rows",
    "tp",
    "fp",
    "fn",
    "tn",
    "drift_windows",
    "drift_hit",
    "drift_elsewhere",
    "at_max",
)


class BenchError(RuntimeError):
    """A failure that stops the benchmark with a message naming what failed."""


# --- the baselines' scores and the PCA baseline --------------------------------------------


def static_band_score(values: np.ndarray, train_rows: int, k: float = STATIC_K) -> np.ndarray:
    """max over channels of ``|x - mean| / (k sd)`` with ``static_band_alert``'s mean and sd."""
    x = as_2d(values)
    train = x[:train_rows]
    mean = np.nanmean(train, axis=0)
    std = floored(np.nanstd(train, axis=0), mean)
    distance = np.abs(x - mean) / (k * std)
    return np.max(np.where(np.isnan(distance), 0.0, distance), axis=1)


def _carry_forward(z: np.ndarray) -> np.ndarray:
    """A missing cell reads as the channel's last reading (causal), or as the training mean
    (0) before the first: filling with the mean would itself break the channels' relation."""
    missing = np.isnan(z)
    if not missing.any():
        return z
    index = np.where(missing, 0, np.arange(len(z))[:, None])
    np.maximum.accumulate(index, axis=0, out=index)
    filled = np.take_along_axis(z, index, axis=0)
    return np.where(np.isnan(filled), 0.0, filled)


@dataclass
class PcaFit:
    components: int
    channels: int
    explained: float
    threshold_t2: float
    threshold_q: float


def pca_t2q(
    values: np.ndarray,
    train_rows: int,
    variance: float = PCA_VARIANCE,
    quantile: float = PCA_QUANTILE,
    margin: float = PCA_MARGIN,
    min_run: int = PCA_RUN,
) -> tuple[np.ndarray, np.ndarray, PcaFit]:
    """The ``pca-t2q`` baseline (module docstring): (alert 0/1, score, the fit)."""
    x = as_2d(values)
    if train_rows < 2 or x.shape[1] < 2:
        raise ValueError("pca-t2q needs two channels and two training rows")
    train = x[:train_rows]
    mean = np.nanmean(train, axis=0)
    std = floored(np.nanstd(train, axis=0), mean)
    z = _carry_forward((x - mean) / std)
    zt = z[:train_rows]
    centre = zt.mean(axis=0)  # ~0; exactly 0 only without missing cells
    cov = (zt - centre).T @ (zt - centre) / (train_rows - 1)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = np.maximum(eigval[order], 0.0), eigvec[:, order]
    total = float(eigval.sum())
    share = np.cumsum(eigval) / total if total > 0 else np.ones(len(eigval))
    k = min(int(np.searchsorted(share, variance - 1e-12)) + 1, len(eigval))
    basis = eigvec[:, :k]
    lam = np.maximum(eigval[:k], 1e-12 * max(total, 1e-300))
    centred = z - centre
    t = centred @ basis
    t2 = np.sum(t * t / lam, axis=1)
    residual = centred - t @ basis.T
    q = np.sum(residual * residual, axis=1)
    # With every component kept Q is rounding noise: the floor keeps it from ever alarming.
    thr_t2 = max(margin * float(np.percentile(t2[:train_rows], quantile)), 1e-12)
    thr_q = max(margin * float(np.percentile(q[:train_rows], quantile)), 1e-9 * x.shape[1])
    score = np.maximum(t2 / thr_t2, q / thr_q)
    over = score > 1.0
    run = np.zeros(len(over), np.int64)
    for i in range(len(over)):
        run[i] = run[i - 1] + 1 if over[i] and i > 0 else int(over[i])
    alert = (run >= min_run).astype(np.int8)
    alert[:train_rows] = 0  # fitted there, as the static band is
    fit = PcaFit(k, x.shape[1], float(share[k - 1]), thr_t2, thr_q)
    return alert, score, fit


# --- one series through every detector ------------------------------------------------------


@dataclass
class SeriesResult:
    """One detector on one series: the counts that pool, the exact per-series score metrics,
    and the scored rows' scores (for the pooled curves; not written to the JSON)."""

    events: EventCounts
    rows: Confusion
    hours: float
    scored_rows: int
    drift_windows: int
    drift_hit: int
    drift_elsewhere: int
    pr_auc: float
    vus_pr: float
    top_value: float
    top_count: int
    at_max: int
    max_score: float | None
    seconds: float
    scores: np.ndarray = field(repr=False)
    core: str = ""  # the replay's detector core ("compiled" or "python"); "" for baselines

    def counts(self) -> list[float]:
        e, r = self.events, self.rows
        return [
            e.faults,
            e.detected,
            e.false_alarms,
            e.drift_false_alarms,
            e.re_alerts,
            e.onsets,
            self.hours,
            self.scored_rows,
            r.tp,
            r.fp,
            r.fn,
            r.tn,
            self.drift_windows,
            self.drift_hit,
            self.drift_elsewhere,
            self.at_max,
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events.as_dict(),
            "rows": self.rows.as_dict(),
            "hours": self.hours,
            "scored_rows": self.scored_rows,
            "drift_windows": self.drift_windows,
            "drift_hit": self.drift_hit,
            "drift_elsewhere": self.drift_elsewhere,
            "pr_auc": self.pr_auc,
            "vus_pr": self.vus_pr,
            "top_value": self.top_value,
            "top_count": self.top_count,
            "at_max": self.at_max if self.max_score is not None else None,
            "seconds": self.seconds,
            "core": self.core,
        }


def grace_s(series: Series) -> float:
    gaps = np.diff(series.t)
    return GRACE_INTERVALS * float(np.median(gaps)) if len(gaps) else 0.0


def score_series(
    series: Series,
    alert: np.ndarray,
    score: np.ndarray,
    drift_times: Sequence[float] | None,
    max_score: float | None,
    seconds: float,
) -> SeriesResult:
    """Everything measured on one detector's output for one series (module docstring)."""
    k = series.train_rows
    if len(alert) != series.rows or len(score) != series.rows:
        raise BenchError(f"{len(alert)} alert flags / {len(score)} scores for {series.rows} rows")
    grace = grace_s(series)
    events = match_fault_events(series.t, alert, series.faults, grace, k, series.expect_drift)
    labels = series.labels[k:]
    rows = confusion(labels, alert[k:])
    scored = np.asarray(score[k:], dtype=float)
    if np.isnan(scored).any():
        raise BenchError("the score has NaN on scored rows")
    hit = elsewhere = windows = 0
    if drift_times is not None:  # only the gateway's detectors report drift events
        report = float(series.tags.get("drift_report_s", grace))
        drift = np.asarray(drift_times, dtype=float)
        claimed = np.zeros(len(drift), bool)
        windows = len(series.expect_drift)
        for a, b in series.expect_drift:
            inside = (drift >= a) & (drift < b + report)
            hit += int(inside.any())
            claimed |= inside
        t_first = series.t[k] if k < series.rows else math.inf
        elsewhere = int(np.sum(~claimed & (drift >= t_first)))
    top = float(scored.max()) if scored.size else math.nan
    return SeriesResult(
        events=events,
        rows=rows,
        hours=series.hours,
        scored_rows=int(scored.size),
        drift_windows=windows,
        drift_hit=hit,
        drift_elsewhere=elsewhere,
        pr_auc=average_precision(labels, scored) if scored.size else math.nan,
        vus_pr=vus_pr(labels, scored, VUS_MAX_BUFFER) if scored.size else math.nan,
        top_value=top,
        top_count=int(np.sum(scored == top)),
        at_max=int(np.sum(scored == max_score)) if max_score is not None else 0,
        max_score=max_score,
        seconds=seconds,
        scores=scored,
    )


_WORKER: dict[str, Any] = {}


def init_worker(runtime: str, tmp_root: str) -> None:
    """Per process: the models (loaded once) and a private folder for the CSVs."""
    _WORKER.clear()
    _WORKER["config"] = Config()
    _WORKER["models"] = {
        "default": load_model(None, runtime),
        "naive": NaiveModel(),
        "no-prediction": NoPredictionModel(),
    }
    _WORKER["folder"] = Path(tempfile.mkdtemp(prefix=f"worker-{os.getpid()}-", dir=tmp_root))


def run_detector(
    name: str, series: Series, csv_path: Callable[[], Path]
) -> tuple[np.ndarray, np.ndarray, list[float] | None, float | None, str]:
    """(alert, score, drift event times or None, largest possible score or None, core)."""
    if name in GATEWAY:
        model: StepModel = _WORKER["models"][name]
        run = run_replay(
            csv_path(),
            _WORKER["config"],
            model,
            time_column="timestamp",
            ignore=(LABEL_COLUMN,),
        )
        drift = [float(e.ts) for e in run.events if e.kind == "drift"]
        return run.alert, run.score, drift, REPLAY_MAX_SCORE, run.core
    if name == "rolling-z":
        alert = rolling_z_alert(series.x, ROLLING_WINDOW, ROLLING_Z, ROLLING_RUN)
        return alert, rolling_z_score(series.x, ROLLING_WINDOW), None, None, ""
    if name == "static-band":
        alert = static_band_alert(series.x, series.train_rows, STATIC_K)
        return alert, static_band_score(series.x, series.train_rows, STATIC_K), None, None, ""
    if name == "pca-t2q":
        alert, score, _ = pca_t2q(series.x, series.train_rows)
        return alert, score, None, None, ""
    raise BenchError(f"unknown detector {name!r}")


def applicable(detector: str, series: Series) -> bool:
    return detector != "pca-t2q" or len(series.channels) >= 2


@dataclass
class Task:
    corpus: str
    index: int
    series: Series
    detectors: tuple[str, ...]


def run_task(task: Task) -> tuple[int, dict[str, SeriesResult]]:
    """All detectors on one series. A failure names the corpus, the series and the detector."""
    series = task.series
    folder: Path = _WORKER["folder"]
    written: list[Path] = []

    def csv_path() -> Path:
        if not written:
            written.append(write_csv(series, folder))
        return written[0]

    out: dict[str, SeriesResult] = {}
    try:
        for name in task.detectors:
            if not applicable(name, series):
                continue
            started = time.perf_counter()
            try:
                alert, score, drift, top, core = run_detector(name, series, csv_path)
                seconds = time.perf_counter() - started
                out[name] = score_series(series, alert, score, drift, top, seconds)
                out[name].core = core
            except Exception as exc:
                raise BenchError(
                    f"detector {name!r} failed on series {task.corpus}/{series.name}: "
                    f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                ) from None
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    return task.index, out


# --- pooling and the bootstrap ---------------------------------------------------------------


def _ratio(num: np.ndarray, den: np.ndarray, scale: float = 1.0) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, scale * num / np.where(den > 0, den, 1.0), np.nan)


def sum_metrics(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The pooled metrics that are ratios of summed counts (one value per draw)."""
    det, fa, faults = sums["detected"], sums["false_alarms"], sums["faults"]
    precision = _ratio(det, det + fa)
    recall = _ratio(det, faults)
    tp, fp, fn, tn = sums["tp"], sums["fp"], sums["fn"], sums["tn"]
    return {
        "event_f1": np.asarray(f1_score(precision, recall), dtype=float),
        "event_precision": precision,
        "event_recall": recall,
        "false_alarms_per_1000h": _ratio(fa, sums["hours"], 1000.0),
        "false_alarms_per_10k_rows": _ratio(fa, sums["scored_rows"], 10_000.0),
        "drift_false_alarms_per_1000h": _ratio(sums["drift_false_alarms"], sums["hours"], 1000.0),
        "row_f1": _ratio(tp, tp + (fp + fn) / 2.0),
        "far_pct": _ratio(fp, fp + tn, 100.0),
        "mar_pct": _ratio(fn, fn + tp, 100.0),
        "fault_rows_in_alert_pct": _ratio(tp, tp + fn, 100.0),
        "drift_event_share": _ratio(sums["drift_hit"], sums["drift_windows"]),
    }


class DetectorPool:
    """One detector's per-series results in one corpus, ready to be pooled under any weights
    (``[draws, series]`` multiplicities; all ones = the point estimate; a series the detector
    did not run on has weight 0)."""

    def __init__(self, results: list[SeriesResult | None], labels: list[np.ndarray]) -> None:
        self.mask = np.array([r is not None for r in results], float)
        width = len(COUNT_FIELDS)
        self.table = np.array([r.counts() if r else [0.0] * width for r in results], float)
        self.table = self.table.reshape(len(results), width)
        self.results = results
        self.labels = labels
        self.max_score = next((r.max_score for r in results if r), None)
        delays = [(i, d, rd) for i, r in enumerate(results) if r for d, rd in _delays(r)]
        self.delay_series = np.array([i for i, _, _ in delays], int)
        self.delay_s = np.array([d for _, d, _ in delays], float)
        self.delay_rows = np.array([rd for _, _, rd in delays], float)
        self.top_value = np.array([r.top_value if r else -np.inf for r in results], float)
        self.top_count = np.array([r.top_count if r else 0 for r in results], float)
        self._curves: tuple[np.ndarray, ...] | None = None

    def curves(self) -> tuple[np.ndarray, ...]:
        """Per-series counts at this pool's threshold grid, stacked over series."""
        if self._curves is None:
            used = [(i, r.scores) for i, r in enumerate(self.results) if r and r.scored_rows]
            if not used:
                self._curves = ()
                return self._curves
            grid = threshold_grid(
                np.concatenate([self.labels[i] for i, _ in used]),
                np.concatenate([scores for _, scores in used]),
                GRID,
            )
            n, b, g = len(self.results), VUS_MAX_BUFFER + 1, len(grid)
            positives, soft, ranges = np.zeros(n), np.zeros((n, b)), np.zeros((n, b))
            predicted, tp, existing = np.zeros((n, g)), np.zeros((n, b, g)), np.zeros((n, b, g))
            for i, scores in used:
                c = score_curve(self.labels[i], scores, grid, VUS_MAX_BUFFER)
                positives[i], soft[i], ranges[i] = c.positives, c.soft, c.ranges
                predicted[i], tp[i], existing[i] = c.predicted, c.tp, c.existing
            self._curves = (positives, predicted, tp, soft, ranges, existing)
        return self._curves

    def metrics(self, weights: np.ndarray, full: bool = True) -> dict[str, np.ndarray]:
        w = np.atleast_2d(weights) * self.mask
        sums = dict(zip(COUNT_FIELDS, (w @ self.table).T, strict=True))
        out = sum_metrics(sums)
        if self.max_score is None:
            out["at_max_share_pct"] = np.full(w.shape[0], np.nan)
        else:
            out["at_max_share_pct"] = _ratio(sums["at_max"], sums["scored_rows"], 100.0)
        if not full:
            return out
        out["median_delay_s"] = weighted_median(self.delay_s, w[:, self.delay_series])
        out["median_delay_rows"] = weighted_median(self.delay_rows, w[:, self.delay_series])
        present = np.where(w > 0, self.top_value, -np.inf)
        peak = present.max(axis=1)
        at_peak = (self.top_value[None, :] == peak[:, None]) & (w > 0)
        out["top_share_pct"] = _ratio(
            np.sum(w * self.top_count * at_peak, axis=1), sums["scored_rows"], 100.0
        )
        curves = self.curves()
        if not curves:
            out["pr_auc"] = out["vus_pr"] = np.full(w.shape[0], np.nan)
            return out
        positives, predicted, tp, soft, ranges, existing = curves
        ap, vus = [], []
        for lo in range(0, w.shape[0], DRAW_CHUNK):
            wc = w[lo : lo + DRAW_CHUNK]
            pos = wc @ positives
            pred = wc @ predicted
            hit = np.tensordot(wc, tp, axes=(1, 0))
            ap.append(curve_average_precision(pos, pred, hit[:, 0, :]))
            vus.append(
                curve_vus_pr(
                    pos,
                    pred,
                    hit,
                    wc @ soft,
                    wc @ ranges,
                    np.tensordot(wc, existing, axes=(1, 0)),
                )
            )
        out["pr_auc"] = np.concatenate([np.atleast_1d(a) for a in ap])
        out["vus_pr"] = np.concatenate([np.atleast_1d(v) for v in vus])
        return out


def _delays(result: SeriesResult) -> list[tuple[float, int]]:
    return list(zip(result.events.delays_s, result.events.delays_rows, strict=True))


def _point(values: np.ndarray) -> float:
    return float(np.asarray(values, dtype=float).ravel()[0])


def _better(a: np.ndarray, b: np.ndarray, higher: bool) -> np.ndarray:
    ok = ~np.isnan(a) & ~np.isnan(b)
    return ok & (a > b if higher else a < b)


@dataclass
class CorpusReport:
    name: str
    role: str  # "main" or "validation"
    series: list[Series]
    detectors: list[str]
    pools: dict[str, DetectorPool]
    weights: np.ndarray  # [draws, series]
    point: dict[str, dict[str, float]]
    draws: dict[str, dict[str, np.ndarray]]
    comparisons: dict[str, dict[str, Any]]
    paired: dict[str, dict[str, np.ndarray]]  # "X" -> the default's and X's draws on X's subset
    seconds: dict[str, float]
    seeds: list[int]
    breakdown: dict[str, Any] = field(default_factory=dict)

    def intervals(self) -> dict[str, dict[str, list[float]]]:
        return {
            d: {m: interval(v, INTERVAL) for m, v in self.draws[d].items()} for d in self.detectors
        }


def corpus_seed(seed: int, corpus: str) -> int:
    return seed * 1_000_003 + zlib.crc32(corpus.encode())


def analyse_corpus(
    name: str,
    role: str,
    series: list[Series],
    results: dict[str, list[SeriesResult | None]],
    draws: int,
    seed: int,
    seconds: dict[str, float],
    seeds: list[int],
) -> CorpusReport:
    labels = [s.labels[s.train_rows :] for s in series]
    detectors = [d for d in DETECTORS if d in results and any(results[d])]
    pools = {d: DetectorPool(results[d], labels) for d in detectors}
    weights = bootstrap_weights(len(series), draws, corpus_seed(seed, name))
    ones = np.ones((1, len(series)))
    point = {d: {m: _point(v) for m, v in p.metrics(ones).items()} for d, p in pools.items()}
    boot = {d: p.metrics(weights) for d, p in pools.items()}
    comparisons: dict[str, dict[str, Any]] = {}
    paired: dict[str, dict[str, np.ndarray]] = {}
    if "default" in pools:
        base = pools["default"]
        for other in detectors:
            if other == "default":
                continue
            subset = pools[other].mask
            same = bool(np.all(subset == base.mask))
            a = boot["default"] if same else base.metrics(weights * subset, full=False)
            b = boot[other]
            paired[other] = {
                "default_f1": a["event_f1"],
                "other_f1": b["event_f1"],
                "default_fa": a["false_alarms_per_1000h"],
                "other_fa": b["false_alarms_per_1000h"],
            }
            a_point = point["default"] if same else base.metrics(ones * subset, full=False)
            comparisons[other] = {
                "series": int(subset.sum()),
                "default_event_f1_on_subset": _point(np.asarray(a_point["event_f1"])),
                "default_false_alarms_per_1000h_on_subset": _point(
                    np.asarray(a_point["false_alarms_per_1000h"])
                ),
                "event_f1_difference": interval(a["event_f1"] - b["event_f1"], INTERVAL),
                "default_better_event_f1_share": float(
                    np.mean(_better(a["event_f1"], b["event_f1"], True))
                ),
                "tie_event_f1_share": float(np.mean(a["event_f1"] == b["event_f1"])),
                "default_fewer_false_alarms_share": float(
                    np.mean(
                        _better(a["false_alarms_per_1000h"], b["false_alarms_per_1000h"], False)
                    )
                ),
            }
    return CorpusReport(
        name, role, series, detectors, pools, weights, point, boot, comparisons, paired,
        seconds, seeds,
    )  # fmt: skip


def channel_band(count: int) -> str:
    return next(label for top, label in CHANNEL_BANDS if count <= top)


def breakdown(report: CorpusReport, groups: list[tuple[str, ...]]) -> dict[str, Any]:
    """Point metrics per cell of tag values, for each group of tags every series has."""
    out: dict[str, Any] = {}
    tags = [{**s.tags, "n_channels": channel_band(len(s.channels))} for s in report.series]
    usable: list[tuple[str, ...]] = [
        g for g in groups if g and all(all(k in t for k in g) for t in tags)
    ]
    if not usable:  # the corpus's tags are not the ones expected: take its small-valued tags
        keys = [k for k in tags[0] if all(k in t for t in tags)] if tags else []
        single: list[tuple[str, ...]] = [(k,) for k in keys if 2 <= len({t[k] for t in tags}) <= 12]
        usable = single[:3]
    for group in usable:
        cells: dict[str, Any] = {}
        values = sorted({tuple(t[k] for k in group) for t in tags})
        for value in values:
            member = np.array([tuple(t[k] for k in group) == value for t in tags], float)
            cell: dict[str, Any] = {"series": int(member.sum())}
            for d, pool in report.pools.items():
                m = pool.metrics(member[None, :], full=False)
                cell[d] = {k: _point(v) for k, v in m.items()}
                cell[d]["series"] = int((member * pool.mask).sum())
            cells[" x ".join(value)] = cell
        out[" x ".join(group)] = cells
    return out


def stratified(reports: list[CorpusReport]) -> dict[str, Any]:
    """Default vs each ablation on event F1 over all the given corpora: every draw resamples
    within each corpus (the corpus's own draws), then the counts of all corpora are added."""
    usable = [r for r in reports if "default" in r.pools]
    if not usable:
        return {}
    names = [d for d in ("default", *ABLATIONS) if all(d in r.pools for r in usable)]
    pooled: dict[str, dict[str, np.ndarray]] = {}
    point: dict[str, dict[str, float]] = {}
    for d in names:
        for weights, key in ((None, "point"), (True, "draws")):
            total = None
            for r in usable:
                pool = r.pools[d]
                w = np.ones((1, len(r.series))) if weights is None else r.weights
                s = (w * pool.mask) @ pool.table
                total = s if total is None else total + s
            assert total is not None
            sums = dict(zip(COUNT_FIELDS, total.T, strict=True))
            m = sum_metrics(sums)
            if key == "point":
                point[d] = {k: _point(v) for k, v in m.items()}
            else:
                pooled[d] = m
    out: dict[str, Any] = {
        "corpora": [r.name for r in usable],
        "pooled": point,
        "intervals": {
            d: {k: interval(v, INTERVAL) for k, v in m.items()} for d, m in pooled.items()
        },
        "default_vs": {},
    }
    if "default" in pooled:
        for d in names:
            if d == "default":
                continue
            a, b = pooled["default"]["event_f1"], pooled[d]["event_f1"]
            out["default_vs"][d] = {
                "event_f1_difference": interval(a - b, INTERVAL),
                "default_better_event_f1_share": float(np.mean(_better(a, b, True))),
            }
    return out


# --- targets ---------------------------------------------------------------------------------


def _target(
    name: str,
    corpus: str,
    condition: str,
    point_ok: bool,
    share: float,
    values: dict[str, float],
    intervals: dict[str, list[float]],
) -> dict[str, Any]:
    return {
        "target": name,
        "corpus": corpus,
        "condition": condition,
        "pass": bool(point_ok),
        "share_of_draws": share,
        "values": values,
        "intervals": intervals,
    }


def _le(a: Any, b: float) -> Any:
    return ~np.isnan(a) & (a <= b)


def _ge(a: Any, b: float) -> Any:
    return ~np.isnan(a) & (a >= b)


def evaluate_targets(
    reports: list[CorpusReport], pooled: dict[str, Any], role: str
) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    for r in reports:
        if "default" not in r.pools:
            continue
        pd, dd = r.point["default"], r.draws["default"]
        ci = r.intervals()["default"]
        baselines = [b for b in BASELINES if b in r.pools]
        if baselines:
            best = max(
                baselines,
                key=lambda b: (
                    -math.inf if math.isnan(r.point[b]["event_f1"]) else r.point[b]["event_f1"]
                ),
            )
            pb = r.point[best]
            sub = r.comparisons[best]
            pair = r.paired[best]
            # On the detector's own subset of series (pca-t2q: the multivariate ones).
            d_f1 = sub["default_event_f1_on_subset"]
            d_fa = sub["default_false_alarms_per_1000h_on_subset"]
            ok = _ge(np.array(d_f1), pb["event_f1"]) & _le(
                np.array(d_fa), pb["false_alarms_per_1000h"]
            )
            share = float(
                np.mean(
                    ~np.isnan(pair["default_f1"])
                    & (pair["default_f1"] >= np.nan_to_num(pair["other_f1"], nan=-np.inf))
                    & ~np.isnan(pair["default_fa"])
                    & (pair["default_fa"] <= np.nan_to_num(pair["other_fa"], nan=np.inf))
                )
            )
            targets.append(
                _target(
                    "default >= best baseline",
                    r.name,
                    f"event F1 >= {best}'s and false alarms/1000 h <= {best}'s, at once",
                    bool(ok),
                    share,
                    {
                        "default_event_f1": d_f1,
                        "default_false_alarms_per_1000h": d_fa,
                        f"{best}_event_f1": pb["event_f1"],
                        f"{best}_false_alarms_per_1000h": pb["false_alarms_per_1000h"],
                    },
                    {
                        "default_event_f1": interval(pair["default_f1"], INTERVAL),
                        "default_false_alarms_per_1000h": interval(pair["default_fa"], INTERVAL),
                        f"{best}_event_f1": interval(pair["other_f1"], INTERVAL),
                        f"{best}_false_alarms_per_1000h": interval(pair["other_fa"], INTERVAL),
                        "event_f1_difference": sub["event_f1_difference"],
                    },
                )
            )
        if r.name in ("synthetic", "periodic"):
            fa, rec = dd["false_alarms_per_1000h"], dd["event_recall"]
            targets.append(
                _target(
                    "few false alarms at high recall",
                    r.name,
                    "false alarms/1000 h <= 5 at event recall >= 0.85",
                    bool(_le(pd["false_alarms_per_1000h"], 5.0) & _ge(pd["event_recall"], 0.85)),
                    float(np.mean(_le(fa, 5.0) & _ge(rec, 0.85))),
                    {k: pd[k] for k in ("false_alarms_per_1000h", "event_recall")},
                    {k: ci[k] for k in ("false_alarms_per_1000h", "event_recall")},
                )
            )
        if r.name == "skab":
            targets.append(
                _target(
                    "Conv-AE on SKAB",
                    r.name,
                    "row F1 >= 0.78 with FAR <= 13.6 %",
                    bool(_ge(pd["row_f1"], 0.78) & _le(pd["far_pct"], 13.6)),
                    float(np.mean(_ge(dd["row_f1"], 0.78) & _le(dd["far_pct"], 13.6))),
                    {k: pd[k] for k in ("row_f1", "far_pct")},
                    {k: ci[k] for k in ("row_f1", "far_pct")},
                )
            )
        if r.name == "persistent":
            keys = ("fault_rows_in_alert_pct", "far_pct")
            targets.append(
                _target(
                    "persistent faults stay in alert",
                    r.name,
                    ">= 80 % of fault rows in alert at FAR <= 2 %",
                    bool(_ge(pd[keys[0]], 80.0) & _le(pd[keys[1]], 2.0)),
                    float(np.mean(_ge(dd[keys[0]], 80.0) & _le(dd[keys[1]], 2.0))),
                    {k: pd[k] for k in keys},
                    {k: ci[k] for k in keys},
                )
            )
        top = dd["top_share_pct"]
        targets.append(
            _target(
                "score does not saturate",
                r.name,
                "< 0.1 % of scored rows share the top score value",
                bool(~np.isnan(pd["top_share_pct"]) & (pd["top_share_pct"] < 0.1)),
                float(np.mean(~np.isnan(top) & (top < 0.1))),
                {"top_share_pct": pd["top_share_pct"], "at_max_share_pct": pd["at_max_share_pct"]},
                {"top_share_pct": ci["top_share_pct"]},
            )
        )
    for ablation, cmp in pooled.get("default_vs", {}).items():
        share = cmp["default_better_event_f1_share"]
        targets.append(
            _target(
                f"default beats {ablation} overall",
                "pooled" if role == "main" else f"pooled ({role})",
                f"event F1 above {ablation}'s in >= 95 % of draws, stratified over "
                + (f"{n} corpora" if (n := len(pooled["corpora"])) > 1 else "1 corpus"),
                share >= 0.95,
                share,
                {
                    "default_event_f1": pooled["pooled"]["default"]["event_f1"],
                    f"{ablation}_event_f1": pooled["pooled"][ablation]["event_f1"],
                },
                {
                    "default_event_f1": pooled["intervals"]["default"]["event_f1"],
                    f"{ablation}_event_f1": pooled["intervals"][ablation]["event_f1"],
                    "event_f1_difference": cmp["event_f1_difference"],
                },
            )
        )
    for t in targets:
        t["role"] = role
    return targets


# --- printing --------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    v = float(value)
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}"


def fmt_ci(value: Any, bounds: list[float], digits: int = 2) -> str:
    if value is None or math.isnan(float(value)):
        return "-"
    return f"{fmt(value, digits)} ({fmt(bounds[0], digits)}-{fmt(bounds[1], digits)})"


def format_table(header: list[str], rows: list[list[str]], left: int = 2) -> str:
    """Plain aligned text: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])  # fmt: skip


MAIN_COLUMNS: list[tuple[str, str, int, bool]] = [
    # (header, metric, digits, with interval)
    ("event F1 (90 %)", "event_f1", 2, True),
    ("prec", "event_precision", 2, False),
    ("recall", "event_recall", 2, False),
    ("FA/1000h (90 %)", "false_alarms_per_1000h", 1, True),
    ("FA/10k rows", "false_alarms_per_10k_rows", 2, False),
    ("delay s", "median_delay_s", 0, False),
    ("delay rows", "median_delay_rows", 0, False),
    ("row F1 (90 %)", "row_f1", 2, True),
    ("FAR %", "far_pct", 1, False),
    ("in alert %", "fault_rows_in_alert_pct", 1, False),
    ("PR-AUC", "pr_auc", 2, False),
    ("VUS-PR (90 %)", "vus_pr", 2, True),
    ("top %", "top_share_pct", 2, False),
    ("drift", "drift_event_share", 2, False),
]


def main_table(reports: list[CorpusReport]) -> str:
    rows = []
    for r in reports:
        cis = r.intervals()
        for d in r.detectors:
            p = r.point[d]
            cells = [r.name, d, str(int(r.pools[d].mask.sum()))]
            for _, key, digits, with_ci in MAIN_COLUMNS:
                cells.append(
                    fmt_ci(p[key], cis[d][key], digits) if with_ci else fmt(p[key], digits)
                )
            rows.append(cells)
    header = ["corpus", "detector", "series", *(c[0] for c in MAIN_COLUMNS)]
    return format_table(header, rows, left=2)


def breakdown_tables(report: CorpusReport) -> list[str]:
    """One table per tag group: event F1, recall and false alarms per detector and cell (per
    10,000 rows for retimed, where stream hours differ 3,600-fold between intervals)."""
    out = []
    per_rows = report.name == RETIMED
    fa_key = "false_alarms_per_10k_rows" if per_rows else "false_alarms_per_1000h"
    fa_label, fa_digits = ("FA/10k", 2) if per_rows else ("FA/kh", 0)
    for group, cells in report.breakdown.items():
        header = [group, "n"] + [f"{d}: F1 rec {fa_label}" for d in report.detectors]
        rows = []
        for value, cell in cells.items():
            row = [value, str(cell["series"])]
            for d in report.detectors:
                m = cell[d]
                row.append(
                    f"{fmt(m['event_f1'])} {fmt(m['event_recall'])} {fmt(m[fa_key], fa_digits)}"
                    if m["series"]
                    else "-"
                )
            rows.append(row)
        out.append(f"\n{report.name} by {group}\n" + format_table(header, rows, left=1))
    return out


def comparison_table(reports: list[CorpusReport]) -> str:
    rows = []
    for r in reports:
        for other, c in r.comparisons.items():
            lo, hi = c["event_f1_difference"]
            rows.append(
                [
                    r.name,
                    other,
                    str(c["series"]),
                    f"{fmt(lo, 3)}..{fmt(hi, 3)}",
                    f"{100 * c['default_better_event_f1_share']:.0f}",
                    f"{100 * c['tie_event_f1_share']:.0f}",
                    f"{100 * c['default_fewer_false_alarms_share']:.0f}",
                ]
            )
    header = ["corpus", "default vs", "series", "F1 diff (90 %)", "better %", "tie %", "fewer FA %"]
    return format_table(header, rows, left=2)


def targets_table(targets: list[dict[str, Any]]) -> str:
    """Two lines per target: verdict, corpus, condition and share of draws; then the numbers,
    each with its 90 % interval where there is one."""
    head = [
        [
            "PASS" if t["pass"] else "FAIL",
            t["corpus"],
            t["condition"],
            f"{100 * t['share_of_draws']:.0f} %",
        ]
        for t in targets
    ]
    widths = [max((len(h[i]) for h in head), default=0) for i in range(4)]
    lines = []
    for t, h in zip(targets, head, strict=True):
        lines.append(
            "  ".join([h[0].ljust(widths[0]), h[1].ljust(widths[1]), h[2].ljust(widths[2])])
            + "  draws "
            + h[3].rjust(widths[3])
        )
        numbers = []
        for key, value in t["values"].items():
            bounds = t["intervals"].get(key)
            ci = f" ({fmt(bounds[0], 3)}-{fmt(bounds[1], 3)})" if bounds else ""
            numbers.append(f"{key} {fmt(value, 3)}{ci}")
        for key, bounds in t["intervals"].items():
            if key not in t["values"]:
                numbers.append(f"{key} {fmt(bounds[0], 3)}..{fmt(bounds[1], 3)}")
        lines.append(" " * (widths[0] + 2) + ", ".join(numbers))
    return "\n".join(lines)


# --- corpora ---------------------------------------------------------------------------------


def load_corpus_module(name: str) -> ModuleType:
    try:
        module = importlib.import_module(f"tools.corpora.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"tools.corpora.{name}":
            raise BenchError(
                f"corpus {name!r}: no module tools/corpora/{name}.py (leave it out with --corpora)"
            ) from exc
        raise BenchError(f"corpus {name!r}: importing tools.corpora.{name} failed: {exc}") from exc
    except Exception as exc:
        raise BenchError(
            f"corpus {name!r}: importing tools.corpora.{name} failed: {exc!r}"
        ) from exc
    if not callable(getattr(module, "generate", None)):
        raise BenchError(f"corpus {name!r}: tools.corpora.{name} has no generate(seed, size)")
    return module


def generate(module: ModuleType, name: str, seed: int, size: str) -> list[Series]:
    try:
        series = list(module.generate(seed, size))
    except Exception as exc:
        raise BenchError(f"corpus {name!r}: generate({seed}, {size!r}) failed: {exc!r}") from exc
    if not series:
        raise BenchError(f"corpus {name!r}: generate({seed}, {size!r}) returned no series")
    names = [s.name for s in series]
    if len(set(names)) != len(names):
        raise BenchError(f"corpus {name!r}: series names are not unique")
    return series


def generate_seeds(module: ModuleType, name: str, seeds: Sequence[int], size: str) -> list[Series]:
    """The corpus drawn from every seed, one after the other. With more than one seed each
    series is named after its seed (``name@s1``); a corpus that draws the same series whatever
    the seed (real data: SKAB) is taken once."""
    first = generate(module, name, seeds[0], size)
    if len(seeds) == 1:
        return first
    out = [replace(s, name=f"{s.name}@s{seeds[0]}") for s in first]
    for seed in seeds[1:]:
        more = generate(module, name, seed, size)
        same = [a.name for a in more] == [b.name for b in first] and all(
            np.array_equal(a.x, b.x, equal_nan=True) for a, b in zip(more, first, strict=True)
        )
        if same:
            break  # the seed draws nothing new
        out += [replace(s, name=f"{s.name}@s{seed}") for s in more]
    return out


def retimed_series(sources: dict[str, list[Series]]) -> list[Series]:
    out = []
    for source, series in sources.items():
        for s in series:
            base = replace(s, name=f"{source}.{s.name}", tags={**s.tags, "source": source})
            for seconds in RETIME_INTERVALS:
                moved = retime(base, seconds)
                out.append(replace(moved, corpus=RETIMED))
    return out


def _seed_text(args: argparse.Namespace) -> str:
    if args.seeds == 1:
        return f"seed {args.seed}"
    return f"seeds {args.seed}-{args.seed + args.seeds - 1}"


def _seeds_of(series: list[Series], seeds: Sequence[int]) -> list[int]:
    found = sorted({int(s.tags["seed"]) for s in series if s.tags.get("seed", "").isdigit()})
    return found or list(seeds)


# --- the run ---------------------------------------------------------------------------------


def _sanitise(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN and infinities to null."""
    if isinstance(value, dict):
        return {str(k): _sanitise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitise(v) for v in value]
    if isinstance(value, np.ndarray):
        return _sanitise(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


def parse_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})"
        )
    return list(dict.fromkeys(items))


def run_corpus(
    name: str, series: list[Series], detectors: list[str], pool: Pool | None
) -> tuple[dict[str, list[SeriesResult | None]], float, float]:
    """Run every series (longest first, for balance) in the pool, or in this process without
    one. Returns the results in the series' order, the wall time and the detectors' summed
    time."""
    tasks = [Task(name, i, s, tuple(detectors)) for i, s in enumerate(series)]
    tasks.sort(key=lambda t: -t.series.rows * len(t.detectors))
    results: dict[str, list[SeriesResult | None]] = {d: [None] * len(series) for d in detectors}
    started = time.perf_counter()
    done = pool.imap_unordered(run_task, tasks) if pool is not None else map(run_task, tasks)
    task_seconds = 0.0
    for k, (index, out) in enumerate(done, 1):
        for d, result in out.items():
            results[d][index] = result
            task_seconds += result.seconds
        if k % 25 == 0 or k == len(tasks):
            print(f"  {name}: {k}/{len(tasks)} series", file=sys.stderr)
    return results, time.perf_counter() - started, task_seconds


def series_entry(
    series: Series, index: int, results: dict[str, list[SeriesResult | None]]
) -> dict[str, Any]:
    """A series' line in the JSON's per_series: what it is, and each detector's raw counts."""
    entry: dict[str, Any] = {
        "tags": series.tags,
        "rows": series.rows,
        "train_rows": series.train_rows,
        "channels": len(series.channels),
        "faults": len(series.faults),
        "expect_drift": len(series.expect_drift),
    }
    for detector, per_series in results.items():
        result = per_series[index]
        if result is not None:
            entry[detector] = result.as_dict()
    return entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpora",
        type=lambda t: parse_list(t, KNOWN_CORPORA, "corpus"),
        default=list(MAIN_CORPORA),
        help=f"comma-separated, from {', '.join(KNOWN_CORPORA)} (default: all but {HELDOUT})",
    )
    parser.add_argument("--size", choices=SIZES, default="quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="draw every generated corpus from this many seeds (--seed, --seed + 1, ...) and "
        "pool them: a change that only wins on one draw shows up as no win",
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (1 = in process)")
    parser.add_argument(
        "--detectors",
        type=lambda t: parse_list(t, DETECTORS, "detector"),
        default=list(DETECTORS),
        help=f"comma-separated, from {', '.join(DETECTORS)} (default: all)",
    )
    parser.add_argument("--draws", type=int, default=2000, help="bootstrap resamples of series")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--against", type=Path, help="a previous --out JSON: flag corpora that got worse"
    )
    parser.add_argument("--runtime", default="auto", help="model runtime for the default model")
    parser.add_argument(
        "--retime-from",
        type=lambda t: parse_list(t, RETIME_FROM, "retimed source"),
        default=list(RETIME_FROM),
        help="the corpora the retimed corpus re-times (default: synthetic,gutentag)",
    )
    return parser


AGAINST_METRICS = ("event_f1", "false_alarms_per_1000h", "row_f1", "vus_pr")


def against(previous: dict[str, Any], reports: list[CorpusReport]) -> tuple[list[str], bool]:
    """The ship rule: per corpus, the default's headline numbers against the previous run's
    intervals. Worse = outside the old interval on the bad side (below its lower bound for a
    metric where higher is better, above its upper bound otherwise). Returns the lines and
    whether any corpus got worse."""
    lines, any_worse = [], False
    for r in reports:
        old_ci = previous.get("corpora", {}).get(r.name, {}).get("intervals", {}).get("default")
        if "default" not in r.point or not old_ci:
            continue
        worse = []
        for metric in AGAINST_METRICS:
            new, bounds = r.point["default"][metric], old_ci.get(metric)
            if bounds is None or new is None or math.isnan(new):
                continue
            lo, hi = bounds
            if HIGHER_IS_BETTER[metric] and lo is not None and new < lo:
                worse.append(f"{metric} {new:.3f} < {lo:.3f}")
            if not HIGHER_IS_BETTER[metric] and hi is not None and new > hi:
                worse.append(f"{metric} {new:.3f} > {hi:.3f}")
        any_worse |= bool(worse)
        lines.append(f"{r.name:12s} " + ("WORSE: " + ", ".join(worse) if worse else "not worse"))
    return lines, any_worse


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.draws < 1 or args.jobs < 1 or args.seeds < 1:
        parser.error("--draws, --jobs and --seeds must be at least 1")
    started = time.perf_counter()
    try:
        return _main(args, argv)
    except BenchError as exc:
        print(f"bench_detect: error: {exc}", file=sys.stderr)
        return 1
    finally:
        print(f"bench_detect: {time.perf_counter() - started:.1f} s", file=sys.stderr)


def _main(args: argparse.Namespace, argv: list[str] | None) -> int:
    run_started = time.perf_counter()
    detectors: list[str] = args.detectors
    # Import every corpus first, so a missing one stops the run before any work is done.
    modules: dict[str, ModuleType] = {}
    for name in args.corpora:
        for needed in args.retime_from if name == RETIMED else [name]:
            if needed not in modules:
                modules[needed] = load_corpus_module(needed)
    config = Config()
    model = load_model(None, args.runtime)
    seeds = list(range(args.seed, args.seed + args.seeds))
    corpora: dict[str, list[Series]] = {}
    generated: dict[str, list[Series]] = {}
    gen_seconds: dict[str, float] = {}
    for name in args.corpora:
        t0 = time.perf_counter()
        if name == RETIMED:
            sources = {}
            for source in args.retime_from:
                if source not in generated:
                    generated[source] = generate_seeds(modules[source], source, seeds, args.size)
                sources[source] = generated[source]
            corpora[name] = retimed_series(sources)
        else:
            if name not in generated:
                generated[name] = generate_seeds(modules[name], name, seeds, args.size)
            corpora[name] = generated[name]
        gen_seconds[name] = time.perf_counter() - t0
    tmp_root = tempfile.mkdtemp(prefix="bench-detect-")
    pool: Pool | None = None
    reports: list[CorpusReport] = []
    per_series: dict[str, dict[str, Any]] = {}
    try:
        if args.jobs > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            pool = ctx.Pool(args.jobs, initializer=init_worker, initargs=(args.runtime, tmp_root))
        else:
            init_worker(args.runtime, tmp_root)
        for name in args.corpora:
            series = corpora[name]
            dets = [d for d in detectors if d in GATEWAY] if name == RETIMED else detectors
            if not dets:
                print(f"  {name}: no detector selected for it, skipped", file=sys.stderr)
                continue
            print(
                f"  {name}: {len(series)} series, {sum(s.rows for s in series)} rows",
                file=sys.stderr,
            )
            results, wall, task_s = run_corpus(name, series, dets, pool)
            t0 = time.perf_counter()
            report = analyse_corpus(
                name,
                "validation" if name == HELDOUT else "main",
                series,
                results,
                args.draws,
                args.seed,
                {"generate": gen_seconds[name], "detect_wall": wall, "detect_cpu": task_s},
                _seeds_of(series, seeds),
            )
            groups = getattr(modules.get(name), "BREAKDOWN", None) or BREAKDOWNS.get(name, [])
            report.breakdown = breakdown(report, [tuple(g) for g in groups])
            report.seconds["score"] = time.perf_counter() - t0
            reports.append(report)
            per_series[name] = {s.name: series_entry(s, i, results) for i, s in enumerate(series)}
        if pool is not None:
            pool.close()
            pool.join()
            pool = None
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        shutil.rmtree(tmp_root, ignore_errors=True)

    main_reports = [r for r in reports if r.role == "main"]
    held = [r for r in reports if r.role == "validation"]
    pooled_main = stratified(main_reports)
    pooled_held = stratified(held)
    targets = evaluate_targets(main_reports, pooled_main, "main")
    targets += evaluate_targets(held, pooled_held, "validation")

    print(
        f"\nDetection benchmark, size {args.size}, {_seed_text(args)}, {args.draws} paired draws "
        f"per corpus; model {model.model_id} on {model.runtime}; rows after train_rows scored"
    )
    if main_reports:
        print(main_table(main_reports))
    if held:
        print("\nheldout (validation, kept out of tuning)")
        print(main_table(held))
    for r in reports:
        for text in breakdown_tables(r):
            print(text)
    if any(r.comparisons for r in reports):
        print("\ndefault against each detector, paired draws (event F1 unless said)")
        print(comparison_table(reports))
    for label, p in (("main corpora", pooled_main), ("heldout", pooled_held)):
        for ablation, c in p.get("default_vs", {}).items():
            lo, hi = c["event_f1_difference"]
            print(
                f"pooled over {label} ({', '.join(p['corpora'])}), stratified: default - "
                f"{ablation} event F1 {fmt(lo, 3)}..{fmt(hi, 3)}, default better in "
                f"{100 * c['default_better_event_f1_share']:.1f} % of draws"
            )
    print("\ntargets (pass/fail on the point estimates; draws % = share of draws meeting it)")
    print(targets_table(targets))
    print("\nseconds per corpus (generate / detect wall / detect cpu / score)")
    for r in reports:
        s = r.seconds
        print(
            f"{r.name:12s} {s['generate']:7.1f} {s['detect_wall']:7.1f} {s['detect_cpu']:7.1f} "
            f"{s['score']:7.1f}"
        )
    if args.against:
        previous = json.loads(args.against.read_text())
        lines, _ = against(previous, reports)
        print(f"\nagainst {args.against} (the default outside the old 90 % interval = worse):")
        print("\n".join(lines) or "(no corpus in common)")

    if args.out:
        result = {
            "benchmark": "bench_detect",
            "argv": sys.argv[1:] if argv is None else list(argv),
            "size": args.size,
            "seed": args.seed,
            "seeds": args.seeds,
            "draws": args.draws,
            "jobs": args.jobs,
            "corpora_requested": args.corpora,
            "protocol": {
                "scored_rows": "rows after each series' train_rows",
                "grace": f"{GRACE_INTERVALS:g} x the series' median sampling interval",
                "vus_max_buffer_rows": VUS_MAX_BUFFER,
                "threshold_grid": GRID,
                "interval_percentiles": list(INTERVAL),
                "retime_intervals_s": list(RETIME_INTERVALS),
                "retime_from": args.retime_from,
                "drift_window": "[a, b + tags['drift_report_s'] or grace)",
                "higher_is_better": HIGHER_IS_BETTER,
            },
            "detectors": {
                "selected": detectors,
                "default": {"model": model.model_id, "config": "Config()"},
                "naive": {"model": NaiveModel().model_id},
                "no-prediction": {"model": NoPredictionModel().model_id},
                "rolling-z": {"window": ROLLING_WINDOW, "z": ROLLING_Z, "min_run": ROLLING_RUN},
                "static-band": {"k": STATIC_K, "fitted_on": "train_rows"},
                "pca-t2q": {
                    "variance": PCA_VARIANCE,
                    "quantile": PCA_QUANTILE,
                    "margin": PCA_MARGIN,
                    "min_run": PCA_RUN,
                    "only": "series with >= 2 channels",
                },
            },
            "config": {"detector": config.detector.model_dump(mode="json")},
            "model": {
                "id": model.model_id,
                "runtime": model.runtime,
                "path": str(model.path),
                "sha256": getattr(model, "sha256", None),
            },
            "git": git_info(),
            "detector_cores": sorted(
                {r.core for rep in reports for p in rep.pools.values() for r in p.results if r}
                - {""}
            ),
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
            },
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "corpora": {
                r.name: {
                    "role": r.role,
                    "seeds": r.seeds,
                    "series": len(r.series),
                    "rows": int(sum(s.rows for s in r.series)),
                    "detectors": r.detectors,
                    "seconds": r.seconds,
                    "pooled": r.point,
                    "intervals": r.intervals(),
                    "comparisons": r.comparisons,
                    "breakdown": r.breakdown,
                    "per_series": per_series[r.name],
                }
                for r in reports
            },
            "pooled_over_corpora": {"main": pooled_main, "validation": pooled_held},
            "targets": targets,
            "seconds_total": time.perf_counter() - run_started,
        }
        args.out.write_text(json.dumps(_sanitise(result), indent=1) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
