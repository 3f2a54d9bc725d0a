"""The CLI as operators and scripts use it: help, documentation, exit codes, queries."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import click
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from gateway.cli import app
from gateway.records import AlertChange, Batch, Contribution, Event, ScoredReading
from gateway.store import Store

runner = CliRunner()
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def all_commands() -> list[list[str]]:
    found: list[list[str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
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
        assert f"`{' '.join(path[-2:] if len(path) > 1 else path)}" in README, path


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
        Contribution("pump.temp", 50.0, 49.0, (47.0, 51.0), 0.2, "degC"),
    )
    raised = AlertChange(
        alert_id,
        "pump",
        "raised",
        now - 60,
        0.9995,
        14.0,
        10.0,
        (9.0, 11.0),
        "l/min",
        "cfc-default@12345678",
        contributors,
    )
    store.write_batch(
        Batch(
            readings=[ScoredReading("pump.flow", now - 60, 14.0, 10.0, 0.9995, True)],
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
    as_json = json.loads(
        runner.invoke(app, ["alerts", "list", "-c", str(config), "-f", "json"]).output
    )
    assert as_json[0]["id"] == alert_id and as_json[0]["state"] == "open"
    as_csv = runner.invoke(app, ["alerts", "list", "-c", str(config), "--format", "csv"]).output
    assert as_csv.splitlines()[0].startswith("id,stream,raised")
    shown = runner.invoke(app, ["alerts", "show", alert_id[:8], "-c", str(config)])
    assert shown.exit_code == 0, shown.output
    assert re.search(
        r"observed 14 l/min, expected 10 l/min \(normal band 9 \.\. 11 l/min\)", shown.output
    )
    assert "pump.flow: 80% of the score" in shown.output
    acked = runner.invoke(app, ["alerts", "ack", alert_id, "-c", str(config), "--note", "valve"])
    assert acked.exit_code == 0, acked.output
    assert runner.invoke(app, ["alerts", "ack", alert_id, "-c", str(config)]).exit_code == 1
    still_open = runner.invoke(app, ["alerts", "list", "-c", str(config), "-f", "json"])
    assert json.loads(still_open.output) == []  # empty result: exit 0
    assert still_open.exit_code == 0
    acked_list = runner.invoke(app, ["alerts", "list", "-c", str(config), "--state", "acked"])
    assert alert_id in acked_list.output
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
