"""Replay throughput: the interpreted detector core against its mypyc build, side by side.

Why this exists: replay (a backtest) and the daemon run the same Detector, whose one source
(``gateway/detector/core.py``) runs interpreted or compiled by mypyc. This measures
rows per second through ``gateway.pipeline.replay.replay`` with each core, on a generated
univariate file and on 8-channel SKAB files, and checks that both cores write the same output bytes.

The machine may be shared: each file is replayed ``--repeats`` times per core, the cores
alternating, and the table shows medians and the ratio (compiled / python) of the same run.

    python tools/bench_replay.py [--skab ../shared/datasets/skab] [--rows 100000] [--repeats 5]
                                 [--out bench-results/replay.json]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import Config  # noqa: E402
from gateway.detector.engine import CORES, compiled_core_available  # noqa: E402
from gateway.model.runtime import load_model  # noqa: E402
from gateway.pipeline.replay import replay  # noqa: E402

SKAB_FILES = ("valve1/1.csv", "valve2/1.csv", "other/1.csv")
SKAB_OPTIONS: dict[str, Any] = {
    "sep": ";", "time_column": "datetime", "ignore": ("anomaly", "changepoint"),
}  # fmt: skip


def write_univariate(path: Path, rows: int, seed: int = 42) -> None:
    """A drifting noisy sensor at 1 Hz with a level shift and a stuck stretch."""
    rng = np.random.default_rng(seed)
    values = 20.0 + np.cumsum(rng.normal(0.0, 0.01, rows)) + rng.normal(0.0, 0.5, rows)
    values[rows // 2 : rows // 2 + 500] += 4.0
    values[3 * rows // 4 : 3 * rows // 4 + 300] = values[3 * rows // 4]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        for i, value in enumerate(values.tolist()):
            writer.writerow([1_700_000_000 + i, f"{value:.4f}"])


def run_once(path: Path, core: str, config: Config, model: Any, options: dict[str, Any]) -> tuple[float, str, int]:  # fmt: skip
    out = io.StringIO()
    summary = replay(path, out, config, model, core=core, **options)
    return summary.rows / summary.seconds, out.getvalue(), summary.rows


def bench_file(
    label: str, path: Path, repeats: int, config: Config, model: Any, options: dict[str, Any]
) -> dict[str, Any]:
    rates: dict[str, list[float]] = {core: [] for core in CORES}
    outputs: dict[str, str] = {}
    rows = 0
    for r in range(repeats):
        for core in CORES if r % 2 == 0 else tuple(reversed(CORES)):
            rate, text, rows = run_once(path, core, config, model, options)
            rates[core].append(rate)
            outputs.setdefault(core, text)
    medians = {core: statistics.median(v) for core, v in rates.items()}
    ratios = [c / p for p, c in zip(rates["python"], rates["compiled"], strict=True)]
    with path.open(newline="") as handle:
        header = next(csv.reader(handle, delimiter=options.get("sep", ",")))
    return {
        "file": label,
        "rows": rows,
        "channels": len(header) - 1 - len(options.get("ignore", ())),
        "rows_per_s": rates,
        "median_rows_per_s": medians,
        "ratio_median": statistics.median(ratios),
        "identical_output": outputs["python"] == outputs["compiled"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skab", type=Path, default=Path("../shared/datasets/skab"),
                        help="SKAB folder (holding data/); skipped when absent")  # fmt: skip
    parser.add_argument("--rows", type=int, default=100_000, help="univariate file length")
    parser.add_argument("--repeats", type=int, default=5, help="runs per file and core")
    parser.add_argument("--out", type=Path, default=Path("bench-results/replay.json"))
    args = parser.parse_args(argv)
    if not compiled_core_available():
        print("the compiled core is not built: python -m gateway.detector.build", file=sys.stderr)
        return 1
    model = load_model(None, "auto")
    config = Config()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        generated = Path(tmp) / "univariate.csv"
        write_univariate(generated, args.rows)
        jobs: list[tuple[str, Path, dict[str, Any]]] = [
            (f"generated ({args.rows:,} rows)", generated, {})
        ]
        root = args.skab / "data" if (args.skab / "data").is_dir() else args.skab
        jobs += [(f"SKAB {n}", root / n, SKAB_OPTIONS) for n in SKAB_FILES if (root / n).is_file()]
        for label, path, options in jobs:
            print(f"{label} ...", file=sys.stderr)
            results.append(bench_file(label, path, args.repeats, config, model, options))

    print(f"\nreplay throughput, model on {model.runtime}, medians of {args.repeats} runs per core")
    print(f"{'file':28s} {'rows':>7s} {'ch':>3s} {'python rows/s':>14s} {'compiled rows/s':>16s} "
          f"{'ratio':>6s} {'same output':>11s}")  # fmt: skip
    for r in results:
        m = r["median_rows_per_s"]
        print(f"{r['file']:28s} {r['rows']:7d} {r['channels']:3d} {m['python']:14,.0f} "
              f"{m['compiled']:16,.0f} {r['ratio_median']:6.2f} "
              f"{'yes' if r['identical_output'] else 'NO':>11s}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "replay throughput, python vs compiled detector core",
                "runtime": model.runtime,
                "repeats": args.repeats,
                "machine": {"platform": platform.platform(), "python": platform.python_version()},
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0 if all(r["identical_output"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
