"""`status` on a daemon that cannot write its database (#13 item 6): a stale snapshot whose
process is still the daemon that wrote it is "running, cannot write", not "crashed"."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.ops.liveness import process_started, still_running
from gateway.records import Batch
from gateway.store import Store

runner = CliRunner()


def test_a_stale_snapshot_of_a_live_daemon_is_running_degraded(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{id: gw, data_dir: {tmp_path / 'data'}}}\n")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        begun = process_started(proc.pid)
        assert begun is not None and abs(begun - time.time()) < 10
        now = time.time()
        snapshot = {"gateway": "gw", "pid": proc.pid, "started_at": begun + 1.5}
        stale = {**snapshot, "updated_at": now - 600}  # it stopped writing ten minutes ago
        assert still_running({**snapshot, "updated_at": now}, now) == "running"
        assert still_running(stale, now) == "stale"
        # The same pid, but a process that started long before that daemon: pid reuse.
        assert still_running({**stale, "started_at": begun + 3600}, now) == "stopped"
        store = Store.open(tmp_path / "data" / "gateway.db", outbox=False)
        store.write_batch(Batch(status=stale))
        store.close()
        result = runner.invoke(app, ["status", "-c", str(config)])
        assert result.exit_code == 3, result.output
        assert "NOT RUNNING" not in result.output
        assert "running, but its status is" in result.output
        assert "cannot write its database" in result.output
    finally:
        proc.kill()
        proc.wait()
    assert still_running(stale, time.time()) == "stopped"
    gone = runner.invoke(app, ["status", "-c", str(config)])
    assert gone.exit_code == 3 and "NOT RUNNING" in gone.output, gone.output
    assert "crashed or killed" in gone.output


def test_process_start_is_unknown_for_a_missing_process(tmp_path: Path) -> None:
    assert process_started(2**22 + 12345) is None  # above pid_max: never a process
    assert process_started(1, proc=tmp_path) is None  # no /proc here: cannot tell
