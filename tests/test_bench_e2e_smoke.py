"""The end-to-end benchmark is a tool, not a test: only its behaviour is checked here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.bench_e2e import format_table, percentile, window_rate

TOOL = Path(__file__).resolve().parent.parent / "tools" / "bench_e2e.py"


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
