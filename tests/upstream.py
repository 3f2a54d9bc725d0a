"""Helpers for the tests that watch what the gateway publishes upstream."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.records import AlertChange

if TYPE_CHECKING:
    from tests.conftest import Broker

PREFIX = "plant/line1"
GW = "gw-7"


def reconfigure(broker: Broker, lines: str) -> None:
    """Add to the broker's config and restart it."""
    with broker.conf.open("a") as conf:
        conf.write(lines)
    broker.restart()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    user_properties: dict[str, str]


class Subscriber:
    """A paho client that records everything under the gateway's prefix."""

    def __init__(self, broker: Broker, persistent: bool = False) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"watcher-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/#", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.2)
        session = Properties(PacketTypes.CONNECT)
        session.SessionExpiryInterval = 300 if persistent else 0
        self.client.connect(
            broker.host, broker.port, clean_start=not persistent, properties=session
        )
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        props = dict(getattr(msg.properties, "UserProperty", None) or [])
        with self._lock:
            self.messages.append(Received(msg.topic, msg.payload, bool(msg.retain), props))

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == f"{PREFIX}/{GW}/{suffix}"]

    def alerts(self) -> list[dict]:
        with self._lock:
            return [json.loads(m.payload) for m in self.messages if "/alerts/" in m.topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def alert(stream: str, state: str = "raised", alert_id: str | None = None) -> AlertChange:
    return AlertChange(
        alert_id=alert_id or uuid.uuid4().hex,
        stream=stream,
        state=state,
        ts=1_700_000_000.5,
        score=0.9993,
        observed=81.5,
        expected=60.25,
        band=(55.0, 65.5),
        unit="degC",
        model="cfc-default@3f2a9c1e",
    )
