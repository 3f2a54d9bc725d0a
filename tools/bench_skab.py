"""SKAB benchmark: the gateway's detector against the published leaderboard, by its protocol.

Why this exists: "works zero-config on any stream" is a claim; SKAB (34 labelled runs of an
industrial water-pump rig, 8 channels at 1 Hz) is a public yardstick with published results.
The protocol (dataset README): the first 400 rows of each file are training, rows after them
are scored, counts pooled over all files; F1/FAR/MAR row-wise and a NAB-like changepoint score
with a 60 s window after each true changepoint (see ``tools/metrics.py`` for the exact rules).

Our detector is online and label-free: it sees every row in order (the 400 training rows are
simply its first readings) through ``gateway.pipeline.replay.replay`` with the ``anomaly`` and
``changepoint`` columns stripped, and its ``alert`` column is the prediction. Compared in one
table: (a) the shipped defaults with the packaged CfC, (b) the same pipeline with the naive
"next = current" model (ablation), (b') the same pipeline with no prediction at all (only the
level and stuck tests), (c) a rolling z-score, (d) a static band fitted on the 400 training
rows, (e) the published numbers as quoted in the dataset README.

34 runs is a small sample: one hard fault more or less moves a pooled number by points. So the
files are also resampled with replacement (``--draws``, the same draws for every detector), and
the benchmark prints 90 % intervals, the default's difference to each ablation on the same
draws, and the share of draws in which the issue's target is met.

Usage (from the repo root)::

    python tools/bench_skab.py ../shared/datasets/skab [--out results.json] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
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
    Confusion,
    NabResult,
    bootstrap_files,
    compare_draws,
    confusion,
    nab_score,
    nab_windows,
    rising_edges,
)

TRAIN_ROWS = 400
WINDOW_S = 60.0
LABELS = ("anomaly", "changepoint")
SUBSETS = ("valve1", "valve2", "other")
ROLLING_WINDOW, ROLLING_Z, ROLLING_RUN = 60, 3.0, 3
STATIC_K = 4.0
TARGET = (0.80, 12.0, 25.0)  # issue #3: F1 >= 0.80 with FAR <= 12 % and MAR <= 25 %
ABLATIONS = ("naive (ablation)", "no prediction test")
INTERVAL = (5.0, 95.0)  # percentiles of the bootstrap draws: a 90 % interval

# As quoted in the dataset README: F1, FAR %, MAR %, NAB standard (None = not quoted).
PUBLISHED: dict[str, tuple[float | None, float | None, float | None, float | None]] = {
    "Conv-AE": (0.78, 13.55, 28.02, None),
    "MSET": (0.78, 39.73, 14.13, None),
    "T-squared+Q (PCA)": (0.76, 26.62, 24.92, 25.35),
    "LSTM-AE": (0.74, 29.96, 25.92, None),
    "T-squared": (0.66, 19.21, 42.6, None),
    "LSTM-VAE": (0.56, 9.13, 55.03, None),
    "Vanilla LSTM": (0.54, 12.54, 59.53, None),
    "Isolation forest": (0.29, 2.56, 82.89, 26.16),
    "MSCRED": (None, None, None, 32.42),
}


@dataclass
class SkabFile:
    path: Path
    times: np.ndarray  # epoch seconds
    values: np.ndarray  # [rows, channels]
    channels: list[str]
    anomaly: np.ndarray
    changepoints: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def find_files(dataset: Path) -> list[Path]:
    root = dataset / "data" if (dataset / "data").is_dir() else dataset
    files: list[Path] = []
    for subset in SUBSETS:
        found = sorted((root / subset).glob("*.csv"), key=lambda p: (len(p.stem), p.stem))
        files.extend(found)
    if not files:
        raise SystemExit(f"no SKAB files under {root}/{{{','.join(SUBSETS)}}}")
    return files


def read_file(path: Path) -> SkabFile:
    """Labels and channels for scoring and the baselines (the replay reads the file itself)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=";")
        header = [h.strip() for h in next(reader)]
        rows = [r for r in reader if r]
    i_time = header.index("datetime")
    i_labels = [header.index(c) for c in LABELS]
    i_channels = [i for i in range(len(header)) if i != i_time and i not in i_labels]
    times = np.array(
        [dt.datetime.fromisoformat(r[i_time]).replace(tzinfo=dt.UTC).timestamp() for r in rows]
    )
    values = np.array([[float(r[i]) for i in i_channels] for r in rows])
    anomaly = np.array([float(r[i_labels[0]]) for r in rows]) > 0.5
    changepoints = np.flatnonzero(np.array([float(r[i_labels[1]]) for r in rows]) > 0.5)
    return SkabFile(path, times, values, [header[i] for i in i_channels], anomaly, changepoints)


def score_file(data: SkabFile, alert: np.ndarray) -> tuple[Confusion, NabResult]:
    if len(alert) != len(data.anomaly):
        raise RuntimeError(f"{data.name}: {len(alert)} output rows for {len(data.anomaly)} input")
    counts = confusion(data.anomaly[TRAIN_ROWS:], alert[TRAIN_ROWS:])
    windows = nab_windows(data.times, data.changepoints, WINDOW_S, first_scored=TRAIN_ROWS)
    edges = rising_edges(alert)
    nab = nab_score(windows, edges[edges >= TRAIN_ROWS])
    return counts, nab


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def bootstrap_report(by_file: dict[str, list[Confusion]], draws: int) -> dict[str, Any]:
    """How much of the table is which files happen to be in SKAB: intervals over resampled
    files, the default against each ablation on the same draws, and how often the target is
    met. Printed, and returned for the JSON."""
    default, ablations = "cfc (default)", ABLATIONS
    boot = bootstrap_files(by_file, draws=draws, seed=0)
    report = {"draws": draws} | compare_draws(
        boot, default, ablations, {"f1": True, "far": False, "mar": False}, INTERVAL
    )
    print(
        f"\nresampling the {len(by_file[default])} files ({draws} draws, the same for every "
        f"detector): {INTERVAL[1] - INTERVAL[0]:.0f} % intervals"
    )
    for name in (default, *ablations):
        f1, far, mar = (report[name][k] for k in ("f1", "far", "mar"))
        print(
            f"{name:30s} F1 {f1[0]:.2f}-{f1[1]:.2f}  FAR {far[0]:.1f}-{far[1]:.1f}  "
            f"MAR {mar[0]:.1f}-{mar[1]:.1f}"
        )
    for ablation in ablations:
        diff = report["default_vs"][ablation]["difference"]
        better = report["default_vs"][ablation]["default_better_share"]
        print(
            f"default - {ablation}: F1 {diff['f1'][0]:+.3f}..{diff['f1'][1]:+.3f}, "
            f"FAR {diff['far'][0]:+.1f}..{diff['far'][1]:+.1f}, "
            f"MAR {diff['mar'][0]:+.1f}..{diff['mar'][1]:+.1f}; default better in "
            f"{100 * better['f1']:.0f} / {100 * better['far']:.0f} / {100 * better['mar']:.0f} % "
            "of draws (F1 / FAR / MAR)"
        )
    a = boot[default]
    f1, far, mar = TARGET
    met = float(np.mean((a["f1"] >= f1) & (a["far"] <= far) & (a["mar"] <= mar)))
    report["target"] = {"f1": f1, "far": far, "mar": mar, "met_share": met}
    print(
        f"target (F1 >= {f1:.2f}, FAR <= {far:g} %, MAR <= {mar:g} %) met by the default in "
        f"{100 * met:.1f} % of draws"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="SKAB folder (the one holding data/)")
    parser.add_argument("--out", type=Path, help="write results as JSON here")
    parser.add_argument("--limit", type=int, help="only the first N files (for development)")
    parser.add_argument("--runtime", default="auto", help="model runtime for (a) (default auto)")
    parser.add_argument(
        "--draws", type=int, default=2000, help="bootstrap resamples of the files (default 2000)"
    )
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error("--draws must be at least 1")

    files = find_files(args.dataset)[: args.limit]
    config = Config()
    cfc = load_model(None, args.runtime)
    naive = NaiveModel()
    models: dict[str, StepModel] = {
        "cfc (default)": cfc,
        "naive (ablation)": naive,
        "no prediction test": NoPredictionModel(),
    }
    names = [*models, "rolling z", "static band"]
    pooled = {n: (Confusion(), NabResult()) for n in names}
    by_file: dict[str, list[Confusion]] = {n: [] for n in names}
    per_file: dict[str, dict[str, Any]] = {}
    throughput: list[float] = []
    cores: set[str] = set()
    started = time.perf_counter()
    for path in files:
        data = read_file(path)
        alerts: dict[str, np.ndarray] = {}
        timings: dict[str, float] = {}
        for name, model in models.items():
            run = run_replay(path, config, model, sep=";", time_column="datetime", ignore=LABELS)
            alerts[name] = run.alert
            timings[name] = run.seconds
            if model is cfc:
                throughput.append(run.rows_per_second)
                cores.add(run.core)
        t0 = time.perf_counter()
        alerts["rolling z"] = rolling_z_alert(data.values, ROLLING_WINDOW, ROLLING_Z, ROLLING_RUN)
        alerts["static band"] = static_band_alert(data.values, TRAIN_ROWS, STATIC_K)
        timings["baselines"] = time.perf_counter() - t0
        entry: dict[str, Any] = {"rows": len(data.anomaly), "seconds": timings}
        for name in names:
            counts, nab = score_file(data, alerts[name])
            c, n = pooled[name]
            pooled[name] = (c + counts, n + nab)
            by_file[name].append(counts)
            entry[name] = counts.as_dict() | {"nab": nab.as_dict()}
        per_file[data.name] = entry
        print(
            f"{data.name:14s} rows={len(data.anomaly):5d} "
            + " ".join(f"{n.split()[0]}:F1={entry[n]['f1']:.2f}" for n in names),
            file=sys.stderr,
        )
    elapsed = time.perf_counter() - started

    table: list[tuple[str, float | None, float | None, float | None, float | None]] = []
    for name in names:
        c, n = pooled[name]
        table.append((name, c.f1, c.far, c.mar, n.score))
    for name, (f1, far, mar, nab_value) in PUBLISHED.items():
        table.append((f"published: {name}", f1, far, mar, nab_value))
    print(f"\nSKAB, {len(files)} files, rows > {TRAIN_ROWS} scored, pooled")
    print(f"{'detector':30s} {'F1':>5s} {'FAR%':>6s} {'MAR%':>6s} {'NAB std':>8s}")
    for name, f1, far, mar, nab_value in table:
        print(
            f"{name:30s} {_fmt(f1, 2):>5s} {_fmt(far, 2):>6s} {_fmt(mar, 2):>6s} "
            f"{_fmt(nab_value, 2):>8s}"
        )
    spread = bootstrap_report(by_file, args.draws)
    median_rps = float(np.median(throughput)) if throughput else math.nan
    core = "/".join(sorted(cores))
    print(
        f"\nreplay throughput, cfc (default) on {cfc.runtime}, {core} detector core: "
        f"{median_rps:,.0f} rows/s (median)"
    )

    if args.out:
        result = {
            "benchmark": "SKAB",
            "dataset": str(args.dataset),
            "files": len(files),
            "protocol": {
                "train_rows": TRAIN_ROWS,
                "nab_window_s": WINDOW_S,
                "nab_profile": {"A_tp": 1.0, "A_fp": -0.11, "A_fn": -1.0},
                "prediction": "replay 'alert' column; detections = rising edges",
            },
            "config": {"detector": config.detector.model_dump(mode="json")},
            "model": {"id": cfc.model_id, "runtime": cfc.runtime, "path": str(cfc.path)},
            "ablation_model": {"id": naive.model_id, "log_var": naive.log_var},
            "baselines": {
                "rolling z": {"window": ROLLING_WINDOW, "z": ROLLING_Z, "min_run": ROLLING_RUN},
                "static band": {"train_rows": TRAIN_ROWS, "k": STATIC_K},
            },
            "pooled": {
                name: pooled[name][0].as_dict() | {"nab": pooled[name][1].as_dict()}
                for name in names
            },
            "bootstrap": spread,
            "published": {
                name: dict(zip(("f1", "far", "mar", "nab_standard"), v, strict=True))
                for name, v in PUBLISHED.items()
            },
            "throughput_rows_per_s_median": median_rps,
            "detector_core": core,
            "throughput_rows_per_s": throughput,
            "seconds_total": elapsed,
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "per_file": per_file,
        }
        args.out.write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
