"""Do `streams`, `status` and `alerts list` stay fast however many readings are stored?

Builds a gateway database per size in --sizes (readings spread evenly over --streams
streams, one per --interval seconds each, ending now) with the store's own schema: the
schema comes from ``Store.open``, the readings go in as one ``INSERT ... SELECT`` over a
recursive CTE (about 1-2 us a row; 10M readings take about half a minute), and --alerts
alerts plus a status snapshot go through ``write_batch`` as the daemon writes them. A
store that keeps a per-stream summary (``rebuild_stream_summary``) gets it rebuilt from
the bulk-inserted readings, timed: that is what the schema migration does once on upgrade.

Then each command is timed --runs times, two ways, after one warm-up run:

- ``query``: in this process, the store calls the command makes (read-only open, the
  queries, close), so the interpreter's start does not hide what the database costs;
- ``cli``: the command as an operator types it, a fresh ``python -m gateway`` process.

    PYTHONPATH=. python tools/bench_store_queries.py [--sizes 1000000,10000000]
        [--streams 1000] [--runs 7] [--out bench_store_queries.json] [--keep DIR]

Prints one table and writes JSON. Times depend on the machine and its load (reported):
compare sizes within one run, and a build before and after a change on the same box.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("BENCH_GATEWAY_ROOT", Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(ROOT))

from gateway.records import AlertChange, Batch, ScoredReading  # noqa: E402
from gateway.store import Store  # noqa: E402

TARGET_S = 0.3  # issue #16: each of the three under 0.3 s at 10M readings


def build(db: Path, readings: int, streams: int, alerts: int, interval: float) -> dict[str, float]:
    """A database with ``readings`` over ``streams`` streams and ``alerts`` alerts; returns
    how long each part of the build took."""
    now = time.time()
    took: dict[str, float] = {}
    with Store.open(db, gateway_id="bench-store") as store:
        pass  # the schema, every migration
    t0 = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        # A build, not the daemon's durability: no journal, no fsync; WAL again afterwards.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
            "INSERT INTO readings (ts, stream, value, expected, score, alert) "
            "SELECT ? + (i / ?) * ?, 'line.s' || (i % ?), 20.0 + (i % 97) * 0.1, "
            "20.0 + (i % 89) * 0.1, (i % 1000) / 1000.0, i % 5000 = 0 FROM n",
            (readings, now - (readings // streams) * interval, streams, interval, streams),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    took["readings_s"] = time.perf_counter() - t0
    with Store.open(db, gateway_id="bench-store") as store:
        rebuild = getattr(store, "rebuild_stream_summary", None)
        if rebuild is not None:
            t0 = time.perf_counter()
            rebuild()
            took["summary_rebuild_s"] = time.perf_counter() - t0
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
        store.write_batch(Batch(status={"gateway": "bench-store", "updated_at": now}))
        for row in store.list_alerts(state="all", limit=alerts // 2):
            store.ack_alert(row["id"])
    return took


def write_cost(db: Path, streams: int, batches: int, per_batch: int) -> dict[str, float]:
    """What the pipeline pays per reading in ``write_batch``: ``batches`` batches of
    ``per_batch`` readings over ``streams`` streams, into a fresh database (the summary, where
    kept, costs one upsert per stream in each batch: most with one reading per stream)."""
    now = time.time()
    times = []
    with Store.open(db, gateway_id="bench-store") as store:
        for b in range(batches):
            rows = [
                ScoredReading(
                    f"line.s{i % streams}", now + b + i / per_batch, 1.0, 1.0, 0.01, False
                )  # fmt: skip
                for i in range(per_batch)
            ]
            t0 = time.perf_counter()
            store.write_batch(Batch(readings=rows))
            times.append(time.perf_counter() - t0)
    return {
        "batches": batches,
        "readings_per_batch": per_batch,
        "median_us_per_reading": statistics.median(times) / per_batch * 1e6,
        "median_batch_s": statistics.median(times),
    }


def store_calls(db: Path) -> dict[str, Callable[[], Any]]:
    """What each command asks of the store (gateway/cli/app.py), in the same order."""

    def streams() -> Any:
        with Store.open(db, read_only=True) as store, store.snapshot():
            return store.streams(), store.status()

    def status() -> Any:
        with Store.open(db, read_only=True) as store, store.snapshot():
            count = getattr(store, "count_alerts", None)
            open_alerts = count("open") if count else len(store.list_alerts(state="open"))
            return (
                store.status(), store.outbox_backlog(), store.outbox_quarantined(),
                store.dead_letter_counts(), open_alerts,
            )  # fmt: skip

    def alerts_list() -> Any:
        with Store.open(db, read_only=True) as store:
            return store.list_alerts(state="open")

    return {"streams": streams, "status": status, "alerts list": alerts_list}


def cli_argv(config: Path) -> dict[str, list[str]]:
    c = ["-c", str(config)]
    return {
        "version": ["-m", "gateway", "version"],  # the floor: start and imports, no database
        "streams": ["-m", "gateway", "streams", *c],
        "status": ["-m", "gateway", "status", *c],
        "alerts list": ["-m", "gateway", "alerts", "list", *c],
    }


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    fn()  # warm-up: page cache and first-open costs are not what is measured
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run_cli(argv: list[str]) -> Callable[[], None]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def call() -> None:
        done = subprocess.run(
            [sys.executable, *argv], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, check=False,
        )  # fmt: skip
        if done.returncode not in (0, 3):  # status exits 3: no daemon runs, it says so
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-500:]!r}")

    return call


def summary(times: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "max_s": max(times), "runs": times}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000", help="comma-separated reading counts")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-cli", action="store_true", help="time only the store queries")
    parser.add_argument("--write-batches", type=int, default=200, help="0: no write timing")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", type=Path, help="build the databases here and keep them")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        base = args.keep or Path(tmp)
        for size in sizes:
            data = base / f"data-{size}"
            data.mkdir(parents=True, exist_ok=True)
            db = data / "gateway.db"
            for leftover in data.glob("gateway.db*"):
                leftover.unlink()
            config = base / f"gw-{size}.yaml"
            config.write_text(
                f"gateway: {{id: bench-store, data_dir: {data}}}\nsources:\n  - {{type: simulate}}\n"
            )
            print(f"building {size:,} readings over {args.streams} streams ...", flush=True)
            took = build(db, size, args.streams, args.alerts, args.interval)
            row: dict[str, Any] = {
                "readings": size, "db_bytes": db.stat().st_size, "build": took,
            }  # fmt: skip
            for name, fn in store_calls(db).items():
                row[f"query {name}"] = summary(timed(fn, args.runs))
            if not args.no_cli:
                for name, argv in cli_argv(config).items():
                    row[f"cli {name}"] = summary(timed(run_cli(argv), args.runs))
            results.append(row)
        write = None
        if args.write_batches:
            for leftover in base.glob("write.db*"):
                leftover.unlink()
            write = write_cost(base / "write.db", args.streams, args.write_batches, args.streams)
    kinds = [k for k in results[0] if k.startswith(("query ", "cli "))]
    print(f"\nmedian seconds of {args.runs} runs; {args.streams} streams, {args.alerts} alerts")
    print(f"{'command':<18}" + "".join(f"{r['readings']:>14,}" for r in results) + "  target")
    for kind in kinds:
        worst = results[-1][kind]["median_s"]
        print(
            f"{kind:<18}"
            + "".join(f"{r[kind]['median_s']:>14.3f}" for r in results)
            + f"  {'ok' if worst < TARGET_S else f'> {TARGET_S}'}"
        )
    for key in results[0]["build"]:
        print(f"{'build ' + key:<18}" + "".join(f"{r['build'][key]:>14.1f}" for r in results))
    if write:
        print(
            f"write_batch: {write['median_us_per_reading']:.2f} us per reading "
            f"({write['batches']} batches of {write['readings_per_batch']} readings, "
            f"one per stream; median batch {write['median_batch_s'] * 1000:.1f} ms)"
        )
    if args.out:
        report = {
            "benchmark": "bench_store_queries",
            "machine": {
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
                "cpus": os.cpu_count(),
                "load_avg": os.getloadavg(),
                "platform": platform.platform(),
            },  # fmt: skip
            "target_s": TARGET_S,
            "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "results": results,
            "write_batch": write,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
