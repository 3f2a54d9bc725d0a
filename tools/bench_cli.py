"""How long the CLI commands operators type most take, from the shell prompt to the answer.

Each command runs as a fresh process (`python -m gateway ...`, the `liquid-gateway` console
script's code), as a shell runs it, against a database filled like a gateway's after a busy
week: --alerts raised and cleared alerts and --readings readings over --streams streams. Tab
completion is the same process asked by bash for candidates (`_LIQUID_GATEWAY_COMPLETE`, from
the script's name in pyproject.toml). Reports the median and 90th percentile wall time of
--runs runs each, beside a bare `python -c pass` (the interpreter's own start, which no import
change can remove), and for each command the imports that cost most (`python -X importtime`,
one more run).

    PYTHONPATH=. python tools/bench_cli.py [--runs 15] [--out bench_cli.json] [--baseline DIR]

--baseline also times another checkout's CLI (e.g. `git archive main | tar -x -C /tmp/main`)
against the same database, run for run in turn with this one, so that a before/after on a
shared machine sees the same load. Modules are read from
bytecode caches, as in an installed gateway (pip compiles them): the caches go to a
temporary PYTHONPYCACHEPREFIX, written by one untimed warm-up run, so the tree is not
touched; --from-source times a tree without caches instead (PYTHONDONTWRITEBYTECODE).

Times depend on the machine and its load (printed with the table and kept in the JSON):
compare the commands with the bare interpreter in one run, not across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.records import AlertChange, Batch, ScoredReading  # noqa: E402
from gateway.store import Store  # noqa: E402

TARGET_S = 0.3  # the goal for alerts list, status, version and completion
TARGETED = ("version", "status", "alerts list", "tab completion")
TOP_IMPORTS = 4
# The floor a framework sets: a two-command app's `version`, with nothing of ours in it. Typer
# converts each parameter through pydantic; Click (which sqlite-utils brings) does not.
TYPER_ALONE = """
import sys, typer
app = typer.Typer(rich_markup_mode=None)
@app.command()
def version() -> None:
    print("0.1.0")
@app.command()
def other() -> None:
    pass
sys.argv = ["x", "version"]
app(prog_name="x")
"""
CLICK_ALONE = """
import click
@click.group()
def cli() -> None:
    pass
@cli.command()
def version() -> None:
    print("0.1.0")
@cli.command()
def other() -> None:
    pass
cli(["version"], prog_name="x")
"""
REFERENCES = ("python -c pass", "typer alone", "click alone")


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


def newest_alert_id(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT id FROM alerts ORDER BY raised_ts DESC LIMIT 1").fetchone()
    return str(row[0])


def commands(config: Path, alert_id: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    c = ["-c", str(config)]
    complete = {
        "_LIQUID_GATEWAY_COMPLETE": "complete_bash",
        "COMP_WORDS": "liquid-gateway al",
        "COMP_CWORD": "1",
    }
    return {
        "python -c pass": (["-c", "pass"], {}),
        "typer alone": (["-c", TYPER_ALONE], {}),
        "click alone": (["-c", CLICK_ALONE], {}),
        "version": (["-m", "gateway", "version"], {}),
        "status": (["-m", "gateway", "status", *c], {}),
        "alerts list": (["-m", "gateway", "alerts", "list", *c], {}),
        "alerts show": (["-m", "gateway", "alerts", "show", alert_id[:8], *c], {}),
        "events list": (["-m", "gateway", "events", "list", *c], {}),
        "streams": (["-m", "gateway", "streams", *c], {}),
        "tab completion": (["-m", "gateway"], complete),
        "--help": (["-m", "gateway", "--help"], {}),
    }


def run_env(root: Path, extra_env: dict[str, str], pycache: Path | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(root), **extra_env}
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def time_run(argv: list[str], env: dict[str, str], root: Path) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run. On a busy machine the wall time
    grows with the load and the CPU time hardly does: a one-thread command's CPU time is
    about what its wall time is on an idle machine. A run that fails is an error, not a fast
    answer (``status`` exits 3 here: no daemon runs, and saying so is its answer)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *argv], env=env, cwd=root, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-500:]!r}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def summary(runs: list[tuple[float, float]]) -> dict[str, Any]:
    wall = [w for w, _ in runs]
    cpu = [c for _, c in runs]
    q = statistics.quantiles(wall, n=10) if len(wall) > 1 else wall * 9
    return {
        "median_s": statistics.median(wall),
        "p90_s": q[-1],
        "cpu_median_s": statistics.median(cpu),
        "runs": wall,
        "cpu_runs": cpu,
    }


def top_imports(argv: list[str], env: dict[str, str], root: Path) -> list[tuple[str, float]]:
    """The top-level imports (those the command's own code asked for, with everything they
    pulled in) that took longest, in seconds, from one ``-X importtime`` run."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], env=env, cwd=root,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
    )  # fmt: skip
    found = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        _self, cumulative, name = line.removeprefix("import time:").split("|", 2)
        top_level = name.startswith(" ") and not name.startswith("  ")  # one space
        if top_level and cumulative.strip().isdigit():
            found.append((name.strip(), int(cumulative) / 1e6))
    found.sort(key=lambda item: -item[1])
    return found[:TOP_IMPORTS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--baseline", type=Path, help="another checkout to time in turn")
    parser.add_argument("--from-source", action="store_true", help="no bytecode caches")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    roots = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        config = Path(tmp) / "gw.yaml"
        config.write_text(
            f"gateway: {{id: bench-cli, data_dir: {data}}}\nsources:\n  - {{type: simulate}}\n"
        )
        fill(data / "gateway.db", args.alerts, args.readings, args.streams)
        results: dict[str, dict[str, dict[str, Any]]] = {label: {} for label in roots}
        for name, (argv, extra) in commands(config, newest_alert_id(data / "gateway.db")).items():
            envs = {}
            for label, root in roots.items():
                pycache = None if args.from_source else Path(tmp) / "pycache" / label
                envs[label] = run_env(root, extra, pycache)
                time_run(argv, envs[label], root)  # warm-up: bytecode caches, the page cache
            times: dict[str, list[tuple[float, float]]] = {label: [] for label in roots}
            for _ in range(args.runs):
                for label, root in roots.items():
                    times[label].append(time_run(argv, envs[label], root))
            for label, root in roots.items():
                tops = [] if name == "python -c pass" else top_imports(argv, envs[label], root)
                results[label][name] = summary(times[label]) | {"top_imports": tops}
    load_after = os.getloadavg()
    this = results["this"]
    base = this["python -c pass"]["median_s"]
    print(
        f"CLI latency, {args.runs} runs each; {args.alerts} alerts, {args.readings} readings; "
        f"bytecode {'from source' if args.from_source else 'cached'}; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} CPUs"
    )
    versus = f" {'baseline':>9} {'base cpu':>9}" if args.baseline else ""
    print(
        f"{'command':<16} {'median s':>9} {'p90 s':>7} {'cpu s':>7}{versus} {'over python':>12}  "
        f"{'target':<7} top imports (s)"
    )
    for name, r in this.items():
        median = r["median_s"]
        mark = ("ok" if median < TARGET_S else f"> {TARGET_S}") if name in TARGETED else ""
        was = results["baseline"][name] if args.baseline else {}
        before = f" {was['median_s']:>9.3f} {was['cpu_median_s']:>9.3f}" if was else ""
        tops = ", ".join(f"{m} {s:.3f}" for m, s in r["top_imports"])
        print(
            f"{name:<16} {median:>9.3f} {r['p90_s']:>7.3f} {r['cpu_median_s']:>7.3f}{before} "
            f"{median - base:>12.3f}  "
            f"{mark:<7} {tops}"
        )
    if args.out:
        report: dict[str, Any] = {
            "benchmark": "bench_cli",
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_avg_before": load_before,
                "load_avg_after": load_after,
            },
            "bytecode": "from source" if args.from_source else "cached",
            "target_s": TARGET_S,
            "params": vars(args) | {"out": str(args.out), "baseline": str(args.baseline)},
            "results": this,
        }
        if args.baseline:
            report["baseline"] = {"root": str(roots["baseline"]), "results": results["baseline"]}
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
