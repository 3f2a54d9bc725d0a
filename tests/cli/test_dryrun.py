"""`liquid-gateway test`: the dry run reads real sources and writes nothing.

Real parts throughout: the simulator, a Mosquitto broker (the ``broker`` fixture) with a
watcher on the upstream prefix, a pseudo-terminal for serial. Counts of readings depend on
how long the run lasted, so the tests assert what arrived, never how many.
"""

from __future__ import annotations

import json
import os
import threading
import tty
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway.cli.app import app
from tests.conftest import Broker, free_port
from tests.helpers import Subscriber

runner = CliRunner()


def _config(tmp_path: Path, sources: str, extra: str = "") -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(
        f"gateway: {{id: gw, data_dir: {tmp_path / 'data'}}}\n{extra}sources:\n{sources}"
    )
    return path


def _run(config: Path, *args: str) -> Any:
    return runner.invoke(app, ["test", "-c", str(config), *args])


@pytest.mark.slow
def test_simulate_streams_and_samples_and_no_data_dir(tmp_path: Path) -> None:
    config = _config(tmp_path, "  - {type: simulate, name: sim, streams: 2, rate_hz: 20}\n")
    result = _run(config, "--seconds", "1", "--samples", "3", "-f", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["problems"] == []
    [sim] = report["sources"]
    assert sim["connected"] and sim["error"] is None
    assert [s["stream"] for s in sim["streams"]] == ["sim-temp-0", "sim-pressure-1"]
    assert {s["unit"] for s in sim["streams"]} == {"degC", "bar"}
    assert len(sim["sample"]) == 3 and sim["sample"][0]["time"].endswith("Z")
    assert 20 < sim["sample"][0]["value"] < 23  # the simulated temperature, near 21.5 degC
    assert not (tmp_path / "data").exists()
    text = _run(config, "--seconds", "1")
    assert text.exit_code == 0, text.output
    assert "streams it would create:" in text.stdout and "sim-pressure-1" in text.stdout
    assert text.stdout.rstrip().splitlines()[-1].startswith("ok: 1 source read for 1 s: 2 streams")
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_mqtt_valid_and_bad_payloads_and_nothing_published_upstream(
    tmp_path: Path, broker: Broker
) -> None:
    watcher = Subscriber(broker, "factory/#")
    try:
        # Retained, so the dry run's subscription gets them whenever it subscribes.
        watcher.publish(
            "plant/pump1/telemetry", '{"temperature": 21.5, "pressure": 4.2}', retain=True
        )
        watcher.publish("plant/pump2/telemetry", '{"temperature": 22.0}', retain=True)
        watcher.publish("plant/bad/telemetry", "{not json", retain=True)
        broker_yaml = f"{{host: 127.0.0.1, port: {broker.port}}}"
        config = _config(
            tmp_path,
            f"  - {{type: mqtt, name: plant, broker: {broker_yaml}, subscribe: "
            '[{topic: "plant/+/telemetry", stream: "{1}.{field}"}]}\n',
            extra=f"upstream: {{broker: {broker_yaml}, topic_prefix: factory}}\n",
        )
        result = _run(config, "--seconds", "2", "-f", "json")
        assert result.exit_code == 0, result.output
        [plant] = json.loads(result.stdout)["sources"]
        assert plant["connected"]
        streams = {s["stream"]: s for s in plant["streams"]}
        assert set(streams) == {"pump1.temperature", "pump1.pressure", "pump2.temperature"}
        assert streams["pump1.pressure"]["last"]["value"] == 4.2
        assert plant["dead_letters"] == {"bad_json": 1}
        assert "bad/telemetry" in plant["dead_letter_examples"]["bad_json"]
        text = _run(config, "--seconds", "2")
        assert "dead letters bad_json: 1" in text.stdout, text.output
        assert "pump2.temperature = 22" in text.stdout
        # Nothing went upstream: a marker sent after both runs is the only message seen.
        watcher.publish("factory/marker", "end")
        watcher.wait(lambda m: m.topic == "factory/marker", 5.0)
        assert [m.topic for m in watcher.messages] == ["factory/marker"]
        assert not (tmp_path / "data").exists()
    finally:
        watcher.close()


@pytest.mark.slow
def test_serial_over_a_pty_with_a_bad_line(tmp_path: Path) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo before the reader opens it (pyserial sets raw mode too)
    done = threading.Event()

    def device() -> None:
        # Every tenth of a second: the end of the last line, two lines, the start of the
        # next; so the run nearly always ends with a line half read.
        while not done.wait(0.1):
            os.write(master, b"\r\n21.5,4.20\r\noops,4.25\r\n22.5,4.3")

    writer = threading.Thread(target=device, daemon=True)
    writer.start()
    try:
        config = _config(
            tmp_path,
            f"  - {{type: serial, name: line-a, port: {os.ttyname(slave)}, baudrate: 115200, "
            "fields: [temperature, pressure], stream_prefix: line-a., "
            "units: {temperature: {unit: degC}}}\n",
        )
        result = _run(config, "--seconds", "1.5", "-f", "json")
    finally:
        done.set()
        writer.join(5.0)
        os.close(master)
        os.close(slave)
    assert result.exit_code == 0, result.output
    [line] = json.loads(result.stdout)["sources"]
    streams = {s["stream"]: s for s in line["streams"]}
    assert set(streams) == {"line-a.temperature", "line-a.pressure"}
    assert streams["line-a.temperature"]["unit"] == "degC"
    assert streams["line-a.temperature"]["first"]["value"] == 21.5
    # "oops" is a dead letter; its line's good field (4.25) is still a reading. The line cut
    # off when the dry run closed the port is not the device's fault: not a dead letter.
    assert set(line["dead_letters"]) == {"not_a_number"}
    assert line["dead_letters"]["not_a_number"] >= 1
    pressures = {s["value"] for s in line["sample"] if s["stream"] == "line-a.pressure"}
    assert 4.2 in pressures and pressures <= {4.2, 4.25, 4.3}
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_a_source_that_cannot_connect_or_open_fails_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB9"
    closed = free_port()  # nothing listens there
    config = _config(
        tmp_path,
        f"  - {{type: serial, name: line-a, port: {missing}, fields: [t]}}\n"
        f"  - {{type: mqtt, name: plant, broker: {{host: 127.0.0.1, port: {closed}}}, "
        'subscribe: [{topic: "plant/#"}]}\n'
        "  - {type: simulate, name: sim, streams: 1, rate_hz: 5}\n",
    )
    result = _run(config, "--seconds", "2")
    assert result.exit_code == 1, result.output
    assert f"error: source line-a (serial): cannot open {missing}: " in result.stderr
    assert "No such file or directory" in result.stderr
    assert f"error: source plant (mqtt): cannot connect to broker 127.0.0.1:{closed}" in (
        result.stderr
    )
    assert "source sim (simulate" in result.stdout and "FAILED: 3 sources" in result.stdout
    assert not (tmp_path / "data").exists()


def test_seconds_are_bounded_and_a_config_needs_a_source(tmp_path: Path) -> None:
    assert runner.invoke(app, ["test", "--demo", "--seconds", "600"]).exit_code == 2
    assert runner.invoke(app, ["test", "--demo", "--seconds", "0"]).exit_code == 2
    empty = _config(tmp_path, "  []\n")  # sources: []
    result = _run(empty, "--seconds", "1")
    assert result.exit_code == 1 and "error: the config has no sources" in result.stderr
