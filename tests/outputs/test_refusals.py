"""Refused publishes are never counted as delivered (#13 item 3), against a real Mosquitto
whose ACL denies the gateway publishing on one alert topic."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import BrokerSection, UpstreamSection
from gateway.outputs.mqtt import Forwarder, PahoClient
from gateway.records import Batch
from gateway.store import Store
from tests.helpers import wait_for
from tests.upstream import GW, PREFIX, Subscriber, alert, reconfigure

if TYPE_CHECKING:
    from tests.conftest import Broker


def deny_locked(broker: Broker) -> None:
    """Anonymous clients may read everything and write everything but ``alerts/locked``."""
    acl = broker.workdir / "acl"
    acl.write_text(
        f"topic read #\ntopic write {PREFIX}/{GW}/status\n"
        f"topic write {PREFIX}/{GW}/events\ntopic write {PREFIX}/{GW}/alerts/ok\n"
    )
    reconfigure(broker, f"acl_file {acl}\n")


def test_paho_still_ignores_a_refused_pubrec(broker: Broker) -> None:
    """paho 2.x reports a QoS 2 publish refused in PUBREC as a success (it completes the flow
    and the broker answers the PUBREL with PUBCOMP "Success"). If this fails, paho reports the
    refusal itself and ``PahoClient``'s hook is no longer needed."""
    deny_locked(broker)
    seen: list[tuple[int, Any]] = []
    refused: list[tuple[int, Any]] = []
    done = threading.Event()
    for cls in (mqtt.Client, PahoClient):
        client = cls(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.on_publish = lambda c, u, mid, rc, p: (seen.append((mid, rc)), done.set())
        if isinstance(client, PahoClient):
            client.on_pubrec_refused = lambda mid, rc: refused.append((mid, rc))
        client.connect(broker.host, broker.port)
        client.loop_start()
        done.clear()
        info = client.publish(f"{PREFIX}/{GW}/alerts/locked", b"{}", qos=2)
        assert done.wait(10)
        client.disconnect()
        client.loop_stop()
        assert seen[-1][0] == info.mid and not seen[-1][1].is_failure  # paho: "success"
    assert [(mid, str(rc)) for mid, rc in refused] == [(seen[-1][0], "Not authorized")]


def make_forwarder(
    broker: Broker, db_path: Path, qos: int, protocol: str = "5", confirm: str = "none"
) -> Forwarder:
    upstream = UpstreamSection(
        broker=BrokerSection(
            host=broker.host,
            port=broker.port,
            keepalive=5,
            protocol=protocol,  # type: ignore[arg-type]
        ),
        topic_prefix=PREFIX,
        qos=qos,  # type: ignore[arg-type]
        confirm=confirm,  # type: ignore[arg-type]
        confirm_timeout=1.0,
        max_inflight=4,
        retry_min_delay=0.2,
        retry_max_delay=0.5,
    )
    return Forwarder(upstream, GW, db_path, poll_interval=0.1, reconnect_max_delay=1)


@pytest.mark.parametrize("qos", [1, 2])
def test_refused_rows_are_parked_and_retried_and_rows_behind_them_delivered(
    broker: Broker, tmp_path: Path, qos: int
) -> None:
    """With QoS 2 the broker's refusal is only in PUBREC: 83 of 84 refused rows were marked
    delivered. Here none is, each is retried with back-off, and the permitted rows behind
    them go through."""
    deny_locked(broker)
    db_path = tmp_path / "gateway.db"
    store = Store.open(db_path, gateway_id=GW)
    watcher = Subscriber(broker)
    locked = [alert("locked") for _ in range(3)]
    ok = [alert("ok") for _ in range(3)]
    store.write_batch(Batch(alerts=[locked[0], ok[0], locked[1], ok[1], locked[2], ok[2]]))
    forwarder = make_forwarder(broker, db_path, qos)
    forwarder.start()
    try:
        wait_for(lambda: len(watcher.alerts()) == 3, what="the permitted alerts")
        assert [a["id"] for a in watcher.alerts()] == [f"{c.alert_id}:raised" for c in ok]

        def retried() -> bool:
            rows = store.db.execute(
                "SELECT attempts FROM outbox WHERE subject = 'locked' AND delivered_ts IS NULL"
            ).fetchall()
            return len(rows) == 3 and all(r[0] >= 2 for r in rows)

        wait_for(retried, what="every refused row retried, none delivered")
        assert {row.subject for row in store.pending(10)} == {"locked"}
        errors = store.db.execute(
            "SELECT last_error FROM outbox WHERE subject = 'locked'"
        ).fetchall()
        assert all("refused by the broker: Not authorized" in e[0] for e in errors)
        assert store.outbox_quarantined() == 0  # a refusal may be lifted: kept, retried
        stats = forwarder.stats()
        assert stats["delivered"] == 3 and stats["failures"] >= 6
    finally:
        forwarder.stop(5)
        watcher.close()
        store.close()


def test_config_validate_says_plainly_that_311_hides_refusals(tmp_path: Path) -> None:
    """Under MQTT 3.1.1 a broker acknowledges a publish it refuses like any other (96 refused
    alerts marked delivered in 12 s): the operator is told when checking the config."""
    from typer.testing import CliRunner

    from gateway.cli.app import app

    printed = {}
    for protocol, confirm in (("5", "none"), ("3.1.1", "echo"), ("3.1.1", "none")):
        config = tmp_path / f"gw-{protocol}-{confirm}.yaml"
        config.write_text(
            f"gateway: {{id: {GW}, data_dir: {tmp_path / 'data'}}}\n"
            f'upstream: {{broker: {{host: 127.0.0.1, protocol: "{protocol}"}}, '
            f"confirm: {confirm}}}\n"
        )
        result = CliRunner().invoke(app, ["config", "validate", str(config)])
        assert result.exit_code == 0, result.output
        printed[protocol if confirm == "none" else "echo"] = result.output
    assert "warning" not in printed["5"] and "warning" not in printed["echo"]
    (warning,) = [line for line in printed["3.1.1"].splitlines() if line.startswith("warning:")]
    assert "cannot signal a refused publish" in warning and "marked delivered" in warning


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@pytest.mark.slow
def test_echo_confirms_what_the_broker_passed_on_and_parks_what_it_did_not(
    broker: Broker, tmp_path: Path, protocol: str
) -> None:
    """confirm: echo marks a row delivered only when it comes back on the gateway's own
    subscription: under 3.1.1 an ACL denial (acknowledged like a success) is then seen."""
    deny_locked(broker)
    db_path = tmp_path / "gateway.db"
    store = Store.open(db_path, gateway_id=GW)
    watcher = Subscriber(broker)
    locked = [alert("locked") for _ in range(3)]
    ok = [alert("ok") for _ in range(5)]
    store.write_batch(Batch(alerts=locked[:2] + ok[:3] + locked[2:] + ok[3:]))
    forwarder = make_forwarder(broker, db_path, 1, protocol, confirm="echo")
    forwarder.start()
    try:
        wait_for(lambda: len(watcher.alerts()) == 5, what="the permitted alerts")
        wait_for(lambda: {r.subject for r in store.pending(20)} == {"locked"}, what="confirmed")
        assert [a["id"] for a in watcher.alerts()] == [f"{c.alert_id}:raised" for c in ok]

        def retried() -> bool:
            rows = store.db.execute(
                "SELECT attempts, last_error FROM outbox WHERE subject = 'locked' "
                "AND delivered_ts IS NULL"
            ).fetchall()
            return len(rows) == 3 and all(r[0] >= 2 and reason in r[1] for r in rows)

        # MQTT 5 says why in PUBACK; under 3.1.1 the row is simply never seen back.
        reason = "Not authorized" if protocol == "5" else "not seen back within 1 s"
        wait_for(retried, what="every denied row parked and retried, none delivered")
        assert forwarder.stats()["delivered"] == 5
    finally:
        forwarder.stop(5)
        watcher.close()
        store.close()


def test_echo_with_everything_allowed_delivers_all_as_before(
    broker: Broker, tmp_path: Path
) -> None:
    db_path = tmp_path / "gateway.db"
    store = Store.open(db_path, gateway_id=GW)
    watcher = Subscriber(broker)
    changes = [alert(f"pump-{i % 3}") for i in range(12)]
    store.write_batch(Batch(alerts=changes))
    forwarder = make_forwarder(broker, db_path, 2, "3.1.1", confirm="echo")
    forwarder.start()
    try:
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="every row delivered")
        wait_for(lambda: len(watcher.alerts()) == 12, what="arrivals")
        assert [a["id"] for a in watcher.alerts()] == [f"{c.alert_id}:raised" for c in changes]
        stats = forwarder.stats()
        assert stats["delivered"] == 12 and stats["failures"] == 0
        assert stats["echo_unmatched"] == 0 and stats["awaiting_echo"] == 0
    finally:
        forwarder.stop(5)
        watcher.close()
        store.close()


@pytest.mark.slow
def test_echo_without_read_access_delivers_nothing_and_says_why(
    broker: Broker, tmp_path: Path
) -> None:
    """Mosquitto grants the subscription and applies the read ACL per message, so the echo
    never comes: the row stays undelivered, parked with a reason that names the cause."""
    acl = broker.workdir / "acl"
    acl.write_text(f"topic write {PREFIX}/#\ntopic read {PREFIX}/{GW}/status\n")
    reconfigure(broker, f"acl_file {acl}\n")
    db_path = tmp_path / "gateway.db"
    store = Store.open(db_path, gateway_id=GW)
    store.write_batch(Batch(alerts=[alert("ok")]))
    forwarder = make_forwarder(broker, db_path, 1, "5", confirm="echo")
    forwarder.start()
    try:
        wait_for(lambda: forwarder.stats()["failures"] >= 2, what="the row retried")
        (attempts, error, delivered) = store.db.execute(
            "SELECT attempts, last_error, delivered_ts FROM outbox"
        ).fetchone()
        assert delivered is None and attempts >= 2 and "not seen back" in error
        assert forwarder.stats()["delivered"] == 0
    finally:
        forwarder.stop(5)
        store.close()
