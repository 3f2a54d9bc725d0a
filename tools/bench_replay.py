"""Replay throughput: the interpreted detector core against its mypyc build, side by side.

Why this exists: replay (a backtest) and the daemon run the same Detector, whose one source
(``gateway/detector/core.py``) runs interpreted or compiled by mypyc. This measures
rows per second through ``gateway.pipeline.replay.replay`` with each core, on a generated
univariate file and on 8-channel SKAB files, and checks that both cores write the same output bytes.

The machine may be shared: each file is replayed ``--repeats`` times per core, the cores
alternating, and the table shows medians and the ratio (compiled / python) of the same run.
It also reports rows per CPU second, what one free core does whatever the load (the
wall-clock rate also counts the waits for a core). ``--baseline DIR`` also replays each file with another checkout's code (e.g. main), both of
its cores, in a child process in turn with this one's runs, and checks its output is the
same bytes: a speed-up is measured against the code it replaces under the same load.

    python tools/bench_replay.py [--skab ../shared/datasets/skab] [--rows 100000] [--repeats 5]
                                 [--baseline DIR] [--out bench-results/replay.json]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
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


def run_once(path: Path, core: str, config: Config, model: Any, options: dict[str, Any]) -> tuple[float, float, str, int]:  # fmt: skip
    """(rows per second, rows per CPU second, output, rows)."""
    out = io.StringIO()
    cpu = time.process_time()
    summary = replay(path, out, config, model, core=core, **options)
    cpu = time.process_time() - cpu
    return summary.rows / summary.seconds, summary.rows / cpu, out.getvalue(), summary.rows


# The child that replays a file with another checkout's code: its own gateway package, its
# default model, both its cores; rows/s and the SHA-256 of the output of each.
_CHILD = """
import hashlib, io, json, sys, time
from pathlib import Path
root, path, options, cores = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4:]
sys.path.insert(0, root)
from gateway.config import Config
from gateway.model.runtime import load_model
from gateway.pipeline.replay import replay
options["ignore"] = tuple(options.get("ignore", ()))
model, config, done = load_model(None, "auto"), Config(), {}
for core in cores:
    out, cpu = io.StringIO(), time.process_time()
    summary = replay(path, out, config, model, core=core, **options)
    cpu = time.process_time() - cpu
    digest = hashlib.sha256(out.getvalue().encode()).hexdigest()
    done[core] = [summary.rows / summary.seconds, summary.rows / cpu, digest]
print(json.dumps(done))
"""


def run_baseline(root: Path, path: Path, options: dict[str, Any], cores: tuple[str, ...]) -> dict[str, list[Any]]:  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), str(path), json.dumps(options), *cores],
        capture_output=True, text=True, env=env, cwd=root, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the baseline {root} failed on {path}:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def bench_file(
    label: str,
    path: Path,
    repeats: int,
    config: Config,
    model: Any,
    options: dict[str, Any],
    baseline: Path | None = None,
) -> dict[str, Any]:
    rates: dict[str, list[float]] = {core: [] for core in CORES}
    cpu_rates: dict[str, list[float]] = {core: [] for core in CORES}
    base_rates: dict[str, list[float]] = {core: [] for core in CORES}
    base_cpu: dict[str, list[float]] = {core: [] for core in CORES}
    outputs: dict[str, str] = {}
    base_digests: set[str] = set()
    rows = 0
    for r in range(repeats):
        order = CORES if r % 2 == 0 else tuple(reversed(CORES))
        if baseline is not None and r % 2 == 1:  # the baseline first every other round
            for core, (rate, cpu, digest) in run_baseline(baseline, path, options, order).items():
                base_rates[core].append(rate)
                base_cpu[core].append(cpu)
                base_digests.add(digest)
        for core in order:
            rate, cpu, text, rows = run_once(path, core, config, model, options)
            rates[core].append(rate)
            cpu_rates[core].append(cpu)
            outputs.setdefault(core, text)
        if baseline is not None and r % 2 == 0:
            for core, (rate, cpu, digest) in run_baseline(baseline, path, options, order).items():
                base_rates[core].append(rate)
                base_cpu[core].append(cpu)
                base_digests.add(digest)
    medians = {core: statistics.median(v) for core, v in rates.items()}
    ratios = [c / p for p, c in zip(rates["python"], rates["compiled"], strict=True)]
    with path.open(newline="") as handle:
        header = next(csv.reader(handle, delimiter=options.get("sep", ",")))
    result: dict[str, Any] = {
        "file": label,
        "rows": rows,
        "channels": len(header) - 1 - len(options.get("ignore", ())),
        "rows_per_s": rates,
        "median_rows_per_s": medians,
        # rows per second of CPU time: what one free core does, whatever the load
        "rows_per_cpu_s": cpu_rates,
        "median_rows_per_cpu_s": {core: statistics.median(v) for core, v in cpu_rates.items()},
        "ratio_median": statistics.median(ratios),
        "identical_output": outputs["python"] == outputs["compiled"],
    }
    if baseline is not None:
        digest = hashlib.sha256(outputs["compiled"].encode()).hexdigest()
        result["baseline"] = {
            "rows_per_s": base_rates,
            "median_rows_per_s": {core: statistics.median(v) for core, v in base_rates.items()},
            "rows_per_cpu_s": base_cpu,
            "median_rows_per_cpu_s": {core: statistics.median(v) for core, v in base_cpu.items()},
            # this compiled / the baseline's compiled, run by run (same load)
            "speedup_median": statistics.median(
                [a / b for a, b in zip(rates["compiled"], base_rates["compiled"], strict=True)]
            ),
            "identical_output": base_digests == {digest},
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skab", type=Path, default=Path("../shared/datasets/skab"),
                        help="SKAB folder (holding data/); skipped when absent")  # fmt: skip
    parser.add_argument("--rows", type=int, default=100_000, help="univariate file length")
    parser.add_argument("--repeats", type=int, default=5, help="runs per file and core")
    parser.add_argument("--out", type=Path, default=Path("bench-results/replay.json"))
    parser.add_argument("--baseline", type=Path, help="another checkout to time in turn")
    args = parser.parse_args(argv)
    baseline = args.baseline.resolve() if args.baseline else None
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
            results.append(bench_file(label, path, args.repeats, config, model, options, baseline))

    load = os.getloadavg()
    print(f"\nreplay throughput, model on {model.runtime}, medians of {args.repeats} runs per core"
          f" (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")  # fmt: skip
    versus = f" {'base py':>8s} {'base cc':>8s} {'speedup':>7s} {'as base':>7s}" if baseline else ""
    print(f"{'file':28s} {'rows':>7s} {'ch':>3s} {'python rows/s':>14s} {'compiled rows/s':>16s} "
          f"{'ratio':>6s} {'same output':>11s}{versus}")  # fmt: skip
    for r in results:
        m = r["median_rows_per_s"]
        line = (f"{r['file']:28s} {r['rows']:7d} {r['channels']:3d} {m['python']:14,.0f} "
                f"{m['compiled']:16,.0f} {r['ratio_median']:6.2f} "
                f"{'yes' if r['identical_output'] else 'NO':>11s}")  # fmt: skip
        if baseline is not None:
            b = r["baseline"]
            line += (f" {b['median_rows_per_s']['python']:8,.0f} "
                     f"{b['median_rows_per_s']['compiled']:8,.0f} {b['speedup_median']:7.2f} "
                     f"{'yes' if b['identical_output'] else 'NO':>7s}")  # fmt: skip
        print(line)
    if baseline is not None:
        print(f"base: {baseline}; speedup: compiled / base compiled, run by run")
    # CPU time is what one core does when it is free: on a loaded box the wall-clock rate
    # also counts the waits for a core, the CPU rate much less.
    print("\nrows per CPU second (the same runs)")
    versus = f" {'base py':>8s} {'base cc':>8s}" if baseline else ""
    print(f"{'file':28s} {'python':>8s} {'compiled':>8s}{versus}")
    for r in results:
        c = r["median_rows_per_cpu_s"]
        line = f"{r['file']:28s} {c['python']:8,.0f} {c['compiled']:8,.0f}"
        if baseline is not None:
            b = r["baseline"]["median_rows_per_cpu_s"]
            line += f" {b['python']:8,.0f} {b['compiled']:8,.0f}"
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "replay throughput, python vs compiled detector core",
                "runtime": model.runtime,
                "repeats": args.repeats,
                "load_average": load,
                "baseline": str(baseline) if baseline else None,
                "machine": {"platform": platform.platform(), "python": platform.python_version()},
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    same = all(r["identical_output"] and r.get("baseline", r)["identical_output"] for r in results)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
