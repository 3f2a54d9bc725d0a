"""The daemon as systemd runs it: a real process, a real notify socket, SIGHUP, metrics."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.ops.daemon import Gateway
from gateway.store import Store
from tests.conftest import free_port
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]


def _config(tmp: Path, *, metrics_port: int | None, broker_port: int, rate_b: float) -> str:
    metrics = f'"127.0.0.1:{metrics_port}"' if metrics_port else "null"
    return f"""
gateway: {{id: gw-ops, data_dir: {tmp / "data"}, log_level: debug}}
detector: {{warmup: 20}}
sources:
  - {{type: simulate, name: sim-a, streams: 2, rate_hz: 20, faults: false}}
  - {{type: simulate, name: sim-b, streams: 1, rate_hz: {rate_b}, faults: false}}
upstream:
  broker: {{host: 127.0.0.1, port: {broker_port}, username: gw, password_file: mqtt-upstream}}
  topic_prefix: plant
metrics: {{listen: {metrics}}}
"""


def _receive(sock: socket.socket, until: str, seen: list[list[str]], timeout: float = 30) -> None:
    """Collect notify datagrams until one has a line starting with ``until``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = sock.recv(4096).decode().splitlines()
        except TimeoutError:
            continue
        seen.append(lines)
        if any(line.startswith(until) for line in lines):
            return
    raise AssertionError(f"no {until} from the daemon; got {seen}")


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _views(db: Path) -> dict[str, dict]:
    store = Store.open(db, read_only=True)
    try:
        return (store.status() or {}).get("stream_views") or {}
    finally:
        store.close()


@pytest.mark.slow
def test_notify_reload_metrics_and_no_secret_in_logs(tmp_path: Path) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mqtt-upstream").write_text(secret + "\n")
    metrics_port, broker_port = free_port(), free_port()  # nothing listens on broker_port
    config = tmp_path / "gw.yaml"
    config.write_text(
        _config(tmp_path, metrics_port=metrics_port, broker_port=broker_port, rate_b=20)
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.5)
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "LISTEN_FDS")} | {
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "2000000",
        "CREDENTIALS_DIRECTORY": str(tmp_path / "secrets"),
    }
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    seen: list[list[str]] = []
    try:
        _receive(sock, "READY=1", seen)
        assert any(line.startswith("STATUS=running") for line in seen[-1])
        _receive(sock, "WATCHDOG=1", seen)

        # Metrics, scraped on loopback.
        samples = wait_for(
            lambda: (
                (s := _scrape(metrics_port)).get(
                    'liquid_gateway_source_readings_total{source="sim-a"}', 0
                )
                > 0
                and s
            ),
            every=0.1,
        )
        assert samples['liquid_gateway_mqtt_connected{link="upstream"}'] == 0.0
        assert "liquid_gateway_inference_seconds_count" in samples
        assert 'liquid_gateway_alerts_total{state="raised"}' in samples
        assert "liquid_gateway_outbox_backlog" in samples
        assert samples["liquid_gateway_database_bytes"] > 0
        assert samples["liquid_gateway_dropped_readings_total"] == 0.0
        assert samples["liquid_gateway_max_streams"] == 2000.0
        # The stall budget's counters (#16 item 3): the longest iteration and each phase.
        assert samples["liquid_gateway_pipeline_iteration_max_seconds"] > 0
        assert "liquid_gateway_pipeline_iterations_over_budget_total" in samples
        assert 'liquid_gateway_pipeline_phase_max_seconds{phase="score"}' in samples
        assert 'liquid_gateway_pipeline_phase_over_budget_total{phase="commit"}' in samples
        assert samples["liquid_gateway_streams_refused_readings_total"] == 0.0
        assert samples["process_resident_memory_bytes"] > 10e6  # the standard process family
        assert samples["process_cpu_seconds_total"] > 0.0
        assert samples["process_open_fds"] > 3
        assert 'python_gc_collections_total{generation="0"}' in samples
        streams = samples["liquid_gateway_streams"]
        assert streams == sum(1 for k in samples if k.startswith("liquid_gateway_alert_active{"))

        db = tmp_path / "data" / "gateway.db"
        before = wait_for(lambda: (v := _views(db)).get("sim-a-temp-0") and v, every=0.1)
        n_before = before["sim-a-temp-0"]["readings"]

        # A bad config is rejected, the old one kept.
        good = config.read_text()
        config.write_text(
            good.replace(
                "rate_hz: 20, faults: false}\n  - {type: simulate, name: sim-b",
                "rate_hz: -5, faults: false}\n  - {type: simulate, name: sim-b",
            )
        )
        proc.send_signal(signal.SIGHUP)
        _receive(sock, "RELOADING=1", seen)
        _receive(sock, "READY=1", seen)
        assert any("reload rejected" in line for line in seen[-1])
        assert proc.poll() is None

        # A good one restarts only what changed (sim-b), nothing else.
        config.write_text(
            _config(tmp_path, metrics_port=metrics_port, broker_port=broker_port, rate_b=10)
        )
        proc.send_signal(signal.SIGHUP)
        _receive(sock, "RELOADING=1", seen)
        _receive(sock, "READY=1", seen)
        assert proc.poll() is None
        # The detector kept its state: sim-a's stream goes on counting, not from zero.
        after = wait_for(
            lambda: (v := _views(db)).get("sim-a-temp-0", {}).get("readings", 0) > n_before and v,
            every=0.1,
        )
        assert after["sim-a-temp-0"]["readings"] > n_before

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        _receive(sock, "STOPPING=1", seen, timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    log_text = log_path.read_text()
    assert "reload rejected: " in log_text and "sources[0].rate_hz" in log_text
    assert "source sim-b stopped (removed or changed)" in log_text
    assert "source sim-b (simulate) started" in log_text
    assert "source sim-a stopped" not in log_text
    assert "upstream link stopped" not in log_text
    assert "config reloaded from" in log_text
    # Never a secret: not in the log (debug level), not in the database.
    assert secret not in log_text
    for f in (tmp_path / "data").iterdir():
        assert secret.encode() not in f.read_bytes(), f


def test_reload_keeps_queue_detector_and_unchanged_components(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mqtt-upstream").write_text("x")
    broker_port = free_port()
    text = _config(tmp_path, metrics_port=None, broker_port=broker_port, rate_b=20)
    config.write_text(
        text.replace("password_file: mqtt-upstream", "password_file: secrets/mqtt-upstream")
    )
    gateway = Gateway(load_config(config), config)
    gateway.start()
    try:
        queue, detector, pipeline = gateway.queue, gateway.detector, gateway.pipeline
        forwarder = gateway.forwarder
        sim_a, sim_b = gateway.sources["sim-a"], gateway.sources["sim-b"]
        config.write_text(
            config.read_text().replace(
                "rate_hz: 20, faults: false}\nupstream", "rate_hz: 5, faults: false}\nupstream"
            )
        )
        gateway.reload()
        assert gateway.queue is queue and gateway.detector is detector
        assert gateway.pipeline is pipeline and gateway.forwarder is forwarder
        assert gateway.sources["sim-a"] is sim_a and gateway.sources["sim-b"] is not sim_b
        assert gateway.config.sources[1].rate_hz == 5
        # The upstream changed: the forwarder (and only it) is replaced.
        config.write_text(config.read_text().replace("topic_prefix: plant", "topic_prefix: plant2"))
        gateway.reload()
        assert gateway.forwarder is not forwarder and gateway.sources["sim-a"] is sim_a
        # Invalid: nothing changes.
        sources = dict(gateway.sources)
        config.write_text("sources: [{type: nope}]\n")
        gateway.reload()
        assert gateway.sources == sources and gateway.config.upstream.topic_prefix == "plant2"
        assert gateway._last_reload and not gateway._last_reload["ok"]
        status = json.loads(json.dumps(pipeline.status()))
        assert "last config reload rejected" in status["degraded"]
        # Rows the broker refused are parked and retried: the operator must see that too.
        flags = gateway._degraded({}, {"connected": True, "parked": 2})
        assert "2 outbox rows refused by the broker (retried)" in flags
        # A database over its cap that retention cannot bring back (no readings left).
        pipeline._note_over_cap(3_000_000)
        flags = gateway._degraded({}, None)
        assert any(f.startswith("database 3.0 MB over max_db_size") for f in flags)
        assert gateway.metrics_readout().over_cap_bytes == 3_000_000
        pipeline._note_over_cap(0)
        assert not [f for f in gateway._degraded({}, None) if "max_db_size" in f]
    finally:
        gateway.shutdown()
        gateway.metrics.stop()


def test_the_daemon_warns_at_start_of_a_metrics_endpoint_others_can_reach(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """192.0.2.1 (TEST-NET-1) is on no interface here: the endpoint cannot bind (logged, not
    fatal), so nothing is opened to the network by this test, and the warning comes first."""
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"gateway: {{id: gw-exposed, data_dir: {tmp_path / 'data'}}}\n"
        "sources: [{type: simulate, name: sim, streams: 1, rate_hz: 5, faults: false}]\n"
        "metrics: {listen: '192.0.2.1:9464'}\n"
    )
    caplog.set_level(logging.WARNING, logger="gateway")
    gateway = Gateway(load_config(config), config)
    gateway.start()
    try:
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    finally:
        gateway.shutdown()
        gateway.metrics.stop()
    assert any(
        m.startswith("metrics.listen 192.0.2.1:9464: ") and "on 192.0.2.1" in m for m in warnings
    ), warnings
