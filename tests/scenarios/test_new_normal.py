"""`alerts ack --new-normal`: an operator says a sustained new level is not a fault; the
running daemon then adapts to it instead of holding the alert open forever."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.config import DetectorSection, parse_config
from gateway.detector import Detector
from gateway.model.runtime import load_model
from gateway.pipeline.ingest import IngestQueue
from gateway.pipeline.runner import Pipeline
from gateway.records import Reading
from tests.helpers import wait_for

runner = CliRunner()
CFG = DetectorSection(warmup=100, baseline_halflife=300, cooldown=60, accept_after=None)


def shifted(n: int, at: int, seed: int = 2) -> np.ndarray:
    values = 5.0 + np.random.default_rng(seed).normal(0.0, 0.1, n)
    values[at:] += 1.0
    return values


def test_detector_adapts_only_to_the_acknowledged_open_alert() -> None:
    detector = Detector(CFG, load_model(None, "auto"))
    values = shifted(3000, 600)
    raised = None
    for i, v in enumerate(values[:800]):
        for change in detector.process([Reading("flow", float(i), float(v), "t")]).alerts:
            raised = change
    assert raised is not None and raised.state == "raised"
    assert not detector.accept_new_normal("flow", "some-other-alert")
    assert detector.accept_new_normal("flow", raised.alert_id)
    cleared = [
        change
        for i, v in enumerate(values[800:], start=800)
        for change in detector.process([Reading("flow", float(i), float(v), "t")]).alerts
    ]
    assert [c.state for c in cleared] == ["cleared"]
    assert detector.channel_view("flow")["baseline"] > 5.8  # type: ignore[index]


def test_ack_new_normal_through_the_cli_reaches_the_running_pipeline(tmp_path: Path) -> None:
    config_file = tmp_path / "gw.yaml"
    config_file.write_text(
        f"gateway: {{id: gw, data_dir: {tmp_path / 'data'}}}\n"
        "detector: {warmup: 100, baseline_halflife: 5m, accept_after: null}\n"
    )
    config = parse_config(config_file.read_text())
    queue = IngestQueue()
    model = load_model(None, "auto")
    pipeline = Pipeline(config, queue, Detector(config.detector, model))
    pipeline.start()
    db = tmp_path / "data" / "gateway.db"
    values = shifted(3000, 600)

    def query(sql: str) -> list[tuple]:
        with sqlite3.connect(db) as conn:
            return conn.execute(sql).fetchall()

    try:
        for i, v in enumerate(values[:800]):
            queue.put(Reading("flow", 1e6 + i, float(v), "test"))
        alert_id = wait_for(lambda: query("SELECT id FROM alerts"))[0][0]
        wait_for(lambda: pipeline.readings == 800)
        acked = runner.invoke(app, ["alerts", "ack", alert_id[:8], "--new-normal", "-c",
                                    str(config_file)])  # fmt: skip
        assert acked.exit_code == 0 and "as a new normal" in acked.output, acked.output
        wait_for(lambda: query("SELECT 1 FROM alerts WHERE new_normal_applied_ts IS NOT NULL"))
        for i, v in enumerate(values[800:], start=800):
            queue.put(Reading("flow", 1e6 + i, float(v), "test"))
        wait_for(lambda: pipeline.readings == len(values))
    finally:
        pipeline.stop()
    (cleared_ts,) = query("SELECT cleared_ts FROM alerts")[0]
    assert cleared_ts is not None  # the detector took the new level as normal
    events = query("SELECT detail FROM events WHERE kind = 'new_normal'")
    assert len(events) == 1 and json.loads(events[0][0])["applied"] is True
