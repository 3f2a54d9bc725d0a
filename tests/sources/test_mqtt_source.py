"""The MQTT source against a real Mosquitto broker (the ``broker`` fixture)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import gateway.sources.mqtt as mqtt_source
from gateway.config import MqttSource
from gateway.errors import SourceError
from gateway.sources import build_source
from gateway.sources.mqtt import (
    PUBLISH_HEADROOM,
    BufferedClient,
    MqttSubscriber,
)
from tests.conftest import Broker, free_port
from tests.helpers import ListSink, wait_for


class Publisher:
    """A plain paho client that publishes with QoS 1 and waits for each PUBACK."""

    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def __call__(self, topic: str, payload: bytes | str) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5.0)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def source_config(port: int, protocol: str = "5", **broker: Any) -> MqttSource:
    return MqttSource.model_validate(
        {
            "type": "mqtt",
            "name": "plant",
            "broker": {"host": "127.0.0.1", "port": port, "protocol": protocol, **broker},
            "subscribe": [
                {
                    "topic": "plant/+/telemetry",
                    "stream": "{1}.{field}",
                    "timestamp_field": "ts",
                    "units": {"t": {"unit": "degC"}, "p": {"scale": 0.001, "unit": "bar"}},
                    "max_payload": 128,
                },
                {"topic": "raw/#", "format": "number"},
            ],
        }
    )


@pytest.fixture
def running(broker: Broker) -> Iterator[tuple[MqttSubscriber, ListSink, Publisher]]:
    sink = ListSink()
    source = build_source(source_config(broker.port), sink)
    assert isinstance(source, MqttSubscriber)
    source.start()
    publish = Publisher(broker)
    try:
        wait_for(lambda: source.stats()["subscribed"])
        yield source, sink, publish
    finally:
        publish.close()
        source.stop()
        assert source.join(5.0)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_json_and_number_payloads_with_wildcards_and_templates(
    broker: Broker, protocol: str
) -> None:
    sink = ListSink()
    source = MqttSubscriber(source_config(broker.port, protocol), sink)
    source.start()
    publish = Publisher(broker)
    try:
        wait_for(lambda: source.stats()["subscribed"])
        publish("plant/pump-1/telemetry", '{"t": 21.5, "p": 1200, "id": "A7", "ts": 1700000000}')
        publish("plant/pump-2/telemetry", '{"t": 19.0, "motor": {"rpm": 1450}}')
        publish("raw/line-a/level", b"3.25")
        publish("raw/x", " -1e2 \n")
        wait_for(lambda: len(sink.readings()) == 6)
    finally:
        publish.close()
        source.stop()
        assert source.join(5.0)
    got = {r.stream: (r.value, r.unit) for r in sink.readings()}
    assert got == {
        "pump-1.t": (21.5, "degC"),
        "pump-1.p": (pytest.approx(1.2), "bar"),
        "pump-2.t": (19.0, "degC"),
        "pump-2.motor.rpm": (1450.0, None),
        "raw.line-a.level": (3.25, None),
        "raw.x": (-100.0, None),
    }
    assert {r.ts for r in sink.readings() if r.stream.startswith("pump-1")} == {1_700_000_000.0}
    assert all(r.source == "plant" for r in sink.readings())
    assert sink.dead() == []
    assert source._threads and source._threads[0].name == "source-plant"


def test_garbage_payloads_are_dead_lettered_and_counted(
    running: tuple[MqttSubscriber, ListSink, Publisher],
) -> None:
    source, sink, publish = running
    topic = "plant/pump-1/telemetry"
    publish(topic, b"{not json")
    publish(topic, b"\xff\xfe\x00")
    publish(topic, '{"t": ' + "1" * 200 + "}")  # over max_payload (128)
    publish(topic, '{"t": 1, "x": NaN}')  # t kept, x dead-lettered
    publish(topic, '{"t": 1, "ts": "last tuesday"}')
    publish(topic, "[" * 50 + "]" * 50)
    publish("raw/has space", b"1")
    publish("raw/n", b"NaN")
    publish("raw/e", b"")
    publish("raw/wide", "１２３")  # full-width digits: float() takes them, the gateway does not
    publish("raw/ok", b"7")
    wait_for(lambda: len(sink.dead()) == 10 and len(sink.readings()) == 2)
    assert sorted(d.reason for d in sink.dead()) == sorted(
        [
            "bad_json",
            "bad_utf8",
            "payload_too_large",
            "non_finite",
            "bad_timestamp",
            "json_too_deep",
            "bad_stream_name",
            "non_finite",
            "empty",
            "not_a_number",
        ]
    )
    too_large = next(d for d in sink.dead() if d.reason == "payload_too_large")
    assert too_large.payload_len == 207 and "topic plant/pump-1/telemetry" in too_large.detail
    stats = source.stats()
    assert stats["dead_letters_total"] == 10 and stats["dead_letters"]["non_finite"] == 2
    assert stats["messages"] == 11 and stats["readings"] == 2 and stats["errors"] == 0


def test_readings_keep_flowing_after_broker_restart(
    running: tuple[MqttSubscriber, ListSink, Publisher], broker: Broker
) -> None:
    source, sink, publish = running
    publish("raw/a", b"1")
    wait_for(lambda: len(sink.readings()) == 1)
    publish.close()
    broker.restart()
    wait_for(lambda: sink.events("broker_lost"))
    wait_for(lambda: sink.events("broker_recovered") and source.stats()["subscribed"])
    again = Publisher(broker)
    try:
        again("raw/a", b"2")
        again("plant/pump-1/telemetry", '{"t": 3}')
        wait_for(lambda: len(sink.readings()) == 3)
    finally:
        again.close()
    assert [r.value for r in sink.readings()] == [1.0, 2.0, 3.0]
    stats = source.stats()
    assert stats["reconnects"] == 1 and stats["connected"] is True
    assert len(sink.events("broker_lost")) == 1


@pytest.mark.slow
def test_absent_broker_does_not_block_start_and_is_joined_later(tmp_path: Path) -> None:
    port = free_port()
    sink = ListSink()
    source = MqttSubscriber(source_config(port, username="gw7", password="hunter2-secret"), sink)
    source.start()  # connect_async: returns although nothing listens yet
    late = Broker(tmp_path, port)
    try:
        wait_for(lambda: sink.events("broker_lost"))
        assert source.stats()["connected"] is False
        late.start()
        wait_for(lambda: source.stats()["subscribed"], timeout=20.0)
        publish = Publisher(late)
        publish("raw/late", b"42")
        publish.close()
        wait_for(lambda: sink.readings())
        assert sink.readings()[0].stream == "raw.late"
    finally:
        source.stop()
        assert source.join(5.0)
        late.stop()


def test_password_never_logged(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sink = ListSink()
    source = MqttSubscriber(
        source_config(broker.port, username="gw7", password="hunter2-secret"), sink
    )
    source.start()
    try:
        wait_for(lambda: source.stats()["subscribed"])
    finally:
        source.stop()
        assert source.join(5.0)
    assert "hunter2" not in caplog.text
    assert "hunter2" not in repr(source.stats())


def test_unknown_template_placeholder_is_rejected() -> None:
    cfg = MqttSource.model_validate(
        {"type": "mqtt", "name": "m", "subscribe": [{"topic": "a/#", "stream": "{topic.x}"}]}
    )
    with pytest.raises(SourceError, match="placeholder"):
        MqttSubscriber(cfg, ListSink())


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_burst_read_in_large_chunks_loses_and_reorders_nothing(
    broker: Broker, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source reads the socket in large chunks and parses packets from its buffer:
    packets split across chunks (a small chunk size forces every split, including inside
    the length bytes) and a burst far larger than one chunk all arrive, in order."""
    monkeypatch.setattr(BufferedClient, "READ_SIZE", 7)
    section = MqttSource.model_validate(
        {
            "type": "mqtt",
            "name": "plant",
            "broker": {"host": "127.0.0.1", "port": broker.port, "protocol": protocol},
            "subscribe": [{"topic": "raw/#", "format": "number", "max_payload": 1_000_000}],
        }
    )
    sink = ListSink()
    source = MqttSubscriber(section, sink)
    source.start()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        wait_for(lambda: source.stats()["subscribed"])
        big = " " * 300_000 + "7"  # a remaining length of three bytes
        infos = [client.publish(f"raw/s{i % 3}", str(i), qos=0) for i in range(2000)]
        infos.append(client.publish("raw/big", big, qos=1))
        infos += [client.publish("raw/s0", str(i), qos=0) for i in range(2000, 2100)]
        for info in infos:
            info.wait_for_publish(10.0)
        wait_for(lambda: len(sink.readings()) == 2101)
    finally:
        client.disconnect()
        client.loop_stop()
        source.stop()
        assert source.join(5.0)
    values = [r.value for r in sink.readings() if r.stream != "raw.big"]
    assert values == [float(i) for i in range(2100)]
    assert [r.value for r in sink.readings() if r.stream == "raw.big"] == [7.0]
    assert sink.dead() == []


def test_a_source_subscribes_with_mqtt_3_1_1_unless_5_is_configured() -> None:
    def protocol(**broker: Any) -> str:
        section = MqttSource.model_validate(
            {"type": "mqtt", "name": "p", "broker": broker, "subscribe": [{"topic": "a/#"}]}
        )
        return section.broker.protocol

    assert protocol() == "3.1.1"
    assert protocol(protocol="5") == "5"
    assert protocol(protocol="3.1.1") == "3.1.1"


def _publish_packet(topic: bytes, payload: bytes, header: int = 0x30) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + payload
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            return bytes([header]) + encoded + body


def _fast_path(protocol: int = mqtt.MQTTv311) -> tuple[BufferedClient, list[tuple[str, bytes]]]:
    taken: list[tuple[str, bytes]] = []
    client = BufferedClient(
        callback_api_version=CallbackAPIVersion.VERSION2,
        protocol=protocol,
        on_publish_qos0=lambda topic, payload: taken.append((topic, payload)),
    )
    return client, taken


def _buffer(client: BufferedClient, data: bytes) -> None:
    client._read_buffer, client._read_pos, client._read_sock = data, 0, client._sock


@pytest.mark.parametrize(
    "stopper",
    [
        _publish_packet(b"q/1", b"x", header=0x32),  # QoS 1: paho acknowledges it
        _publish_packet(b"\xff\xfe", b"x"),  # a topic that is not UTF-8
        _publish_packet(b"", b"x"),  # an empty topic: malformed in 3.1.1
        b"\x30\x80\x80\x80\x80\x01",  # a remaining length of five bytes
        b"\xd0\x00",  # PINGRESP
        _publish_packet(b"cut/off", b"12345")[:-2],  # the rest is still in the socket
    ],
)
def test_the_fast_path_takes_whole_qos0_publishes_and_leaves_the_rest_to_paho(
    stopper: bytes,
) -> None:
    client, taken = _fast_path()
    first = _publish_packet(b"a/b", b"1") + _publish_packet(b"a/c", b"", header=0x31)
    big = _publish_packet(b"big", b"7" * 20_000)  # a two-byte remaining length
    _buffer(client, first + big + stopper)
    assert client._take_publishes() == 3
    assert taken == [("a/b", b"1"), ("a/c", b""), ("big", b"7" * 20_000)]
    assert client._read_pos == len(first + big)  # paho reads the stopper from here


def test_the_fast_path_is_off_for_mqtt5_and_inside_a_packet() -> None:
    client, taken = _fast_path(mqtt.MQTTv5)
    _buffer(client, _publish_packet(b"a/b", b"1"))
    assert client._take_publishes() == 0
    client, taken = _fast_path()
    _buffer(client, _publish_packet(b"a/b", b"1"))
    client._in_packet["command"] = 0x30  # paho has read the first bytes of a packet
    assert client._take_publishes() == 0 and taken == []


def test_overlapping_filters_each_get_the_message_and_strays_are_dead_letters(
    broker: Broker,
) -> None:
    section = MqttSource.model_validate(
        {
            "type": "mqtt",
            "name": "plant",
            "broker": {"host": "127.0.0.1", "port": broker.port},
            "subscribe": [
                {"topic": "raw/#", "format": "number", "stream": "all.{topic}"},
                {"topic": "raw/+", "format": "number", "stream": "one.{1}"},
            ],
        }
    )
    sink = ListSink()
    source = MqttSubscriber(section, sink)
    source.start()
    publish = Publisher(broker)
    try:
        wait_for(lambda: source.stats()["subscribed"])
        publish("raw/a", b"1")
        publish("raw/a/b", b"2")
        wait_for(lambda: len(sink.readings()) == 3)
        source._on_publish_qos0("elsewhere/x", b"3")  # the broker sent what we never asked for
    finally:
        publish.close()
        source.stop()
        assert source.join(5.0)
    assert sorted((r.stream, r.value) for r in sink.readings()) == [
        ("all.raw.a", 1.0),
        ("all.raw.a.b", 2.0),
        ("one.a", 1.0),
    ]
    assert [d.reason for d in sink.dead()] == ["no_route"]
    assert source.stats()["messages"] == 3


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_an_oversized_payload_is_never_sent_to_an_mqtt5_source(
    broker: Broker, protocol: str
) -> None:
    """MQTT 5: the source's CONNECT says Maximum Packet Size (the largest max_payload plus
    room for topic and header), so the broker drops a 1 MB publish instead of sending it:
    it is never read, never counted as received. MQTT 3.1.1 has no such property: the
    payload is read and then refused (payload_too_large), as before."""
    section = MqttSource.model_validate(
        {
            "type": "mqtt",
            "name": "plant",
            "broker": {"host": "127.0.0.1", "port": broker.port, "protocol": protocol},
            "subscribe": [{"topic": "raw/#", "format": "number", "max_payload": 1024}],
        }
    )
    sink = ListSink()
    source = MqttSubscriber(section, sink)
    source.start()
    publish = Publisher(broker)
    try:
        wait_for(lambda: source.stats()["subscribed"])
        publish("raw/a", b"1")
        publish("raw/a", b"7" * 1_000_000)
        publish("raw/a", b"2")  # the broker keeps a publisher's order: after the big one
        wait_for(lambda: len(sink.readings()) == 2)
        stats = source.stats()
    finally:
        publish.close()
        source.stop()
        assert source.join(5.0)
    assert [r.value for r in sink.readings()] == [1.0, 2.0]
    assert stats["reconnects"] == 0 and sink.events("broker_lost") == []
    if protocol == "5":
        assert stats["messages"] == 2 and stats["dead_letters"] == {}
        assert stats["max_packet_size"] == 1024 + PUBLISH_HEADROOM
    else:
        assert stats["messages"] == 3 and stats["dead_letters"] == {"payload_too_large": 1}
        assert stats["max_packet_size"] is None
        (dead,) = sink.dead()
        assert dead.payload_len == 1_000_000


def test_distinct_topics_that_render_one_stream_name_are_never_merged(broker: Broker) -> None:
    """`{topic}` turns '/' into '.', so topics that differ only in where '/' and '.' are give
    the same name; so do a nested JSON key and a deeper topic, two keys under a template
    without {field}, and a template that leaves a varying level out. The first topic and
    field to give a name own it; the others are stream_collision dead letters naming both."""
    section = MqttSource.model_validate(
        {
            "type": "mqtt",
            "name": "plant",
            "broker": {"host": "127.0.0.1", "port": broker.port},
            "subscribe": [
                {"topic": "plant/#", "format": "number"},  # stream {topic}
                {"topic": "json/#"},  # stream {topic}.{field}
                {"topic": "one/#", "stream": "one.{1}"},  # {field} left out, levels too
            ],
        }
    )
    sink = ListSink()
    source = MqttSubscriber(section, sink)
    source.start()
    publish = Publisher(broker)
    try:
        wait_for(lambda: source.stats()["subscribed"])
        publish("plant/pump.1/temp", b"1")
        publish("plant/pump/1.temp", b"2")  # plant.pump.1.temp again
        publish("plant/pump/1/temp", b"3")  # and again
        publish("plant/pump.1/temp", b"4")  # the owner goes on
        publish("plant/pump/2/temp", b"5")  # an unrelated stream is not touched
        publish("json/a", '{"b": {"c": 6}}')  # json.a.b.c (nested key b.c)
        publish("json/a/b", '{"c": 7, "d": 8}')  # json.a.b.c again; json.a.b.d is fine
        publish("one/x", '{"t": 9, "p": 10}')  # one.x from field t, then from p
        publish("one/x/y", '{"t": 11}')  # one.x from another topic
        wait_for(lambda: len(sink.readings()) == 6 and len(sink.dead()) == 5)
        stats = source.stats()
    finally:
        publish.close()
        source.stop()
        assert source.join(5.0)
    assert [(r.stream, r.value) for r in sink.readings()] == [
        ("plant.pump.1.temp", 1.0),
        ("plant.pump.1.temp", 4.0),
        ("plant.pump.2.temp", 5.0),
        ("json.a.b.c", 6.0),
        ("json.a.b.d", 8.0),
        ("one.x", 9.0),
    ]
    assert [d.reason for d in sink.dead()] == ["stream_collision"] * 5
    detail = {d.payload: d.detail for d in sink.dead()}
    for payload, new, owner in [
        ("2", "topic plant/pump/1.temp", "topic plant/pump.1/temp field value"),
        ("3", "topic plant/pump/1/temp", "topic plant/pump.1/temp field value"),
        ('{"c": 7, "d": 8}', "topic json/a/b field c", "topic json/a field b.c"),
        ('{"t": 9, "p": 10}', "topic one/x field p", "topic one/x field t"),
        ('{"t": 11}', "topic one/x/y field t", "topic one/x field t"),
    ]:
        assert new in detail[payload] and f"is already {owner}" in detail[payload], detail
    assert stats["dead_letters"] == {"stream_collision": 5} and stats["errors"] == 0
    assert stats["streams"] == 5


def test_a_source_names_at_most_max_streams_and_refuses_new_ones_beyond(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The origins are bounded: a new name beyond MAX_STREAMS is too_many_streams (forgetting
    an origin instead would let a colliding topic merge); the named streams go on."""
    monkeypatch.setattr(mqtt_source, "MAX_STREAMS", 2)
    section = MqttSource.model_validate(
        {
            "type": "mqtt",
            "name": "plant",
            "broker": {"host": "127.0.0.1", "port": broker.port},
            "subscribe": [{"topic": "raw/#", "format": "number"}],
        }
    )
    sink = ListSink()
    source = MqttSubscriber(section, sink)
    source.start()
    publish = Publisher(broker)
    try:
        wait_for(lambda: source.stats()["subscribed"])
        for topic, value in [("raw/a", b"1"), ("raw/b", b"2"), ("raw/c", b"3"), ("raw/a", b"4")]:
            publish(topic, value)
        wait_for(lambda: len(sink.readings()) == 3 and sink.dead())
        stats = source.stats()
    finally:
        publish.close()
        source.stop()
        assert source.join(5.0)
    assert [(r.stream, r.value) for r in sink.readings()] == [
        ("raw.a", 1.0),
        ("raw.b", 2.0),
        ("raw.a", 4.0),
    ]
    (dead,) = sink.dead()
    assert dead.reason == "too_many_streams" and "raw.c" in dead.detail
    assert stats["streams"] == 2 and stats["dead_letters"] == {"too_many_streams": 1}


def test_names_kept_per_topic_follow_the_claims_when_the_cache_turns_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fast path keeps each topic's claimed names; a refused name is refused again on
    every message, and a cache emptied for junk topics (bound 1 here) gives the same names."""
    monkeypatch.setattr(mqtt_source, "TOPIC_CACHE", 1)
    section = MqttSource.model_validate(
        {
            "type": "mqtt",
            "name": "plant",
            "broker": {"host": "127.0.0.1", "port": free_port(), "protocol": "3.1.1"},
            "subscribe": [{"topic": "plant/#", "format": "json", "timestamp_field": "ts"}],
        }
    )
    sink = ListSink()
    source = MqttSubscriber(section, sink)  # not started: fed as the buffered client feeds it
    for k in range(3):
        source._on_publish_qos0("plant/pump.1", b'{"ts": 1800000000.5, "t": %d}' % k)
        source._on_publish_qos0("plant/pump/1", b'{"t": 9}')  # plant.pump.1.t again
        source._on_publish_qos0("plant/pump/2", b'{"t": 7, "ts": "bad"}')
    assert [(r.stream, r.ts, r.value) for r in sink.readings()] == [
        ("plant.pump.1.t", 1800000000.5, float(k)) for k in range(3)
    ]
    assert [d.reason for d in sink.dead()] == ["stream_collision", "bad_timestamp"] * 3
    assert source.stats()["messages"] == 9
