"""How long the CLI commands operators type most take, from the shell prompt to the answer.

Each command runs as a fresh process (`python -m gateway ...`), as a shell runs it, against a
database filled like a gateway's after a busy week: --alerts raised and cleared alerts and
--readings readings over --streams streams. Tab completion is the same process asked by bash
for candidates. Reports the median and 90th percentile wall time of --runs runs each, beside
a bare `python -c pass` (the interpreter's own start, which no import change can remove).

    PYTHONPATH=. python tools/bench_cli.py [--runs 15] [--out bench_cli.json]

Times depend on the machine and its load: compare the commands with the bare interpreter in
one run, not across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.records import AlertChange, Batch, ScoredReading  # noqa: E402
from gateway.store import Store  # noqa: E402

TARGET_S = 0.3  # the goal for alerts list, status, version and completion


def fill(db: Path, alerts: int, readings: int, streams: int) -> None:
    now = time.time()
    with Store.open(db, gateway_id="bench-cli") as store:
        step = 10_000
        for start in range(0, readings, step):
            rows = [
                ScoredReading(f"line.s{i % streams}", now - readings + i, 1.0, 1.0, 0.01, False)
                for i in range(start, min(start + step, readings))
            ]
            store.write_batch(Batch(readings=rows))
        changes = []
        for i in range(alerts):
            alert_id = uuid.uuid4().hex
            for state, dt in (("raised", 0.0), ("cleared", 30.0)):
                changes.append(
                    AlertChange(
                        alert_id,
                        f"line.s{i % streams}",
                        state,
                        now - 3600 + i + dt,
                        0.999,
                        9.0,
                        1.0,
                        (0.5, 1.5),
                        None,
                        "cfc-default@bench",
                    )  # fmt: skip
                )
        store.write_batch(Batch(alerts=changes))


def commands(config: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    c = ["-c", str(config)]
    complete = {
        "_LIQUID_GATEWAY_COMPLETE": "complete_bash",
        "COMP_WORDS": "liquid-gateway al",
        "COMP_CWORD": "1",
    }
    return {
        "python -c pass": (["-c", "pass"], {}),
        "version": (["-m", "gateway", "version"], {}),
        "status": (["-m", "gateway", "status", *c], {}),
        "alerts list": (["-m", "gateway", "alerts", "list", *c], {}),
        "events list": (["-m", "gateway", "events", "list", *c], {}),
        "tab completion": (["-m", "gateway"], complete),
        "--help": (["-m", "gateway", "--help"], {}),
    }


def time_runs(argv: list[str], extra_env: dict[str, str], runs: int) -> list[float]:
    """Wall seconds of each run; a run that fails is an error, not a fast answer (``status``
    exits 3 here: no daemon runs, and saying so is its answer)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra_env}
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, *argv], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        out.append(time.perf_counter() - t0)
        if done.returncode not in (0, 3):
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        config = Path(tmp) / "gw.yaml"
        config.write_text(
            f"gateway: {{id: bench-cli, data_dir: {data}}}\nsources:\n  - {{type: simulate}}\n"
        )
        fill(data / "gateway.db", args.alerts, args.readings, args.streams)
        results = {}
        for name, (argv, env) in commands(config).items():
            times = time_runs(argv, env, args.runs)
            q = statistics.quantiles(times, n=10) if len(times) > 1 else times * 9
            results[name] = {"median_s": statistics.median(times), "p90_s": q[-1], "runs": times}
    base = results["python -c pass"]["median_s"]
    print(f"CLI latency, {args.runs} runs each; {args.alerts} alerts, {args.readings} readings")
    print(f"{'command':<16} {'median s':>9} {'p90 s':>7} {'over python':>12}  target")
    for name, r in results.items():
        mark = "" if name in ("python -c pass", "--help", "events list") else (
            "ok" if r["median_s"] < TARGET_S else f"> {TARGET_S}"
        )  # fmt: skip
        over = r["median_s"] - base
        print(f"{name:<16} {r['median_s']:>9.3f} {r['p90_s']:>7.3f} {over:>12.3f}  {mark}")
    if args.out:
        report = {
            "benchmark": "bench_cli",
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_avg": os.getloadavg(),
            },  # fmt: skip
            "target_s": TARGET_S,
            "params": vars(args) | {"out": str(args.out)},
            "results": results,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
