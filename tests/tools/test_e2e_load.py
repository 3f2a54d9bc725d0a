"""The benchmark's raw-socket publisher against a real Mosquitto: what it sends is what an
MQTT client receives (topics, payloads, counts), and its pre-encoded packets are the bytes
the plain encoder builds."""

from __future__ import annotations

import json
import queue
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import Broker
from tests.helpers import wait_for
from tools.e2e_load import (
    LoadPlan,
    PacketBuilder,
    connect_packet,
    noise_values,
    payload_of,
    publish,
    publish_packet,
    remaining_length,
    topic_of,
)


class Collector:
    """A paho subscriber on ``load/#`` that keeps every (topic, payload)."""

    def __init__(self, broker: Broker) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        client.on_connect = lambda c, u, f, rc, p: c.subscribe("load/#", qos=0)
        client.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
        client.on_message = self._on_message
        client.connect(broker.host, broker.port)
        client.loop_start()
        self.client = client
        assert subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector(broker: Broker):  # noqa: ANN201
    c = Collector(broker)
    yield c
    c.close()


def run(plan: LoadPlan):  # noqa: ANN201 - a LoadResult
    results: queue.Queue = queue.Queue()
    publish(plan, results)
    return results.get(timeout=5)


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2_097_151, "ffff7f"),
        (268_435_455, "ffffff7f"),
    ],
)
def test_remaining_length_is_mqtts_variable_byte_integer(n: int, encoded: str) -> None:
    assert remaining_length(n).hex() == encoded


def test_remaining_length_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        remaining_length(268_435_456)
    with pytest.raises(ValueError):
        remaining_length(-1)


def test_connect_packet_is_mqtt_311_clean_session() -> None:
    packet = connect_packet("pub-1", keepalive=0)
    assert packet[0] == 0x10 and packet[1] == len(packet) - 2
    assert packet[2:12] == b"\x00\x04MQTT\x04\x02\x00\x00"
    assert packet[12:] == b"\x00\x05pub-1"


def test_pre_encoded_packets_are_the_plain_encoders_bytes() -> None:
    values = noise_values(3, 50)
    topics = {i: topic_of(i) for i in (0, 7, 12_345)}
    builder = PacketBuilder(topics, values)
    ts = 1_796_000_000.5
    for i, topic in topics.items():
        for k, value in enumerate(values):
            built = builder.heads[i] + builder.stamp(ts) + builder.tails[k]
            assert built == publish_packet(topic, payload_of(ts, value))


def test_values_of_different_widths_cannot_be_pre_encoded() -> None:
    with pytest.raises(ValueError, match="widths"):
        PacketBuilder({0: "load/s00000"}, [9.5, 10.5])


def test_every_message_published_arrives_with_its_topic_and_payload(
    broker: Broker, collector: Collector
) -> None:
    plan = LoadPlan(port=broker.port, streams=5, rate=2000, duration=1.0, seed=11)
    result = run(plan)
    assert result.sent >= 1500  # paced at 2,000/s for a second (never a timing assertion)
    wait_for(lambda: collector.count() >= result.sent, 10, "every message delivered")
    assert collector.count() == result.sent  # and not one more
    topics = [t for t, _ in collector.messages]
    assert set(topics) == {topic_of(i) for i in range(5)}
    per_topic = [topics.count(topic_of(i)) for i in range(5)]
    assert max(per_topic) - min(per_topic) <= 1  # round robin over the streams
    allowed = set(noise_values(11))
    for _, payload in collector.messages:
        doc = json.loads(payload)
        assert set(doc) == {"ts", "v"}
        assert result.started - 1 <= doc["ts"] <= result.started + result.elapsed + 1
        assert doc["v"] in allowed
    assert result.cpu_s > 0


def test_probe_faults_are_published_and_reported(broker: Broker, collector: Collector) -> None:
    plan = LoadPlan(
        port=broker.port,
        streams=20,
        rate=1000,
        duration=1.5,
        probes=2,
        probe_hz=40.0,
        fault_from=0.3,
        fault_every=0.5,
        fault_len=0.2,
        seed=5,
    )
    result = run(plan)
    wait_for(lambda: collector.count() >= result.sent, 10, "every message delivered")
    assert result.faulty and result.episodes
    assert {s for s, _ in result.episodes} <= {"s00000", "s00001"}
    received = {(t.rsplit("/", 1)[1], json.loads(p)["v"]) for t, p in collector.messages}
    for stream, value, _ in result.faulty:
        assert (stream, value) in received
        assert value > 50.0 + 3 * 0.5  # shifted by 10 sd
    # Each faulty value is unique per stream: an alert's observed value names its reading.
    keys = [(s, v) for s, v, _ in result.faulty]
    assert len(keys) == len(set(keys))
