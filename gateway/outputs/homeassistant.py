"""Home Assistant MQTT discovery (opt-in): each stream's alert state as a `problem` sensor.

For every stream (or asset) the gateway scores, a retained discovery message on the upstream
broker declares a ``binary_sensor`` with ``device_class: problem``. Its state is read from the
alert topic the forwarder already publishes (``{prefix}/{id}/alerts/{stream}``: ``raised``
is ON, ``cleared`` is OFF), and its availability from the gateway's retained presence topic
(``{prefix}/{id}/status``, ``online``/``offline`` with the last will). So this module adds no
new state: it only tells Home Assistant where to look.

It has its own small MQTT connection so the forwarder stays the only owner of the outbox.
paho's callbacks only set flags; the daemon's main thread calls `announce()` each tick and
that does the publishing. When Home Assistant restarts (``{discovery_prefix}/status`` goes
``online``) or the connection comes back, everything is announced again.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway import __version__
from gateway.config import HomeAssistantSection, UpstreamSection
from gateway.mqtt.security import TlsSetupError, secure

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def object_id(text: str) -> str:
    """Home Assistant ids allow letters, digits, ``_`` and ``-``; stream names also ``.:``."""
    return _UNSAFE.sub("_", text)


def discovery_message(
    section: HomeAssistantSection, upstream: UpstreamSection, gateway_id: str, subject: str
) -> tuple[str, dict[str, Any]]:
    """The retained discovery topic and payload for one stream's (or asset's) alert sensor."""
    base = f"{upstream.topic_prefix}/{gateway_id}"
    node, obj = object_id(gateway_id), object_id(subject)
    topic = f"{section.discovery_prefix}/binary_sensor/{node}/{obj}/config"
    payload = {
        "name": f"{subject} alert",
        "unique_id": f"liquid-gateway_{node}_{obj}_alert",
        "device_class": "problem",
        "state_topic": f"{base}/alerts/{subject}",
        "value_template": "{{ 'ON' if value_json.state == 'raised' else 'OFF' }}",
        "json_attributes_topic": f"{base}/alerts/{subject}",
        "availability_topic": f"{base}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
        "device": {
            "identifiers": [f"liquid-gateway_{node}"],
            "name": f"Liquid Gateway {gateway_id}",
            "manufacturer": "Liquid Gateway",
            "model": "liquid-gateway",
            "sw_version": __version__,
        },
        "origin": {"name": "liquid-gateway", "sw_version": __version__},
    }
    return topic, payload


class Announcer:
    """Publishes discovery messages for the subjects it is given, once each per connection."""

    def __init__(
        self, section: HomeAssistantSection, upstream: UpstreamSection, gateway_id: str
    ) -> None:
        self.section = section
        self.upstream = upstream
        self.gateway_id = gateway_id
        self._announced: set[str] = set()
        self._reannounce = threading.Event()  # set by paho's thread, read by ours
        self._connected = threading.Event()
        self._client: mqtt.Client | None = None

    def start(self) -> None:
        broker = self.upstream.broker
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{broker.client_id or self.gateway_id}-homeassistant",
            protocol=mqtt.MQTTv5 if broker.protocol == "5" else mqtt.MQTTv311,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        try:
            secure(client, broker)
        except TlsSetupError as exc:
            log.error("Home Assistant discovery off: TLS setup failed: %s", exc)
            return
        client.reconnect_delay_set(1, 30)
        client.connect_async(broker.host, broker.port, broker.keepalive)
        client.loop_start()
        self._client = client
        log.info("Home Assistant discovery under %s/", self.section.discovery_prefix)

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # --- paho callbacks: set flags and return ----------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            return
        client.subscribe(f"{self.section.discovery_prefix}/status", qos=1)
        self._connected.set()
        self._reannounce.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
        self._connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.payload == b"online":
            self._reannounce.set()

    # --- the daemon's main thread -----------------------------------------------------------

    def announce(self, subjects: Iterable[str]) -> int:
        """Announce the subjects not yet announced on this connection; returns how many."""
        if self._client is None or not self._connected.is_set():
            return 0
        if self._reannounce.is_set():
            self._reannounce.clear()
            self._announced.clear()
        sent = 0
        for subject in sorted(set(subjects) - self._announced):
            topic, payload = discovery_message(
                self.section, self.upstream, self.gateway_id, subject
            )
            self._client.publish(topic, json.dumps(payload), qos=1, retain=True)
            self._announced.add(subject)
            sent += 1
        if sent:
            log.info("announced %d alert sensors to Home Assistant", sent)
        return sent
