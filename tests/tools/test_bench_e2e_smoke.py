"""The end-to-end benchmark is a tool, not a test: only its behaviour is checked here."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from tools.bench_e2e import (
    format_table,
    merge_results,
    percentile,
    publishers_for,
    split_plan,
    window_rate,
)
from tools.e2e_load import LoadPlan, LoadResult

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_e2e.py"


def test_help_runs_without_starting_anything() -> None:
    done = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "--quick" in done.stdout and "--out" in done.stdout


def test_table_aligns_numbers_right_and_text_left() -> None:
    rows = [
        {"streams": 1, "rate": 1234.56, "p99 ms": 3.21, "ok": True, "note": "a"},
        {"streams": 10000, "rate": None, "p99 ms": 45.0, "ok": False, "note": "longer"},
    ]
    lines = format_table(rows, ["streams", "rate", "p99 ms", "ok", "note"]).splitlines()
    assert lines[0].split() == ["streams", "rate", "p99", "ms", "ok", "note"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2] == "      1  1235     3.2  yes  a"
    assert lines[3] == "  10000     -    45.0  no   longer"


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_window_rate_uses_only_samples_inside_the_load() -> None:
    samples = [(t / 10, 100.0 * t / 10) for t in range(0, 51)]  # 100/s for 5 s
    samples += [(5.0 + t / 10, 500.0) for t in range(1, 11)]  # then idle
    assert window_rate(samples, 0.0, 5.0) == 100.0
    assert window_rate(samples, 0.0, 1.2) is None  # less than a second of samples


def test_a_high_rate_is_split_over_publishers_that_cover_every_stream_once() -> None:
    assert publishers_for(100) == 1 and publishers_for(100_000) == 1
    assert publishers_for(120_000) == 2
    plan = LoadPlan(port=1, streams=10, rate=24_000, duration=1.0, probes=2, seed=5)
    plans = split_plan(plan, 3)
    mine = [list(range(p.first_stream, p.streams, p.stride)) for p in plans]
    assert sorted(i for m in mine for i in m) == list(range(10))
    assert len({p.seed for p in plans}) == 3
    assert [p.stride for p in split_plan(replace(plan, streams=1), 3)] == [1]


def test_results_of_side_by_side_publishers_add_up() -> None:
    a = LoadResult(sent=10, started=100.0, elapsed=5.0, faulty=[("s0", 1.0, 101.0)])
    b = LoadResult(sent=7, started=100.5, elapsed=5.0, episodes=[("s1", 102.0)])
    merged = merge_results([a, b])
    assert (merged.sent, merged.started, merged.elapsed) == (17, 100.0, 5.5)
    assert merged.faulty == a.faulty and merged.episodes == b.episodes
