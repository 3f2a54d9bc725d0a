"""At-least-once delivery across broker outages, presence across restarts, graceful stop.

The broker is the real fixture Mosquitto, stopped and started under a steady stream of
committed alerts; the watcher keeps a persistent session so that nothing the broker accepted
is lost to the test while the broker is down.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.config import BrokerSection, UpstreamSection
from gateway.outputs.base import backoff
from gateway.outputs.mqtt import Forwarder
from gateway.records import Batch, ScoredReading
from gateway.store import Store
from tests.helpers import start_gateway, wait_for
from tests.upstream import GW, PREFIX, Subscriber, alert, reconfigure
from tools.soak_kill import Watcher, gateway_config

if TYPE_CHECKING:
    from tests.conftest import Broker

WINDOW = 8
ROOT = Path(__file__).resolve().parents[2]


def forwarder_for(broker: Broker, db: Path, protocol: str = "5") -> Forwarder:
    upstream = UpstreamSection(
        broker=BrokerSection(host=broker.host, port=broker.port, protocol=protocol, keepalive=5),
        topic_prefix=PREFIX,
        max_inflight=WINDOW,
        reconnect_min_delay=0.1,
        reconnect_max_delay=0.5,
    )
    return Forwarder(upstream, GW, db, poll_interval=0.1)


class SteadyStream(threading.Thread):
    """Commits a batch of readings with one alert every few milliseconds, like the pipeline."""

    def __init__(self, db: Path, forwarder: Forwarder) -> None:
        super().__init__(daemon=True)
        self.db, self.forwarder = db, forwarder
        self.halt = threading.Event()
        self.committed: list[str] = []

    def run(self) -> None:
        with Store.open(self.db, gateway_id=GW) as store:
            i = 0
            while not self.halt.is_set():
                change = alert(f"pump-{i % 3}")
                now = time.time()
                readings = [ScoredReading(f"pump-{i % 3}", now, 1.0, 1.0, 0.5, True)] * 5
                store.write_batch(Batch(readings=readings, alerts=[change]))
                self.committed.append(f"{change.alert_id}:raised")
                self.forwarder.notify()
                i += 1
                time.sleep(0.01)


def check_at_least_once(received: list[str], committed: list[str], outages: int) -> int:
    assert set(received) >= set(committed), "an alert committed locally never arrived"
    first_arrivals = list(dict.fromkeys(received))
    assert first_arrivals == committed, "alerts arrived out of outbox order"
    duplicates = len(received) - len(first_arrivals)
    assert duplicates <= outages * (WINDOW + 1), "more duplicates than the in-flight window"
    return duplicates


@pytest.mark.slow
def test_broker_outages_under_a_steady_stream_lose_nothing(broker: Broker, tmp_path: Path) -> None:
    # One message in flight towards the watcher, so the broker->watcher leg adds at most one
    # re-delivery per outage to the gateway's own (at most WINDOW).
    reconfigure(
        broker,
        f"persistence true\npersistence_location {broker.workdir}/\nmax_inflight_messages 1\n",
    )
    watcher = Subscriber(broker, persistent=True)
    db = tmp_path / "data" / "gateway.db"
    Store.open(db, gateway_id=GW).close()
    forwarder = forwarder_for(broker, db)
    forwarder.start()
    stream = SteadyStream(db, forwarder)
    stream.start()
    outages = 3
    try:
        for down_for in (1.5, 0.5, 2.0):
            wait_for(lambda: len(watcher.alerts()) > len(stream.committed) // 2, what="flow")
            broker.restart(down_for=down_for)
            wait_for(lambda: forwarder.stats()["connected"], what="reconnected")
        time.sleep(0.5)
        stream.halt.set()
        stream.join(10)
        with Store.open(db, gateway_id=GW) as store:
            wait_for(lambda: store.outbox_backlog()[0] == 0, timeout=30, what="backlog drained")
        committed = stream.committed
        wait_for(lambda: len(watcher.alerts()) >= len(committed), timeout=30, what="arrivals")
        received = [a["id"] for a in watcher.alerts()]
        duplicates = check_at_least_once(received, committed, outages)
        print(f"outage: {len(committed)} committed, {len(received)} received, {duplicates} dup")
        assert forwarder.stats()["connects"] >= outages + 1
    finally:
        stream.halt.set()
        forwarder.stop(5)
        watcher.close()


def test_mqtt_311_broker_outage_also_delivers(broker: Broker, tmp_path: Path) -> None:
    db = tmp_path / "data" / "gateway.db"
    store = Store.open(db, gateway_id=GW)
    watcher = Subscriber(broker)
    forwarder = forwarder_for(broker, db, protocol="3.1.1")
    forwarder.start()
    try:
        wait_for(lambda: forwarder.stats()["connected"], what="connected")
        broker.stop()
        changes = [alert("pump-1") for _ in range(5)]
        store.write_batch(Batch(alerts=changes))
        forwarder.notify()
        broker.start()
        watcher.close()
        watcher = Subscriber(broker)  # a fresh broker has no sessions: subscribe again
        wait_for(lambda: store.outbox_backlog()[0] == 0, timeout=20, what="delivered")
        # Delivered before the watcher resubscribed is fine; what counts is the PUBACK.
        assert forwarder.stats()["delivered"] >= 5
    finally:
        forwarder.stop(5)
        watcher.close()
        store.close()


def test_presence_is_online_after_every_reconnect_and_offline_at_stop(
    broker: Broker, tmp_path: Path
) -> None:
    db = tmp_path / "data" / "gateway.db"
    forwarder = forwarder_for(broker, db)
    forwarder.start()
    try:
        for _ in range(2):
            wait_for(lambda: forwarder.stats()["connected"], what="connected")
            late = Subscriber(broker)  # a restarted broker without persistence forgot it all
            wait_for(lambda late=late: late.on("status"), what="retained presence")
            assert [(m.payload, m.retain) for m in late.on("status")] == [(b"online", True)]
            late.close()
            broker.restart(down_for=0.3)
        wait_for(lambda: forwarder.stats()["connected"], what="connected again")
    finally:
        forwarder.stop(5)
    after = Subscriber(broker)
    wait_for(lambda: after.on("status"), what="retained offline")
    assert [(m.payload, m.retain) for m in after.on("status")] == [(b"offline", True)]
    after.close()


def test_refused_rows_are_parked_counted_and_retried(broker: Broker, tmp_path: Path) -> None:
    acl = broker.workdir / "acl"
    acl.write_text(f"topic read #\ntopic write {PREFIX}/{GW}/status\n")
    reconfigure(broker, f"acl_file {acl}\n")
    db = tmp_path / "data" / "gateway.db"
    store = Store.open(db, gateway_id=GW)
    store.write_batch(Batch(alerts=[alert("pump-1")]))
    upstream = UpstreamSection(
        broker=BrokerSection(host=broker.host, port=broker.port),
        topic_prefix=PREFIX,
        retry_min_delay=0.2,
        retry_max_delay=0.4,
    )
    forwarder = Forwarder(upstream, GW, db, poll_interval=0.1)
    forwarder.start()
    try:
        wait_for(lambda: forwarder.stats()["failures"] >= 3, what="retried refusals")
        wait_for(lambda: forwarder.stats()["parked"] == 1, what="parked in stats")
        attempts, error = store.db.execute("SELECT attempts, last_error FROM outbox").fetchone()
        assert attempts >= 3 and "Not authorized" in error
        assert store.outbox_backlog()[0] == 1  # refused is never delivered
        # The operator fixes the ACL: the parked row goes out at its next retry.
        acl.write_text("topic readwrite #\n")
        broker.proc.send_signal(signal.SIGHUP)  # Mosquitto reloads its ACL
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="delivered after the fix")
    finally:
        forwarder.stop(5)
        store.close()


def test_backoff_is_exponential_capped_and_jittered() -> None:
    import random

    rng = random.Random(3)
    delays = [backoff(n, 1.0, 60.0, rng) for n in range(1, 12)]
    assert all(1.0 <= d <= 60.0 for d in delays)
    assert delays[0] <= 1.0 and max(delays) > 25.0  # grows to the cap's range
    assert len({round(backoff(5, 1.0, 60.0, rng), 6) for _ in range(20)}) > 10  # jittered


# --- graceful stop of the real process ---------------------------------------------------


@pytest.mark.slow
def test_sigterm_with_a_frozen_broker_exits_0_and_marks_nothing_without_puback(
    broker: Broker, tmp_path: Path
) -> None:
    config = gateway_config(tmp_path, broker.host, broker.port)
    config.write_text(config.read_text().replace("drain_timeout: 5s", "drain_timeout: 2s"))
    db = tmp_path / "data" / "gateway.db"
    watcher = Watcher(broker.host, broker.port, "gw-soak")
    proc = start_gateway(config, tmp_path / "gateway.log")
    frozen = False
    try:
        watcher.wait_presence(b"online")
        wait_for(lambda: len(watcher.received()) >= 2, timeout=30, what="alerts flowing")
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGSTOP)  # accepts bytes, acknowledges nothing
        frozen = True
        time.sleep(0.5)  # alerts keep being committed and published, none acknowledged
        stopped_at = time.time()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        assert code == 0, (tmp_path / "gateway.log").read_text()[-2000:]
    finally:
        if frozen:
            broker.proc.send_signal(signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    watcher.wait_presence(b"offline", timeout=20)
    conn = sqlite3.connect(db)
    try:
        delivered = {r[0] for r in conn.execute(
            "SELECT msg_id FROM outbox WHERE kind = 'alert' AND delivered_ts IS NOT NULL"
        )}  # fmt: skip
        pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE delivered_ts IS NULL").fetchone()
        checkpoint = conn.execute("SELECT MIN(updated_ts) FROM stream_state").fetchone()[0]
    finally:
        conn.close()
    # Every row marked delivered was acknowledged, so the broker had it: the watcher got it.
    wait_for(lambda: delivered <= set(watcher.received()), timeout=20, what="delivered arrived")
    assert pending[0] > 0  # what the frozen broker never acknowledged stays for the next run
    assert checkpoint >= stopped_at - 0.5  # the detector state was saved at shutdown
    watcher.close()


@pytest.mark.slow
def test_sigterm_drains_and_goes_offline(broker: Broker, tmp_path: Path) -> None:
    config = gateway_config(tmp_path, broker.host, broker.port, gateway_id="gw-term")
    watcher = Watcher(broker.host, broker.port, "gw-term")
    proc = start_gateway(config, tmp_path / "gateway.log")
    try:
        watcher.wait_presence(b"online")
        wait_for(lambda: watcher.received(), timeout=30, what="an alert")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    watcher.wait_presence(b"offline", timeout=10)
    watcher.close()
    conn = sqlite3.connect(tmp_path / "data" / "gateway.db")
    status = json.loads(conn.execute("SELECT snapshot FROM status").fetchone()[0])
    conn.close()
    assert status["storage"]["degraded"] is False
