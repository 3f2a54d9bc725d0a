"""tools/bench_memory.py warms what it says, fed or restored, and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_script_warms_fed_and_restored_streams_and_writes_its_report(
    tmp_path: Path,
) -> None:
    out = tmp_path / "m.json"
    args = ["--streams", "30,250", "--readings", "120", "--after", "5", "--feed-max", "100",
            "--tracemalloc", "--compare", "--breakdown", "--out", str(out)]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_memory.py"), *args],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| 250 | restored from 100 fed |" in done.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["streams"], r["warmed"]) for r in rows] == [
        (30, "fed"), (250, "restored from 100 fed"), (30, "fed"), (30, "restored from 3 fed")
    ]  # fmt: skip
    for r in rows:
        assert r["streams_live"] == r["streams"]  # every name is a live stream
        assert r["checkpoint_bytes_per_stream"] > 4 * 120  # its history, at least
    assert rows[1]["readings_per_stream"] == 125
    # The smallest count runs once more under tracemalloc, in a row of its own; a stream
    # holds its 128-value history and its judges at least.
    assert [r["heap_bytes_per_stream"] is None for r in rows] == [True, True, False, True]
    assert rows[2]["heap_bytes_per_stream"] > 1000
    # The smallest count says where its bytes are: 120 readings are one coded chunk of 64
    # (12 bits each) and 56 in the open chunk, float32.
    parts = rows[0]["breakdown_bytes_per_stream"]
    assert parts["channel.history.codes"] == sys.getsizeof(bytearray(64 * 12 // 8))
    assert parts["channel.history.open"] == sys.getsizeof(array("f", [0.0]) * 64)
    assert "where a warm stream's bytes are" in done.stdout
    assert all("breakdown_bytes_per_stream" not in r for r in rows[1:])
