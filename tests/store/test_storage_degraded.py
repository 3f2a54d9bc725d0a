"""Disk full: the gateway keeps running degraded, says so, and recovers when space returns.

How "full" is made: not with a size-limited mount (that needs root and CAP_SYS_ADMIN, which
CI containers often lack, and the test must run everywhere), but with the real file-size
limit of the gateway process (RLIMIT_FSIZE): SQLite's writes to the real database and WAL
files fail with EFBIG exactly like writes to a full disk fail with ENOSPC (both are a failed
write(2) to SQLite: SQLITE_FULL / SQLITE_IOERR). "Space returns" is the test raising the
limit of the running process with prlimit(2). Readings are lost meanwhile (counted); the
alerts and events are carried in memory and written on recovery.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import Subscriber, wait_for
from tools.soak_kill import PREFIX, gateway_config

if TYPE_CHECKING:
    from tests.conftest import Broker

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 1_500_000  # bytes: any file the gateway writes may not grow past this


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.RLIM_INFINITY))


@pytest.mark.slow
def test_disk_full_degrades_then_recovers(broker: Broker, tmp_path: Path) -> None:
    watcher = Subscriber(broker, f"{PREFIX}/gw-full/events")

    config = gateway_config(tmp_path, broker.host, broker.port, gateway_id="gw-full")
    log_lines: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # a pipe: the log itself is not subject to the file limit
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=_limit_file_size,  # noqa: PLW1509 - only setrlimit, no locks involved
    )
    assert proc.stderr is not None
    reader = threading.Thread(
        target=lambda: log_lines.extend(line.decode(errors="replace") for line in proc.stderr),
        daemon=True,
    )
    reader.start()
    db = tmp_path / "data" / "gateway.db"
    try:
        wait_for(lambda: any("storage degraded" in line for line in log_lines), timeout=90,
                 what="the database to hit the limit")  # fmt: skip
        time.sleep(2.0)
        assert proc.poll() is None, "the gateway must keep running while storage is full"
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        watcher.wait(lambda m: b"storage_recovered" in m.payload, timeout=30,
                     what="the recovered event upstream")  # fmt: skip
        assert any(b"storage_degraded" in m.payload for m in watcher.messages)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        proc.stderr.close()
        watcher.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kinds = [r[0] for r in conn.execute("SELECT kind FROM events ORDER BY id")]
        snapshot = conn.execute("SELECT snapshot FROM status").fetchone()[0]
    finally:
        conn.close()
    assert "storage_degraded" in kinds and "storage_recovered" in kinds
    assert kinds.index("storage_degraded") < kinds.index("storage_recovered")
    storage = json.loads(snapshot)["storage"]
    assert storage["degraded"] is False and storage["readings_lost"] > 0
