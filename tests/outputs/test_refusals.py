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
from gateway.outputs.forwarder import Forwarder, PahoClient
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


def make_forwarder(broker: Broker, db_path: Path, qos: int) -> Forwarder:
    upstream = UpstreamSection(
        broker=BrokerSection(host=broker.host, port=broker.port, keepalive=5),
        topic_prefix=PREFIX,
        qos=qos,  # type: ignore[arg-type]
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
    for protocol in ("5", "3.1.1"):
        config = tmp_path / f"gw-{protocol}.yaml"
        config.write_text(
            f"gateway: {{id: {GW}, data_dir: {tmp_path / 'data'}}}\n"
            f'upstream: {{broker: {{host: 127.0.0.1, protocol: "{protocol}"}}}}\n'
        )
        result = CliRunner().invoke(app, ["config", "validate", str(config)])
        assert result.exit_code == 0, result.output
        printed[protocol] = result.output
    assert "warning" not in printed["5"]
    (warning,) = [line for line in printed["3.1.1"].splitlines() if line.startswith("warning:")]
    assert "cannot signal a refused publish" in warning and "marked delivered" in warning
