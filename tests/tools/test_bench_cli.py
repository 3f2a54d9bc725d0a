"""tools/bench_cli.py runs every command it times against a filled database, and each run
answers (a command that fails fast must not pass for a fast one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_cli_times_every_command_against_a_filled_database(tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    args = ["--runs", "2", "--alerts", "30", "--readings", "500", "--streams", "5", "--out"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_cli.py"), *args, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert set(report["results"]) == {
        "python -c pass", "typer alone", "click alone", "version", "status", "alerts list", "alerts show", "events list",
        "streams", "tab completion", "--help",
    }  # fmt: skip
    for name, result in report["results"].items():
        assert len(result["runs"]) == 2 and all(t > 0 for t in result["runs"])
        assert len(result["cpu_runs"]) == 2 and result["cpu_median_s"] > 0  # the child's own
        if name != "python -c pass":  # what each command imported, biggest first
            assert result["top_imports"], name
            seconds = [s for _, s in result["top_imports"]]
            assert seconds == sorted(seconds, reverse=True)
    assert "alerts list" in done.stdout and "load average" in done.stdout  # the table
    assert report["machine"]["load_avg_before"] and report["bytecode"] == "cached"


def test_top_imports_reads_importtime_top_level_lines(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tools.bench_cli import run_env, top_imports

    env = run_env(ROOT, {}, tmp_path / "pycache")
    found = dict(top_imports(["-c", "import json, sqlite3"], env, ROOT))
    assert {"json", "sqlite3"} <= set(found) and all(s > 0 for s in found.values())
    assert "json.decoder" not in found  # nested: counted in json's time


def test_fill_writes_the_alerts_the_cli_then_lists(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from gateway.store import Store
    from tools.bench_cli import fill

    db = tmp_path / "gateway.db"
    fill(db, alerts=7, readings=50, streams=3)
    with Store.open(db, read_only=True) as store:
        assert len(store.list_alerts()) == 7
