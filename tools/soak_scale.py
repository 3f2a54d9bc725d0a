"""Soak at scale: does the pipeline ever stall over 100 ms with 10,000 streams? (#16 item 3)

Runs the gateway's own pipeline (ingest queue -> detector -> store, the daemon's code) in this
process against a fresh database, with a feeder thread offering ``--rate`` readings/s spread
over ``--streams`` streams (every stream one reading per ``streams / rate`` s), a size cap
of ``--max-db-size`` and a checkpoint every ``--checkpoint-every`` s, for ``--duration`` s.
There is no broker: the feeder puts readings straight into the ingest queue, so this measures
the pipeline thread (scoring, writes, commits, retention at the cap, checkpoints, the
garbage collector), not MQTT parsing.

At the end the pipeline is stopped (its final checkpoint) and a fresh detector restores the
checkpointed streams from the database, as a restart would. Prints a table and writes JSON:
readings offered / scored / dropped, the longest iteration and the longest of each phase,
iterations over 100 ms, the file's largest size against the cap, the WAL's largest size,
RSS at start and end, and how many streams the restart restored.

    python tools/soak_scale.py --duration 600 --out soak_scale.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config import parse_config  # noqa: E402
from gateway.detector import Detector  # noqa: E402
from gateway.model.runtime import load_model  # noqa: E402
from gateway.pipeline.ingest import IngestQueue  # noqa: E402
from gateway.pipeline.runner import Pipeline  # noqa: E402
from gateway.records import Reading  # noqa: E402
from gateway.store import Store  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class Feeder(threading.Thread):
    """Offers ``rate`` readings/s over ``streams`` streams in 10 ms slices."""

    def __init__(self, queue: IngestQueue, streams: int, rate: float) -> None:
        super().__init__(name="feeder", daemon=True)
        self.queue = queue
        self.names = [f"site/s{i:05d}" for i in range(streams)]
        self.phase = [random.uniform(0, 2 * math.pi) for _ in range(streams)]
        self.rate = rate
        self.offered = 0
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        started = time.monotonic()
        k = 0
        n = len(self.names)
        while not self.stop.is_set():
            due = int((time.monotonic() - started) * self.rate) - self.offered
            if due > 0:
                now = time.time()
                batch = []
                for _ in range(due):
                    i = k % n
                    k += 1
                    value = 20.0 + 3.0 * math.sin(now / 60.0 + self.phase[i])
                    batch.append(Reading(self.names[i], now, value + rng.gauss(0, 0.1), "soak"))
                self.queue.put_many(batch)
                self.offered += due
            self.stop.wait(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=10_000.0, help="readings/s offered")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds")
    parser.add_argument("--max-db-size", default="64MB")
    parser.add_argument("--checkpoint-every", default="60s")
    parser.add_argument("--dir", type=Path, default=None, help="data dir (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("soak_scale.json"))
    args = parser.parse_args()
    data_dir = args.dir or Path(tempfile.mkdtemp(prefix="soak-scale-"))
    cfg = parse_config(
        f"gateway: {{id: soak, data_dir: {data_dir}}}\n"
        f"storage: {{max_db_size: {args.max_db_size}, checkpoint_every: {args.checkpoint_every}}}\n"
        f"limits: {{max_streams: {args.streams}}}\n"
        "ingest: {stale_factor: null}\n"
    )
    model = load_model(cfg.model.path, cfg.model.runtime)
    rss_start = rss_mb()
    queue = IngestQueue.from_section(cfg.ingest)
    pipeline = Pipeline(cfg, queue, Detector(cfg.detector, model, cfg.assets))
    pipeline.start()
    feeder = Feeder(queue, args.streams, args.rate)
    db = cfg.database_path
    wal = db.with_name(db.name + "-wal")
    file_max = wal_max = 0
    started = time.monotonic()
    feeder.start()
    print(f"soak: {args.streams} streams, {args.rate:.0f}/s, {args.duration:.0f} s, in {data_dir}")
    try:
        while (elapsed := time.monotonic() - started) < args.duration:
            time.sleep(0.5)
            file_max = max(file_max, size(db))
            wal_max = max(wal_max, size(wal))
            if int(elapsed) % 30 == 0 and elapsed % 1 < 0.5:
                p = pipeline.times.status()
                print(
                    f"  {elapsed:5.0f} s  scored {pipeline.readings:>9}  dropped "
                    f"{queue.dropped_readings:>7}  file {size(db) / 1e6:6.1f} MB  wal "
                    f"{size(wal) / 1e6:5.1f} MB  max iteration {p['iteration_max_ms']} ms "
                    f"({p['iterations_over']} over)  rss {rss_mb():.0f} MB",
                    flush=True,
                )
    finally:
        feeder.stop.set()
        feeder.join()
    rss_end = rss_mb()
    times = pipeline.times.status()
    pipeline.stop(timeout=300)
    file_max = max(file_max, size(db))
    cap = cfg.storage.max_db_size
    # A restart: a fresh detector restores every checkpointed stream from the database.
    with Store.open(db) as store:
        states = store.load_states(model.sha256)
    rows = [len(v) for k, v in states.items() if not k.startswith("asset/")]
    row_bytes = sum(rows) / max(1, len(rows))
    restored = Detector(cfg.detector, model, cfg.assets).restore(states)
    result: dict[str, Any] = {
        "streams": args.streams,
        "rate_offered_per_s": args.rate,
        "duration_s": round(elapsed, 1),
        "offered": feeder.offered,
        "scored": pipeline.readings,
        "dropped": queue.dropped_readings,
        "max_stall_ms": times["iteration_max_ms"],
        "iterations": times["iterations"],
        "iterations_over_100ms": times["iterations_over"],
        "phase_max_ms": times["phase_max_ms"],
        "phase_over_100ms": times["phase_over"],
        "file_max_mb": round(file_max / 1e6, 1),
        "cap_mb": round(cap / 1e6, 1),
        "file_max_vs_cap": round(file_max / cap, 3),
        "wal_max_mb": round(wal_max / 1e6, 1),
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "checkpoint_rows": len(states),
        "checkpoint_row_bytes_per_stream": round(row_bytes),
        "restart_restored_streams": restored,
        "pruned": dict(pipeline.pruned),
        "load_average": os.getloadavg(),
    }
    rows = [
        (
            "offered / scored / dropped",
            f"{feeder.offered} / {pipeline.readings} / {queue.dropped_readings}",
        ),
        ("max stall (longest iteration)", f"{times['iteration_max_ms']} ms"),
        ("iterations over 100 ms", f"{times['iterations_over']} of {times['iterations']}"),
        *(
            (f"  phase {k} max", f"{v} ms ({times['phase_over'][k]} over)")
            for k, v in times["phase_max_ms"].items()
        ),
        ("file max vs cap", f"{file_max / 1e6:.1f} MB / {cap / 1e6:.1f} MB ({file_max / cap:.0%})"),
        ("WAL max", f"{wal_max / 1e6:.1f} MB"),
        ("RSS start / end", f"{rss_start:.0f} / {rss_end:.0f} MB"),
        ("restart restores", f"{restored} streams ({len(states)} rows)"),
        ("checkpoint row per stream", f"{row_bytes:.0f} bytes"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
