"""Commits per second of the gateway's store at durability normal vs full, side by side.

Each round writes the same pipeline-like batches (20 readings, every 10th batch an alert
with its outbox row) through ``Store.write_batch`` into a fresh database in ``--dir`` (put it
on the file system the gateway will use: the numbers are about that disk's fsync), for
``--seconds`` per level, alternating levels so both see the same machine state. Prints a
table and writes JSON.

    python tools/bench_durability.py --dir /var/lib/liquid-gateway/bench --seconds 5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.records import AlertChange, Batch, ScoredReading  # noqa: E402
from gateway.store import Store  # noqa: E402


def batch(i: int) -> Batch:
    now = time.time()
    readings = [ScoredReading(f"s{j}", now, float(j), float(j), 0.1, False) for j in range(20)]
    alerts = []
    if i % 10 == 0:
        alerts.append(
            AlertChange(
                uuid.uuid4().hex, "s1", "raised", now, 0.999, 1.0, 0.0, (0.0, 0.5), None, "m"
            )
        )
    return Batch(readings=readings, alerts=alerts)


def measure(folder: Path, durability: str, seconds: float) -> dict[str, float]:
    db = folder / f"bench-{durability}-{uuid.uuid4().hex[:6]}.db"
    commits = 0
    with Store.open(db, durability, gateway_id="bench") as store:  # type: ignore[arg-type]
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            store.write_batch(batch(commits))
            commits += 1
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return {"commits": commits, "seconds": elapsed, "commits_per_s": commits / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench_durability.json"))
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="bench-durability-"))
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, float]]] = {"normal": [], "full": []}
    for _ in range(args.rounds):
        for level in ("normal", "full"):
            results[level].append(measure(folder, level, args.seconds))
    summary = {
        level: {
            "commits": sum(r["commits"] for r in runs),
            "commits_per_s": sum(r["commits"] for r in runs) / sum(r["seconds"] for r in runs),
        }
        for level, runs in results.items()
    }
    print(f"durability bench in {folder} (batches of 20 readings, 1 alert per 10 batches)")
    print(f"{'durability':<12}{'synchronous':<13}{'commits':>10}{'commits/s':>12}")
    for level, row in summary.items():
        sync = "FULL" if level == "full" else "NORMAL"
        print(f"{level:<12}{sync:<13}{row['commits']:>10}{row['commits_per_s']:>12.0f}")
    ratio = summary["normal"]["commits_per_s"] / max(1e-9, summary["full"]["commits_per_s"])
    print(f"normal is {ratio:.1f}x faster")
    args.out.write_text(
        json.dumps({"dir": str(folder), "summary": summary, "runs": results}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
