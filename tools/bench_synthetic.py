"""Synthetic fault suite: known faults at known times in streams of known character.

Why: SKAB is one rig with one kind of fault per run; the gateway claims to work zero-config on
any univariate stream. Here every stream kind (periodic, noisy, trending, spiky-but-normal,
random-walk-ish, irregularly sampled) is crossed with every fault kind, so a weakness shows up
as a cell, not as a pooled average. Every stream goes through ``gateway.pipeline.replay.replay`` (a
temporary CSV with an epoch-seconds ``timestamp`` column) with the default config, next to the
ablation (naive model), a rolling z-score and a static band fitted on the first ``warmup`` rows.

Streams are sampled every 10 s (the irregular kind: exponential intervals with mean 10 s and
rare gaps of 2-8 min, below ``max_gap``). Fault size is relative to ``s``, the standard deviation
of the clean stream over the hour before the fault; a sign is drawn per fault. Faults repeat
every 3 h from one hour after warm-up and revert after 30 min (a spike is one sample):

- ``level_shift``: +-3 s; ``spike``: one sample +-8 s; ``variance``: added noise of std 2 s;
- ``stuck``: the last good value repeated; ``frequency``: the periodic part runs 3x faster
  (only for kinds that have one: periodic, irregular);
- ``drift``: a ramp of 4 s over 4 h that stays; it must NOT raise an alert (an alert during the
  ramp is a false alarm) and SHOULD produce a ``drift`` event within the ramp or 2 h after it.

Scoring (``tools/metrics.match_events``): a fault ``[start, end]`` is detected by an alert rising
edge in ``[start, end + grace]``; any other rising edge is a false alarm. Rows before ``warmup``
are not scored for any detector, and stream time is counted from there.

Beside the classical baselines run two ablations of the same pipeline: the naive "next =
current" model, and no prediction at all (level and stuck tests only). ``--seeds N`` pools N
suites (seeds S..S+N-1); the streams are then resampled with replacement (``--draws``, paired
across detectors) for 90 % intervals and how often the default beats each ablation.

Usage (from the repo root)::

    python tools/bench_synthetic.py [--out results.json] [--hours H] [--seed S] [--seeds N]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import Config  # noqa: E402
from gateway.model.naive import NaiveModel  # noqa: E402
from gateway.model.runtime import StepModel, load_model  # noqa: E402
from tools.detectors import (  # noqa: E402
    NoPredictionModel,
    rolling_z_alert,
    run_replay,
    static_band_alert,
)
from tools.metrics import (  # noqa: E402
    EventMatch,
    compare_draws,
    match_events,
    resample_sums,
    rising_edges,
)

PERIOD_S = 10.0
T0 = 1_700_000_000.0
KINDS = ("periodic", "noisy", "trending", "spiky", "random_walk", "irregular")
FAULTS = ("level_shift", "spike", "variance", "stuck", "frequency", "drift")
PERIODIC_KINDS = ("periodic", "irregular")
FAULT_EVERY_S = 3 * 3600.0
FAULT_LENGTH_S = 1800.0
DRIFT_RAMP_S = 4 * 3600.0
DRIFT_REPORT_S = 2 * 3600.0
LEVEL_SHIFT, SPIKE, EXTRA_NOISE, DRIFT_SIZE, FREQ_FACTOR = 3.0, 8.0, 2.0, 4.0, 3.0
ROLLING_WINDOW, ROLLING_Z, ROLLING_RUN = 60, 3.0, 3
STATIC_K = 4.0
DETECTORS = (
    "cfc (default)",
    "naive (ablation)",
    "no prediction test",
    "rolling z",
    "static band",
)
ABLATIONS = ("naive (ablation)", "no prediction test")
INTERVAL = (5.0, 95.0)  # percentiles of the bootstrap draws: a 90 % interval


@dataclass
class Stream:
    kind: str
    fault: str
    t: np.ndarray
    x: np.ndarray
    faults: list[tuple[float, float]] = field(default_factory=list)  # absolute seconds
    tag: str = ""  # which suite it belongs to, when several seeds run

    @property
    def name(self) -> str:
        return f"{self.tag}{self.kind}-{self.fault}"


def _times(kind: str, hours: float, rng: np.random.Generator) -> np.ndarray:
    span = hours * 3600.0
    if kind != "irregular":
        return T0 + np.arange(0.0, span, PERIOD_S)
    n = int(span / PERIOD_S * 1.2) + 10
    steps = np.clip(rng.exponential(PERIOD_S, n), 1.0, 60.0)
    gaps = rng.random(n) < 0.003
    steps = np.where(gaps, rng.uniform(120.0, 480.0, n), steps)
    t = np.cumsum(steps) - steps[0]
    return T0 + np.round(t[t < span], 3)


def _ou(t: np.ndarray, tau: float, std: float, rng: np.random.Generator) -> np.ndarray:
    """Ornstein-Uhlenbeck process, exact at any sampling."""
    out = np.empty(len(t))
    a = np.exp(-np.diff(t, prepend=t[0]) / tau)
    eps = rng.standard_normal(len(t)) * std * np.sqrt(1.0 - a * a)
    out[0] = rng.standard_normal() * std
    for k in range(1, len(t)):
        out[k] = a[k] * out[k - 1] + eps[k]
    return out


def clean_signal(
    kind: str, t: np.ndarray, rng: np.random.Generator, speed: np.ndarray
) -> np.ndarray:
    """The fault-free stream; ``speed`` multiplies the frequency of the periodic part."""
    n = len(t)
    rel = t - t[0]
    if kind in PERIODIC_KINDS:
        phase = 2 * np.pi * np.cumsum(speed * np.diff(rel, prepend=0.0)) / 600.0
        return (
            50.0
            + 5.0 * np.sin(phase)
            + 2.0 * np.sin(4.0 * phase + rng.uniform(0, 2 * np.pi))
            + 0.3 * rng.standard_normal(n)
        )
    if kind == "noisy":
        return 20.0 + 2.0 * rng.standard_normal(n)
    if kind == "trending":
        return 100.0 + 0.5 * rel / 3600.0 + _ou(t, 120.0, 0.5, rng)
    if kind == "spiky":
        spikes = (rng.random(n) < 1 / 200) * rng.choice([-1.0, 1.0], n) * rng.uniform(4, 8, n)
        return 10.0 + rng.standard_normal(n) + spikes
    if kind == "random_walk":
        return _ou(t, 7200.0, 3.0, rng) + 0.2 * rng.standard_normal(n)
    raise ValueError(f"unknown stream kind {kind!r}")


def make_stream(kind: str, fault: str, hours: float, warmup: int, seed: int) -> Stream:
    rng = np.random.default_rng(seed)
    t = _times(kind, hours, rng)
    first = t[min(warmup, len(t) - 1)] + 3600.0
    starts: list[float] = []
    if fault == "drift":
        if first + DRIFT_RAMP_S <= t[-1]:
            starts = [first]
    else:
        start = first
        while start + FAULT_LENGTH_S + 3600.0 <= t[-1]:
            starts.append(start)
            start += FAULT_EVERY_S
    speed = np.ones(len(t))
    if fault == "frequency":
        for s in starts:
            speed[(t >= s) & (t < s + FAULT_LENGTH_S)] = FREQ_FACTOR
    x = clean_signal(kind, t, rng, speed)
    clean = x.copy()
    stream = Stream(kind, fault, t, x)
    for s in starts:
        sigma = float(np.std(clean[(t >= s - 3600.0) & (t < s)]))
        sign = float(rng.choice([-1.0, 1.0]))
        window = (t >= s) & (t < s + FAULT_LENGTH_S)
        i0 = int(np.searchsorted(t, s))
        if fault == "level_shift":
            x[window] += sign * LEVEL_SHIFT * sigma
        elif fault == "spike":
            x[i0] += sign * SPIKE * sigma
            stream.faults.append((float(t[i0]), float(t[i0])))
            continue
        elif fault == "variance":
            x[window] += EXTRA_NOISE * sigma * rng.standard_normal(int(window.sum()))
        elif fault == "stuck":
            x[window] = x[i0 - 1]
        elif fault == "drift":
            ramp = np.clip((t - s) / DRIFT_RAMP_S, 0.0, 1.0)
            x += sign * DRIFT_SIZE * sigma * ramp
            stream.faults.append((s, s + DRIFT_RAMP_S))
            continue
        stream.faults.append((s, s + FAULT_LENGTH_S))
    return stream


def suite(hours: float, warmup: int, seed: int) -> list[Stream]:
    streams = []
    for i, kind in enumerate(KINDS):
        for j, fault in enumerate(FAULTS):
            if fault == "frequency" and kind not in PERIODIC_KINDS:
                continue
            streams.append(make_stream(kind, fault, hours, warmup, seed * 1000 + 10 * i + j))
    return streams


def write_csv(stream: Stream, path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("timestamp,value\n")
        for ts, value in zip(stream.t, stream.x, strict=True):
            fh.write(f"{ts:.3f},{value:.6g}\n")


@dataclass
class Outcome:
    match: EventMatch
    hours: float
    drift_events: int = 0  # in the drift window (drift streams)
    other_drift_events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return self.match.as_dict() | {
            "hours": self.hours,
            "false_alarms_per_1000h": 1000.0 * self.match.false_alarms / self.hours
            if self.hours
            else math.nan,
            "drift_events_in_window": self.drift_events,
            "drift_events_elsewhere": self.other_drift_events,
        }


def evaluate(
    stream: Stream, alert: np.ndarray, warmup: int, grace: float, events: list[Any]
) -> Outcome:
    edges = rising_edges(alert)
    edges = edges[edges >= warmup]
    hours = float(stream.t[-1] - stream.t[min(warmup, len(stream.t) - 1)]) / 3600.0
    edge_times = stream.t[edges]
    if stream.fault == "drift":
        match = match_events([], edge_times, grace)  # every alert is a false alarm
        match.faults = len(stream.faults)
    else:
        match = match_events(stream.faults, edge_times, grace)
    outcome = Outcome(match, hours)
    for event in events:
        if event.kind != "drift":
            continue
        if stream.fault == "drift" and any(
            s <= event.ts <= e + DRIFT_REPORT_S for s, e in stream.faults
        ):
            outcome.drift_events += 1
        else:
            outcome.other_drift_events += 1
    if stream.fault == "drift":
        detected = min(outcome.drift_events, len(stream.faults))
        outcome.match.detected = detected
        outcome.match.hits = [k < detected for k in range(len(stream.faults))]
        first = [
            e.ts - stream.faults[0][0]
            for e in events
            if e.kind == "drift"
            and stream.faults[0][0] <= e.ts <= stream.faults[0][1] + DRIFT_REPORT_S
        ]
        outcome.match.delays = first[:1]
    return outcome


def _fmt(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def bootstrap_report(
    streams: list[Stream], outcomes: dict[str, dict[str, Outcome]], draws: int
) -> dict[str, Any]:
    """The default against each ablation over resampled streams (paired draws): 90 % intervals
    of precision, recall and false alarms per 1,000 h, and how often the default is better."""
    default = "cfc (default)"
    names = (default, *ABLATIONS)
    tables = {
        d: np.array(
            [
                (o.match.detected, o.match.false_alarms, o.match.faults, o.hours)
                for o in (outcomes[d][s.name] for s in streams)
            ]
        )
        for d in names
    }
    stats: dict[str, dict[str, np.ndarray]] = {}
    for name, sums in resample_sums(tables, draws, seed=0).items():
        detected, false_alarms, faults, hours = sums.T
        with np.errstate(invalid="ignore", divide="ignore"):
            stats[name] = {
                "precision": detected / (detected + false_alarms),
                "recall": detected / faults,
                "false_alarms_per_1000h": 1000.0 * false_alarms / hours,
            }
    higher = {"precision": True, "recall": True, "false_alarms_per_1000h": False}
    report = {"draws": draws} | compare_draws(stats, default, ABLATIONS, higher, INTERVAL)
    print(f"\nresampling the {len(streams)} streams ({draws} draws, paired): 90 % intervals")
    for name in names:
        p, r, f = (report[name][k] for k in higher)
        print(
            f"{name:18s} precision {p[0]:.2f}-{p[1]:.2f}  recall {r[0]:.2f}-{r[1]:.2f}  "
            f"FA/1000h {f[0]:.1f}-{f[1]:.1f}"
        )
    for ablation in ABLATIONS:
        better = report["default_vs"][ablation]["default_better_share"]
        print(
            f"default better than {ablation} in "
            f"{100 * better['precision']:.0f} / {100 * better['recall']:.0f} / "
            f"{100 * better['false_alarms_per_1000h']:.0f} % of draws "
            "(precision / recall / fewer false alarms)"
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write results as JSON here")
    parser.add_argument("--hours", type=float, default=24.0, help="length of each stream")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--seeds", type=int, default=1, help="run this many suites (seeds SEED, SEED+1, ...)"
    )
    parser.add_argument("--draws", type=int, default=2000, help="bootstrap resamples of streams")
    parser.add_argument("--grace", type=float, default=120.0, help="seconds after a fault's end")
    parser.add_argument("--runtime", default="auto", help="model runtime for the CfC model")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.draws < 1:
        parser.error("--seeds and --draws must be at least 1")

    config = Config()
    warmup = config.detector.warmup
    cfc = load_model(None, args.runtime)
    models: dict[str, StepModel] = {
        "cfc (default)": cfc,
        "naive (ablation)": NaiveModel(),
        "no prediction test": NoPredictionModel(),
    }
    streams: list[Stream] = []
    for seed in range(args.seed, args.seed + args.seeds):
        for stream in suite(args.hours, warmup, seed):
            stream.tag = f"s{seed}-" if args.seeds > 1 else ""
            streams.append(stream)
    outcomes: dict[str, dict[str, Outcome]] = {d: {} for d in DETECTORS}
    throughput: list[float] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-synthetic-") as tmp:
        for stream in streams:
            path = Path(tmp) / f"{stream.name}.csv"
            write_csv(stream, path)
            for name, model in models.items():
                run = run_replay(path, config, model, time_column="timestamp")
                if len(run.alert) != len(stream.t):
                    raise RuntimeError(f"{stream.name}: replay returned {len(run.alert)} rows")
                outcomes[name][stream.name] = evaluate(
                    stream, run.alert, warmup, args.grace, run.events
                )
                if model is cfc:
                    throughput.append(run.rows_per_second)
            rz = rolling_z_alert(stream.x, ROLLING_WINDOW, ROLLING_Z, ROLLING_RUN)
            outcomes["rolling z"][stream.name] = evaluate(stream, rz, warmup, args.grace, [])
            sb = static_band_alert(stream.x, warmup, STATIC_K)
            outcomes["static band"][stream.name] = evaluate(stream, sb, warmup, args.grace, [])
            print(
                f"{stream.name:24s} rows={len(stream.t):6d} faults={len(stream.faults)} "
                + " ".join(
                    f"{d.split()[0]}:{o[stream.name].match.detected}/"
                    f"{o[stream.name].match.false_alarms}"
                    for d, o in outcomes.items()
                ),
                file=sys.stderr,
            )
    elapsed = time.perf_counter() - started

    def pool(detector: str, keep: Any) -> Outcome:
        total = Outcome(EventMatch(), 0.0)
        for stream in streams:
            if keep(stream):
                o = outcomes[detector][stream.name]
                total.match = total.match + o.match
                total.hours += o.hours
                total.drift_events += o.drift_events
                total.other_drift_events += o.other_drift_events
        return total

    summary: dict[str, dict[str, Any]] = {}
    header = (
        f"{'fault':12s} {'detector':18s} {'faults':>6s} {'det':>4s} {'FA':>4s} {'prec':>5s} "
        f"{'recall':>6s} {'FA/1000h':>9s} {'delay s':>8s}"
    )
    seeds = f"seed {args.seed}" + (f"-{args.seed + args.seeds - 1}" if args.seeds > 1 else "")
    print(f"\nSynthetic suite: {len(streams)} streams x {args.hours:g} h, {seeds}")
    print("(drift rows: 'det' = drift events in time, FA = alerts during the drift stream)")
    print(header)
    for fault in (*FAULTS, "overall"):
        summary[fault] = {}
        for detector in DETECTORS:
            o = pool(detector, lambda s, f=fault: f == "overall" or s.fault == f)
            summary[fault][detector] = o.as_dict()
            m = o.match
            far = 1000.0 * m.false_alarms / o.hours if o.hours else math.nan
            print(
                f"{fault:12s} {detector:18s} {m.faults:6d} {m.detected:4d} {m.false_alarms:4d} "
                f"{_fmt(m.precision, 2):>5s} {_fmt(m.recall, 2):>6s} {_fmt(far, 1):>9s} "
                f"{_fmt(m.median_delay, 0):>8s}"
            )
    by_kind: dict[str, dict[str, Any]] = {}
    print("\nBy stream kind (faults other than drift): recall / false alarms per 1000 h")
    print(f"{'kind':12s} " + " ".join(f"{d:>22s}" for d in DETECTORS))
    for kind in KINDS:
        by_kind[kind] = {}
        cells = []
        for detector in DETECTORS:
            o = pool(detector, lambda s, k=kind: s.kind == k and s.fault != "drift")
            d = o.as_dict()
            by_kind[kind][detector] = d
            cells.append(f"{_fmt(d['recall'], 2)} / {_fmt(d['false_alarms_per_1000h'], 0)}")
        print(f"{kind:12s} " + " ".join(f"{c:>22s}" for c in cells))
    spread = bootstrap_report(streams, outcomes, args.draws)
    median_rps = float(np.median(throughput)) if throughput else math.nan
    print(f"\nreplay throughput, cfc (default) on {cfc.runtime}: {median_rps:,.0f} rows/s (median)")

    if args.out:
        result = {
            "benchmark": "synthetic",
            "hours": args.hours,
            "seed": args.seed,
            "seeds": args.seeds,
            "grace_s": args.grace,
            "config": {"detector": config.detector.model_dump(mode="json")},
            "model": {"id": cfc.model_id, "runtime": cfc.runtime, "path": str(cfc.path)},
            "faults": {
                "level_shift_sigmas": LEVEL_SHIFT,
                "spike_sigmas": SPIKE,
                "variance_added_noise_sigmas": EXTRA_NOISE,
                "drift_sigmas": DRIFT_SIZE,
                "drift_ramp_s": DRIFT_RAMP_S,
                "frequency_factor": FREQ_FACTOR,
                "length_s": FAULT_LENGTH_S,
                "every_s": FAULT_EVERY_S,
            },
            "baselines": {
                "rolling z": {"window": ROLLING_WINDOW, "z": ROLLING_Z, "min_run": ROLLING_RUN},
                "static band": {"train_rows": warmup, "k": STATIC_K},
            },
            "by_fault": summary,
            "by_kind": by_kind,
            "bootstrap": spread,
            "per_stream": {
                d: {name: o.as_dict() for name, o in per.items()} for d, per in outcomes.items()
            },
            "throughput_rows_per_s_median": median_rps,
            "seconds_total": elapsed,
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
