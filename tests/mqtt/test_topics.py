"""Topic names checked before publishing: what we let through, a real Mosquitto accepts."""

from __future__ import annotations

import uuid

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import is_name
from gateway.mqtt.topics import MAX_TOPIC_BYTES, check_topic, topic_problem
from tests.conftest import Broker
from tests.helpers import Subscriber, wait_for

BAD = [
    "", "a/b\n", "a\x00b", "a\rb", "tab\there", "del\x7f", "c1\x85", "a/+/b", "a/#",
    "$SYS/x", "lone\ud800surrogate", "x" * (MAX_TOPIC_BYTES + 1), "\u00e9" * 40_000,
]  # fmt: skip
GOOD = ["a", "plant/line1/gw-7/alerts/pump.1:temp", "caf\u00e9/\u65e5\u672c", "a//b", "/lead"]


@pytest.mark.parametrize("topic", BAD, ids=range(len(BAD)))
def test_topics_a_broker_rejects_are_caught(topic: str) -> None:
    assert topic_problem(topic) is not None
    with pytest.raises(ValueError, match="not a topic we can publish to"):
        check_topic(topic)


def test_names_are_checked_whole() -> None:
    assert is_name("pump-1.temp:0")
    for bad in ("ok\n", "ok\r", "\nok", "a b", "a/b", "", "x" * 129):
        assert not is_name(bad)


@given(st.text(max_size=60))
@pytest.mark.slow
def test_a_name_is_always_a_publishable_topic_level(text: str) -> None:
    if is_name(text):
        assert topic_problem(f"prefix/{text}") is None
    if topic_problem(text) is None:
        encoded = text.encode("utf-8")  # never a lone surrogate
        assert b"\x00" not in encoded and "+" not in text and "#" not in text


def test_every_topic_we_allow_is_delivered_by_mosquitto(broker: Broker) -> None:
    """One connection publishes every allowed topic; had Mosquitto found one malformed it
    would have dropped the connection and the rest would not arrive."""
    sub = Subscriber(broker, "#")
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"p-{uuid.uuid4().hex[:6]}")
    drops: list[object] = []
    pub.on_disconnect = lambda *a: drops.append(a)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        for topic in GOOD:
            assert topic_problem(topic) is None
            pub.publish(check_topic(topic), b"1", qos=1).wait_for_publish(10)
        wait_for(lambda: len(sub.messages) >= len(GOOD), timeout=10, what="every topic")
        assert sorted(m.topic for m in sub.messages) == sorted(GOOD) and not drops
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.close()
