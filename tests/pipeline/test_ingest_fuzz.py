"""100,000+ random and adversarial inputs through the real ingest path: zero crashes, and
every input accounted for.

Bulk: serial lines through ``SerialReader._feed`` (framing, decoding, parsing, dead letters)
and MQTT payloads through ``MqttSubscriber._handle`` into a real ``IngestQueue``, one input at
a time, so each one can be checked: it became a reading, a dead letter, or (serial only) a
counted blank line — never nothing. Then a smaller portion goes the whole way, over a
pseudo-terminal and through the fixture Mosquitto broker, and must give exactly the counts
an in-process twin predicts.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import MqttSource, SerialSource
from gateway.pipeline.ingest import IngestQueue
from gateway.records import DeadLetter, Reading
from gateway.sources.mqtt import MqttSubscriber
from gateway.sources.serial import SerialReader
from tests.conftest import Broker
from tests.helpers import wait_for

SEED = 20_240_611
SERIAL_BULK = 52_000
MQTT_BULK = 46_000
SERIAL_REAL = 1_000
MQTT_REAL = 1_000
MAX_LINE = 256

# Adversarial building blocks: things devices and people really send.
TOKENS = [
    "21.5", "-0.0", "1e308", "1e309", "-1e999", "nan", "NaN", "inf", "-Infinity", "0x1F",
    "1,5", "", " ", "null", "true", "\u00b0C", "\u2028", "\x00", "\x1b[2J", "12..3", "+-1",
    "9" * 40, "'1'", '"2"', "1_000", "\ud7ff", "\uffff", "=", "==", "a=b=c", "{", "}",
]  # fmt: skip


def serial_line(rng: random.Random) -> bytes:
    kind = rng.randrange(12)
    if kind == 0:
        return f"{rng.uniform(-1e3, 1e3)!r},{rng.uniform(-1e3, 1e3)!r}".encode()
    if kind == 1:
        return ",".join(rng.choice(TOKENS) for _ in range(rng.randrange(0, 5))).encode()
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80))).replace(b"\n", b"")
    if kind == 3:
        return b"x" * rng.randrange(MAX_LINE - 2, MAX_LINE + 40)  # around the bound
    if kind == 4:
        return rng.choice([b"temperature,pressure", b"TEMPERATURE , PRESSURE", b"\r", b""])
    if kind == 5:
        return f"{rng.random()},{rng.choice(TOKENS)}".encode("utf-8", "surrogatepass")
    if kind == 6:
        return b"\xff\xfe" + f"{rng.random()},1".encode()  # undecodable bytes, replaced
    if kind == 7:
        return ("[" * rng.randrange(1, 200)).encode()
    if kind == 8:
        return f"{rng.random()};{rng.random()}".encode()  # wrong delimiter
    if kind == 9:
        return (str(rng.random()) + "," * rng.randrange(1, 300)).encode()[: MAX_LINE + 60]
    if kind == 10:
        return f"{rng.randrange(10**6)},{rng.randrange(10**6)}\r".encode()
    return bytes(rng.choice([0, 9, 13, 27, 32, 44, 46, 49]) for _ in range(rng.randrange(12)))


def json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.uniform(-1e6, 1e6)
    if kind == 1:
        return rng.randrange(-(10**20), 10**20)
    if kind == 2:
        return rng.choice(TOKENS)
    if kind == 3:
        return rng.choice([None, True, False, 10**400, -(10**400)])
    if kind == 4:
        return rng.choice([float("nan"), float("inf")])  # json.dumps writes NaN / Infinity
    if kind == 5:
        return rng.random()
    if kind == 6:
        return [json_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {key(rng): json_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def key(rng: random.Random) -> str:
    return rng.choice(["t", "p", "ts", "temp", "a b", "x/y", "", "é", "#", "+", "k" * 200])


# More fields than a record may have (MAX_FIELDS = 1024), under and over max_payload.
MANY_FIELDS = [
    json.dumps({f"f{i}": i for i in range(1100)}).encode(),
    json.dumps({"a": {str(i): 1 for i in range(1030)}}, separators=(",", ":")).encode()[:4096],
    ("{" + ",".join(f'"{i}":1' for i in range(1030)) + "}").encode(),
]

# Around max_payload (16384): the bound is checked before anything is decoded.
PADDED = [json.dumps({"t": 1, "pad": "x" * n}).encode() for n in (100, 16_364, 16_365, 40_000)]


def mqtt_message(rng: random.Random) -> tuple[str, bytes]:
    """(topic, payload); the topic picks the route: plant/... json, raw/... number."""
    device = rng.choice(["pump-1", "pump-2", "has space", "ü", "a" * 140, "x.y", "-"])
    kind = rng.randrange(10)
    if kind < 2:
        return f"raw/{device}", rng.choice(TOKENS + ["3.25", " -1e2 \n"]).encode()
    if kind == 2:
        return f"raw/{device}/v", bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    topic = f"plant/{device}/telemetry"
    if kind == 3:
        return topic, ("[" * rng.randrange(5, 3000) + "]" * rng.randrange(3)).encode()
    if kind == 4:
        return topic, rng.choice(PADDED)
    if kind == 5:
        return topic, bytes(rng.randrange(256) for _ in range(rng.randrange(60)))
    if kind == 6 and rng.random() < 0.2:  # costly to parse (by design: bounded), so rarer
        return topic, rng.choice(MANY_FIELDS)
    payload = json.dumps({key(rng): json_value(rng) for _ in range(rng.randrange(6))})
    if kind == 7 and payload:
        cut = rng.randrange(len(payload))
        payload = payload[:cut] + rng.choice(TOKENS) + payload[cut + 1 :]
    return topic, payload.encode("utf-8", "surrogatepass")


def serial_section(port: str = "loop://") -> SerialSource:
    return SerialSource.model_validate(
        {
            "type": "serial",
            "name": "fuzz-serial",
            "port": port,
            "fields": ["temperature", "pressure"],
            "max_line": MAX_LINE,
            "read_timeout": 0.05,
            "units": {"pressure": {"scale": 1e300}},  # overflows to inf: non_finite
        }
    )


def mqtt_section(port: int = 1883) -> MqttSource:
    return MqttSource.model_validate(
        {
            "type": "mqtt",
            "name": "fuzz-mqtt",
            "broker": {"host": "127.0.0.1", "port": port},
            "subscribe": [
                {
                    "topic": "plant/+/telemetry",
                    "stream": "{1}.{field}",
                    "timestamp_field": "ts",
                    "max_payload": 16384,
                },
                {"topic": "raw/#", "format": "number"},
            ],
        }
    )


def drain(queue: IngestQueue) -> tuple[list[Reading], list[DeadLetter]]:
    readings, side = queue.get_batch(10**9, 0.0)
    return readings, [r for r in side if isinstance(r, DeadLetter)]


def outcome(stats: dict[str, Any]) -> tuple[int, dict[str, int]]:
    return stats["readings"], dict(stats["dead_letters"])


# --- bulk, in process ----------------------------------------------------------------------


@pytest.mark.slow
def test_serial_bulk_every_line_is_accounted_for() -> None:
    rng = random.Random(SEED)
    queue = IngestQueue(capacity=10**6, side_capacity=10**6)
    reader = SerialReader(serial_section(), queue)
    silent = 0
    for _ in range(SERIAL_BULK):
        line = serial_line(rng)
        before, blank_before = len(queue), reader._blank_lines
        reader._feed(line + b"\n", 1_700_000_000.0)
        if len(queue) == before:
            # The only input allowed to leave no record: a blank line (whitespace, also
            # Unicode's, such as \x1c), and it is counted.
            assert reader._blank_lines == blank_before + 1, line
            silent += 1
    stats = reader.stats()
    readings, dead = drain(queue)
    assert stats["errors"] == 0
    assert (
        stats["lines"] + stats["blank_lines"] + stats["dead_letters"].get("line_too_long", 0)
        == SERIAL_BULK
    )
    assert stats["blank_lines"] == silent
    assert len(readings) == stats["readings"] and len(dead) == stats["dead_letters_total"]
    assert Counter(d.reason for d in dead) == Counter(stats["dead_letters"])
    assert all(len(d.payload) <= 512 for d in dead)
    assert len(readings) > SERIAL_BULK // 10 and len(set(stats["dead_letters"])) >= 6
    print(f"serial bulk: {SERIAL_BULK} lines -> {len(readings)} readings, {stats['dead_letters']}")


@pytest.mark.slow
def test_mqtt_bulk_every_message_is_accounted_for() -> None:
    rng = random.Random(SEED + 1)
    queue = IngestQueue(capacity=10**6, side_capacity=10**6)
    source = MqttSubscriber(mqtt_section(), queue)  # never started: callbacks called directly
    json_route, number_route = source._routes
    for _ in range(MQTT_BULK):
        topic, payload = mqtt_message(rng)
        route = number_route if topic.startswith("raw/") else json_route
        before = len(queue)
        source._handle(route, topic, payload, 1_700_000_000.0)
        assert len(queue) > before  # a reading or a dead letter, never nothing
    stats = source.stats()
    readings, dead = drain(queue)
    assert stats["errors"] == 0 and stats["messages"] == MQTT_BULK
    assert len(readings) == stats["readings"] and len(dead) == stats["dead_letters_total"]
    assert len(dead) <= MQTT_BULK  # at most one dead letter per message
    assert Counter(d.reason for d in dead) == Counter(stats["dead_letters"])
    assert all(len(d.payload) <= 512 and len(d.detail) <= 512 for d in dead)
    assert len(set(stats["dead_letters"])) >= 8
    print(f"mqtt bulk: {MQTT_BULK} messages -> {len(readings)} readings, {stats['dead_letters']}")


# --- the whole way: pseudo-terminal and broker ---------------------------------------------


def test_serial_over_a_pty_matches_the_in_process_twin() -> None:
    rng = random.Random(SEED + 2)
    lines = [serial_line(rng) + b"\n" for _ in range(SERIAL_REAL)]
    twin = SerialReader(serial_section(), IngestQueue(capacity=10**6))
    for line in lines:
        twin._feed(line, 0.0)

    master, slave = os.openpty()
    queue = IngestQueue(capacity=10**6)
    reader = SerialReader(serial_section(os.ttyname(slave)), queue)
    reader.start()
    try:
        wait_for(lambda: reader.stats()["connected"], timeout=60.0)
        stream = b"".join(lines)
        pos = 0
        while pos < len(stream):  # random chunking: lines split anywhere
            size = rng.randrange(1, 300)
            os.write(master, stream[pos : pos + size])
            pos += size

        def done() -> bool:
            s = reader.stats()
            too_long = s["dead_letters"].get("line_too_long", 0)
            return bool(s["lines"] + s["blank_lines"] + too_long == SERIAL_REAL)

        wait_for(done, timeout=60.0)
    finally:
        reader.stop()
        assert reader.join(5.0)
        os.close(master)
        os.close(slave)
    assert outcome(reader.stats()) == outcome(twin.stats())
    assert reader.stats()["errors"] == 0 and reader.stats()["bytes"] == len(stream)


def test_mqtt_through_the_broker_matches_the_in_process_twin(broker: Broker) -> None:
    rng = random.Random(SEED + 3)
    messages = [mqtt_message(rng) for _ in range(MQTT_REAL)]
    twin = MqttSubscriber(mqtt_section(), IngestQueue(capacity=10**6))
    for topic, payload in messages:
        route = twin._routes[1] if topic.startswith("raw/") else twin._routes[0]
        twin._handle(route, topic, payload, 0.0)

    queue = IngestQueue(capacity=10**6)
    source = MqttSubscriber(mqtt_section(broker.port), queue)
    source.start()
    publisher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    publisher.max_inflight_messages_set(100)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    try:
        wait_for(lambda: source.stats()["subscribed"], timeout=60.0)
        infos = [publisher.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(30.0)
        wait_for(lambda: source.stats()["messages"] == MQTT_REAL, timeout=60.0)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        source.stop()
        assert source.join(5.0)
    assert outcome(source.stats()) == outcome(twin.stats())
    assert source.stats()["errors"] == 0
    total = SERIAL_BULK + MQTT_BULK + SERIAL_REAL + MQTT_REAL
    assert total >= 100_000
