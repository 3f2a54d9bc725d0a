"""tools/bench_store_queries.py builds what it says (the readings, a summary that is their
grouping, the alerts) and times each query it names."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_build_fills_readings_alerts_and_a_matching_summary(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from gateway.store import Store
    from tools.bench_store_queries import build

    db = tmp_path / "gateway.db"
    took = build(db, readings=3003, streams=7, alerts=10, interval=2.0)
    assert set(took) == {"readings_s", "summary_rebuild_s"}
    with Store.open(db, read_only=True) as store:
        rows = {r["stream"]: r for r in store.streams()}
        assert store.count_alerts("all") == 10 and store.count_alerts("open") == 5
    conn = sqlite3.connect(db)
    grouped = conn.execute(
        "SELECT stream, COUNT(*), MIN(ts), MAX(ts) FROM readings GROUP BY stream"
    ).fetchall()
    conn.close()
    assert len(grouped) == 7 and sum(n for _, n, _, _ in grouped) == 3003
    for stream, n, first, last in grouped:
        assert (rows[stream]["readings"], rows[stream]["first_ts"]) == (n, first)
        assert rows[stream]["last_ts"] == last


def test_the_script_times_every_query_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "q.json"
    args = ["--sizes", "500,1000", "--streams", "5", "--alerts", "4", "--runs", "2",
            "--write-batches", "3", "--no-cli", "--out", str(out)]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_store_queries.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert [r["readings"] for r in report["results"]] == [500, 1000]
    for result in report["results"]:
        for name in ("streams", "status", "alerts list"):
            assert len(result[f"query {name}"]["runs"]) == 2
    assert report["write_batch"]["batches"] == 3
    assert "query streams" in done.stdout  # the table
