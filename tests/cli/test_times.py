"""One rule for times (gateway/times.py): UTC marked Z by default, --local with its offset,
the same in tables, JSON, CSV and the daemon's log.

The zone comes from TZ in a subprocess's environment, so the test does not depend on the
machine's own zone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gateway.records import AlertChange, Batch, iso_utc
from gateway.store import Store
from gateway.times import iso, shown

RAISED = 1796188870.0  # 2026-12-02 05:21:10 UTC, 10:51:10 in Kolkata (+05:30, no DST)
ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}"


def _cli(*args: str, tz: str = "Asia/Kolkata") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["TZ"] = tz
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def one_alert(tmp_path: Path) -> tuple[Path, str]:
    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{id: gw, data_dir: {tmp_path / 'data'}}}\n")
    alert_id = uuid.uuid4().hex
    change = AlertChange(
        alert_id, "pump", "raised", RAISED, 0.9, 14.0, 10.0, (9.0, 11.0), "l/min", "m@1"
    )
    with Store.open(tmp_path / "data" / "gateway.db", outbox=False) as store:
        store.write_batch(Batch(alerts=[change]))
    return config, alert_id


def test_the_rule() -> None:
    assert shown(RAISED) == "2026-12-02 05:21:10Z" and shown(None) == "-"
    assert iso(RAISED + 0.25) == "2026-12-02T05:21:10.250Z" == iso_utc(RAISED + 0.25)


@pytest.mark.slow
def test_the_same_alert_in_utc_and_local_time(one_alert: tuple[Path, str]) -> None:
    config, alert_id = one_alert
    utc = _cli("alerts", "show", alert_id, "-c", str(config), "--utc")
    local = _cli("alerts", "show", alert_id, "-c", str(config), "--local")
    default = _cli("alerts", "show", alert_id, "-c", str(config))
    assert utc.returncode == local.returncode == 0, utc.stderr + local.stderr
    assert "raised   2026-12-02 05:21:10Z with score" in utc.stdout, utc.stdout
    assert "raised   2026-12-02 10:51:10+05:30 with score" in local.stdout, local.stdout
    assert default.stdout == utc.stdout  # UTC unless asked
    table = _cli("alerts", "list", "-c", str(config), "--local").stdout
    assert "2026-12-02 10:51:10+05:30" in table.splitlines()[1], table
    for fmt in ("json", "csv"):
        out = _cli("alerts", "list", "-c", str(config), "--local", "-f", fmt).stdout
        assert "2026-12-02T10:51:10.000+05:30" in out, out
    [row] = json.loads(_cli("alerts", "list", "-c", str(config), "-f", "json").stdout)
    assert row["raised"] == "2026-12-02T05:21:10.000Z" and row["raised_ts"] == RAISED
    assert row["cleared"] is None


@pytest.mark.slow
def test_daemon_log_lines_carry_an_offset(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"gateway: {{id: gw, data_dir: {tmp_path / 'data'}}}\n"
        "sources: [{type: simulate, streams: 1, rate_hz: 5}]\n"
    )
    local = _cli("run", "-c", str(config), "--duration", "1s", "--local")
    assert local.returncode == 0, local.stderr
    lines = [line for line in local.stderr.splitlines() if " INFO " in line]
    assert lines, local.stderr
    for line in lines:
        assert re.match(ISO_TIME + r"\+05:30 INFO gateway\.", line), line
    utc = _cli("run", "-c", str(config), "--duration", "1s", tz="America/St_Johns")
    assert utc.returncode == 0, utc.stderr
    first = utc.stderr.splitlines()[0]
    assert re.match(ISO_TIME + r"Z (INFO|WARNING) ", first), first
