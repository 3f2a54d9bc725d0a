"""The attacker's battery: every hostile input of the "nothing lost, nothing blocked" review
(issue 13) sent to one real daemon over a real broker, in one session.

Each input has its own unit test elsewhere; here they arrive together, as a bad day would send
them, and the promise is checked end to end: each one is a counted dead letter with its reason
(or an event), no topic the gateway publishes is malformed, the daemon keeps running, and a real
fault on an ordinary stream, sent after all of them, still reaches the upstream subscriber.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.config.schema import NAME_PATTERN
from gateway.mqtt.topics import topic_problem
from tests.helpers import Subscriber, start_gateway
from tests.scenarios.test_end_to_end import (
    N_READINGS,
    assert_alert,
    detector_yaml,
    online,
    signal_values,
    stop_gateway,
    upstream_yaml,
    wait_until_stored,
    wait_until_subscribed,
)

runner = CliRunner()
MAX_STREAMS = 20
Y2000 = 946_684_800.0

# (reason, topic, payload); the topic's second level names the device
HOSTILE: list[tuple[str, str, bytes]] = [
    # A field name ending in a newline once made a stream whose alert topic Mosquitto refused,
    # and the forwarder re-sent that alert first forever.
    ("bad_stream_name", "plant/dev/telemetry", b'{"ok\\n": 10}'),
    ("payload_too_large", "plant/big/telemetry", b'{"temp": 1, "pad": "' + b"x" * 70_000 + b'"}'),
    ("json_too_deep", "plant/deep/telemetry", b'{"a": ' * 200 + b"1" + b"}" * 200),
    ("no_numeric_fields", "plant/wide/telemetry", '{"temp": "１２"}'.encode()),  # full-width digits
    ("bad_utf8", "plant/bytes/telemetry", b"\xff\xfe{\x00"),
    (
        "too_many_fields",
        "plant/many/telemetry",
        json.dumps({f"f{i}": i for i in range(1100)}).encode(),
    ),
    ("non_finite", "plant/nan/telemetry", b'{"temp": NaN}'),
]


def dead_letters(config: Path) -> dict[str, int]:
    out = runner.invoke(app, ["status", "-c", str(config), "--format", "json"])
    assert out.exit_code in (0, 3), out.output
    return json.loads(out.output)[0]["dead_letters_stored"]


@pytest.mark.slow
def test_every_hostile_input_is_counted_and_a_real_fault_still_gets_through(
    broker, tmp_path: Path
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"gateway: {{id: gw-atk, data_dir: {tmp_path / 'data'}}}\n"
        + detector_yaml()
        + f"limits: {{max_streams: {MAX_STREAMS}}}\n"
        + "sources:\n"
        f"  - type: mqtt\n    name: plant\n    broker: {{host: {broker.host}, port: {broker.port}}}\n"
        "    subscribe:\n"
        "      - {topic: 'plant/+/telemetry', format: json, stream: '{1}.{field}', "
        "timestamp_field: ts}\n" + upstream_yaml(broker)
    )
    watcher = Subscriber(broker, "test/site/gw-atk/#")
    proc = start_gateway(config, tmp_path / "gateway.log")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-attacker")
    try:
        watcher.wait(online)
        wait_until_subscribed(config, "plant")
        pub.connect(broker.host, broker.port)
        pub.loop_start()

        def send(topic: str, body: bytes | str) -> None:
            pub.publish(topic, body, qos=1).wait_for_publish(5)

        values = signal_values()
        t0 = time.time() - N_READINGS
        send("plant/pump-1/telemetry", json.dumps({"ts": t0, "temp": float(values[0])}))
        for _, topic, body in HOSTILE:
            send(topic, body)
        # Two origins of one stream name: the second is refused, naming both.
        send("plant/pump/telemetry", json.dumps({"1.temp": 1.0}))
        send("plant/pump.1/telemetry", json.dumps({"temp": 1.0}))
        # A device whose clock flips between 2000-01-01 and now.
        now = time.time()
        for i in range(20):
            send(
                "plant/clock/telemetry", json.dumps({"ts": Y2000 + i if i % 2 else now + i, "v": 1})
            )
        # One message naming more new streams than the limit leaves places for.
        send(
            "plant/flood/telemetry", json.dumps({f"f{i}": float(i) for i in range(3 * MAX_STREAMS)})
        )

        for i, value in enumerate(values[1:], start=1):
            send("plant/pump-1/telemetry", json.dumps({"ts": t0 + i, "temp": float(value)}))
        got = watcher.wait(lambda m: "/alerts/" in m.topic)
        assert got[-1].topic == "test/site/gw-atk/alerts/pump-1.temp"
        assert_alert(got[-1].payload, "pump-1.temp")
        # pump-1, the collision's first origin, the clock's readings of now, and the flood's
        # streams that found a place beside the three before them.
        wait_until_stored(config, N_READINGS + 1 + 10 + (MAX_STREAMS - 3))
        assert proc.poll() is None  # still running after all of it
        letters = dead_letters(config)
    finally:
        pub.loop_stop()
        stop_gateway(proc, tmp_path)
        watcher.close()

    for reason, _, _ in HOSTILE:
        assert letters.get(f"plant/{reason}", 0) >= 1, (reason, sorted(letters.items()))
    assert letters.get("plant/stream_collision") == 1
    assert letters.get("plant/max_streams", 0) >= 2 * MAX_STREAMS
    clock = letters.get("plant/timestamp_went_back", 0) + letters.get("plant/future_timestamp", 0)
    assert clock >= 9

    events = runner.invoke(app, ["events", "list", "-c", str(config), "--format", "json"])
    assert events.exit_code == 0, events.output
    kinds = [e["kind"] for e in json.loads(events.output)]
    assert kinds.count("stream_limit") == 1
    assert kinds.count("device_clock") == 1

    # Nothing the gateway published upstream is malformed, and every stream name it made
    # (the last level of an alert topic) is a valid name.
    published = [m.topic for m in watcher.messages]  # everything it published, to the end
    assert published and all(topic_problem(t) is None for t in published)
    for topic in published:
        if "/alerts/" in topic:
            assert re.fullmatch(NAME_PATTERN, topic.rsplit("/", 1)[1])
    status = runner.invoke(app, ["status", "-c", str(config), "--format", "json"])
    assert json.loads(status.output)[0]["outbox_backlog"] == 0
