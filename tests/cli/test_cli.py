"""The CLI as operators and scripts use it: help, documentation, exit codes, queries."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.records import AlertChange, Batch, Contribution, Event, ScoredReading
from gateway.store import Store

runner = CliRunner()
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def all_commands() -> list[list[str]]:
    found: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        # Typer bundles its own click: test for the shape, not the class.
        if isinstance(getattr(cmd, "commands", None), dict):
            for name, sub in cmd.commands.items():
                walk(sub, path + [name])
        else:
            found.append(path)

    walk(get_command(app), [])
    return found


@pytest.mark.parametrize("path", all_commands(), ids=" ".join)
def test_every_command_has_help_and_is_documented(path: list[str]) -> None:
    result = runner.invoke(app, path + ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    if path != ["version"]:
        # A row of README's CLI reference table: "`test" alone was found in "`tests/...".
        assert f"| `{' '.join(path)}" in README, f"README's CLI reference has no row for {path}"


def _command(path: list[str]) -> Any:
    cmd = get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("path", all_commands(), ids=" ".join)
def test_help_renders_every_text_as_written(path: list[str]) -> None:
    """Rich markup once ate "[default: ...]" and "(needs [plot])": every option's help, and
    the command's own, must appear in --help exactly as written (line breaks aside)."""
    result = runner.invoke(app, path + ["--help"], terminal_width=100)
    # Compared without whitespace: the help formatter wraps lines, also after a hyphen.
    shown = "".join(result.output.split())
    cmd = _command(path)
    texts = [p.help for p in cmd.params if getattr(p, "help", None)]
    texts.append((cmd.help or "").split("\n\n")[0])
    assert texts
    for text in texts:
        assert "".join(text.split()) in shown, (text, result.output)


def test_usage_error_exits_2() -> None:
    assert runner.invoke(app, ["alerts", "list", "--state", "bogus"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


@pytest.fixture
def gateway_db(tmp_path: Path) -> tuple[Path, str]:
    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{id: gw, data_dir: {tmp_path / 'data'}}}\n")
    store = Store.open(tmp_path / "data" / "gateway.db", outbox=False)
    alert_id = uuid.uuid4().hex
    now = time.time()
    contributors = (
        Contribution("pump.flow", 14.0, 10.0, (9.0, 11.0), 0.8, "l/min"),
        Contribution("pump.temp", 50.0, 49.0, (47.0, 51.0), 0.2, "degC", "prediction"),
    )
    raised = AlertChange(
        alert_id,
        "pump",
        "raised",
        now - 60,
        0.8,
        14.0,
        10.0,
        (9.0, 11.0),
        "l/min",
        "cfc-default@12345678",
        contributors,
    )
    store.write_batch(
        Batch(
            readings=[ScoredReading("pump.flow", now - 60, 14.0, 10.0, 0.8, True)],
            alerts=[raised],
            events=[Event("drift", "pump.temp", now - 30, {"scales": 3.2})],
            status={
                "gateway": "gw",
                "updated_at": now,
                "started_at": now - 100,
                "readings": 1,
                "streams": 1,
            },
        )
    )
    store.close()
    return config, alert_id


def test_alerts_list_show_ack(gateway_db: tuple[Path, str]) -> None:
    config, alert_id = gateway_db
    table = runner.invoke(app, ["alerts", "list", "-c", str(config)])
    assert table.exit_code == 0 and alert_id in table.output and "pump" in table.output
    # The score's meaning beside it: 0.8 is as rare as one healthy block in 10^4.
    header, row = table.output.splitlines()[:2]
    assert "SCORE  RARITY" in header and "0.8    1 in 10^4.0" in row, table.output
    as_json = json.loads(
        runner.invoke(app, ["alerts", "list", "-c", str(config), "-f", "json"]).output
    )
    # The two dimensions, named plainly: is the fault still there, has anyone seen it.
    assert as_json[0]["id"] == alert_id and as_json[0]["acknowledged"] is False
    assert as_json[0]["condition"] == "active" and "state" not in as_json[0]
    assert "CONDITION  ACKNOWLEDGED" in header and " active     no " in row, table.output
    as_csv = runner.invoke(app, ["alerts", "list", "-c", str(config), "--format", "csv"]).output
    assert as_csv.splitlines()[0].startswith("id,stream,raised")
    shown = runner.invoke(app, ["alerts", "show", alert_id[:8], "-c", str(config)])
    assert shown.exit_code == 0, shown.output
    assert re.search(
        r"observed 14 l/min, expected 10 l/min \(normal band 9 \.\. 11 l/min\)", shown.output
    )
    assert "pump.flow: 80% of the score" in shown.output
    assert "with score 0.8, as rare as 1 in 10^4.0 healthy blocks of readings" in shown.output
    # CSV: nested values are JSON a spreadsheet or a script can read back, not Python's repr.
    as_csv_row = runner.invoke(app, ["alerts", "show", alert_id, "-c", str(config), "-f", "csv"])
    [row] = list(csv.DictReader(io.StringIO(as_csv_row.output)))
    assert json.loads(row["contributors"])[1]["reason"] == "prediction"
    # A prefix too short to be trusted says so, and shows what a good one looks like.
    short = runner.invoke(app, ["alerts", "show", alert_id[:4], "-c", str(config)])
    assert short.exit_code == 1 and "at least 6 characters" in short.output, short.output
    assert alert_id[:8] in short.output
    assert "(far from its usual level)" in shown.output
    assert "(not what the model expected next)" in shown.output
    acked = runner.invoke(app, ["alerts", "ack", alert_id, "-c", str(config), "--note", "valve"])
    assert acked.exit_code == 0, acked.output
    again = runner.invoke(app, ["alerts", "ack", alert_id, "-c", str(config)])
    assert again.exit_code == 1 and "already acknowledged" in again.output, again.output
    still_open = runner.invoke(app, ["alerts", "list", "-c", str(config), "-f", "json"])
    assert json.loads(still_open.output) == []  # empty result: exit 0
    assert still_open.exit_code == 0
    acked_list = runner.invoke(app, ["alerts", "list", "-c", str(config), "--state", "acked"])
    assert alert_id in acked_list.output
    assert " active     yes " in acked_list.output, acked_list.output  # seen, still there
    acked_json = runner.invoke(app, ["alerts", "list", "-c", str(config), "--state", "acked",
                                     "-f", "json"])  # fmt: skip
    assert json.loads(acked_json.output)[0]["acknowledged"] is True
    assert runner.invoke(app, ["alerts", "show", "nope", "-c", str(config)]).exit_code == 1


def test_status_streams_events(gateway_db: tuple[Path, str]) -> None:
    config, _ = gateway_db
    status = runner.invoke(app, ["status", "-c", str(config)])
    assert status.exit_code == 0 and "gateway   gw" in status.output
    streams = runner.invoke(app, ["streams", "-c", str(config), "-f", "json"])
    assert json.loads(streams.output)[0]["stream"] == "pump.flow"
    events = runner.invoke(app, ["events", "list", "-c", str(config)])
    assert "drift" in events.output and "pump.temp" in events.output


def test_queries_without_a_database_fail_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{data_dir: {tmp_path / 'none'}}}\n")
    result = runner.invoke(app, ["alerts", "list", "-c", str(config)])
    assert result.exit_code == 1 and "no database" in result.output
    assert not (tmp_path / "none").exists()  # a query never creates anything


def test_model_info_names_the_runtime() -> None:
    result = runner.invoke(
        app, ["model", "info", "--path", str(Path("models/cfc-default.tflite").resolve())]
    )
    assert result.exit_code == 0, result.output
    assert "cfc-default@" in result.output and "runtime   litert" in result.output
    bad = runner.invoke(app, ["model", "info", "--path", "/nonexistent.tflite"])
    assert bad.exit_code == 1


def test_status_shows_health_and_degraded_flags(gateway_db: tuple[Path, str]) -> None:
    config, _ = gateway_db
    as_json = json.loads(runner.invoke(app, ["status", "-c", str(config), "-f", "json"]).output)[0]
    assert as_json["gateway"] == "gw" and as_json["open_alerts"] == 1
    assert as_json["outbox_backlog"] == 0 and "degraded" in as_json
    as_csv = runner.invoke(app, ["status", "-c", str(config), "-f", "csv"]).output
    assert as_csv.splitlines()[0] == "key,value" and "gateway,gw" in as_csv
    table = runner.invoke(app, ["status", "-c", str(config)]).output
    assert "health" in table and "upstream  none" in table


def test_status_exits_3_when_degraded_in_every_format(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{id: gw, data_dir: {tmp_path / 'data'}}}\n")
    store = Store.open(tmp_path / "data" / "gateway.db", outbox=False)
    now = time.time()
    snapshot = {"gateway": "gw", "updated_at": now, "started_at": now - 100}
    store.write_batch(Batch(status={**snapshot, "degraded": ["upstream disconnected"]}))
    for fmt in ("table", "json", "csv"):
        result = runner.invoke(app, ["status", "-c", str(config), "-f", fmt])
        assert result.exit_code == 3, (fmt, result.output)
        assert "upstream disconnected" in result.output
    # Healthy: 0. Silent for an hour without a clean stop: crashed or killed, 3 again.
    store.write_batch(Batch(status=snapshot))
    assert runner.invoke(app, ["status", "-c", str(config)]).exit_code == 0
    store.write_batch(Batch(status={**snapshot, "updated_at": now - 3600}))
    crashed = runner.invoke(app, ["status", "-c", str(config)])
    assert crashed.exit_code == 3 and "not running" in crashed.output, crashed.output
    store.close()


def test_db_check_prune_vacuum_and_alerts_export(
    gateway_db: tuple[Path, str], tmp_path: Path
) -> None:
    config, alert_id = gateway_db
    check = runner.invoke(app, ["db", "check", "-c", str(config), "-f", "json"])
    assert check.exit_code == 0, check.output
    report = json.loads(check.output)
    assert report["ok"] and report["rows"]["alerts"] == 1
    pruned = runner.invoke(app, ["db", "prune", "-c", str(config), "--older-than", "1s"])
    assert pruned.exit_code == 0 and "readings expired 1" in pruned.output
    vacuum = runner.invoke(app, ["db", "vacuum", "-c", str(config)])
    assert vacuum.exit_code == 0, vacuum.output
    # The fixture's status says the daemon runs (fresh, this pid): a full VACUUM is refused.
    assert runner.invoke(app, ["db", "vacuum", "-c", str(config), "--full"]).exit_code == 1
    out = tmp_path / "alerts.csv"
    export = runner.invoke(app, ["alerts", "export", "-c", str(config), "-o", str(out)])
    assert export.exit_code == 0, export.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("id,stream,") and "contributors" in lines[0]
    assert alert_id in lines[1] and "pump.temp" in lines[1]
    as_json = runner.invoke(app, ["alerts", "export", "-c", str(config), "-f", "json"])
    assert json.loads(as_json.output)[0]["contributors"][0]["stream"] == "pump.flow"


def test_db_check_reports_a_damaged_file(gateway_db: tuple[Path, str]) -> None:
    config, _ = gateway_db
    db = config.parent / "data" / "gateway.db"
    data = bytearray(db.read_bytes())
    for offset in range(4096 * 2, len(data), 4096):  # scribble over every page but the first
        data[offset + 8 : offset + 64] = b"\xff" * 56
    db.write_bytes(bytes(data))
    for side in ("gateway.db-wal", "gateway.db-shm"):
        (config.parent / "data" / side).unlink(missing_ok=True)
    result = runner.invoke(app, ["db", "check", "-c", str(config)])
    assert result.exit_code == 1, result.output


def test_plot_suggests_only_streams_it_would_draw(tmp_path: Path) -> None:
    """It once listed every known stream, then refused one that had no recent readings."""
    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{id: gw, data_dir: {tmp_path / 'data'}}}\n")
    now = time.time()
    with Store.open(tmp_path / "data" / "gateway.db", outbox=False) as store:
        store.write_batch(
            Batch(
                readings=[
                    ScoredReading("line.old", now - 86400, 1.0, 1.0, 0.1, False),
                    ScoredReading("line.new", now - 60, 1.0, 1.0, 0.1, False),
                ]
            )
        )
    out = str(tmp_path / "x.png")
    result = runner.invoke(app, ["plot", "line.nope", "-o", out, "-c", str(config)])
    assert result.exit_code == 1, result.output
    assert "(streams: line.new)" in result.output, result.output


def test_plot_writes_a_png_of_the_requested_size(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import math
    import struct

    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{id: gw, data_dir: {tmp_path / 'data'}}}\n")
    store = Store.open(tmp_path / "data" / "gateway.db", outbox=False)
    now = time.time()
    readings = [
        ScoredReading(
            "line.temp",
            now - 600 + i,
            20 + math.sin(i / 20) + (3 if 400 <= i < 420 else 0),
            20 + math.sin(i / 20),
            0.9999 if 400 <= i < 420 else 0.2,
            400 <= i < 425,
        )
        for i in range(600)
    ]
    store.write_batch(Batch(readings=readings))
    store.close()
    out = tmp_path / "plot.png"
    result = runner.invoke(
        app,
        [
            "plot",
            "line.temp",
            "-c",
            str(config),
            "--since",
            "1h",
            "-o",
            str(out),
            "--size",
            "900x500",
        ],
    )
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (900, 500)
    missing = runner.invoke(app, ["plot", "nope", "-c", str(config), "-o", str(out)])
    assert missing.exit_code == 1 and "line.temp" in missing.output


def test_logging_uses_journald_priorities_only_under_journald(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import logging
    import os
    import sys

    from gateway.cli.logs import setup_logging

    st = os.fstat(sys.stderr.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    setup_logging("info")
    logging.getLogger("gateway.test").warning("port %s lost", "/dev/ttyUSB0")
    logging.getLogger("gateway.test").debug("not shown at info")
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # someone else's stream: plain lines
    setup_logging("info")
    logging.getLogger("gateway.test").error("plain")
    err = capfd.readouterr().err.splitlines()
    assert err[0] == "<4>gateway.test: port /dev/ttyUSB0 lost"
    assert "not shown" not in "\n".join(err)
    assert err[1].endswith("ERROR gateway.test: plain") and not err[1].startswith("<")
    logging.getLogger().handlers.clear()


def test_a_full_vacuum_turns_incremental_auto_vacuum_on_for_an_older_database(
    tmp_path: Path,
) -> None:
    """Databases made before auto_vacuum was set at creation keep NONE until a full VACUUM
    (with the daemon stopped) converts them; then free pages can go back in steps."""
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "gateway.db") as db:
        db.execute("CREATE TABLE leftover (x)")  # not empty: auto_vacuum can no longer change
    Store.open(data / "gateway.db").close()
    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{id: gw, data_dir: {data}}}\n")
    result = runner.invoke(app, ["db", "vacuum", "-c", str(config), "--full"])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(data / "gateway.db") as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
