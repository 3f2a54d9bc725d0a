"""Home Assistant discovery, announced to a real Mosquitto broker."""

from __future__ import annotations

import json
import queue
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import BrokerSection, HomeAssistantSection, UpstreamSection
from gateway.outputs.homeassistant import Announcer, discovery_message
from tests.conftest import Broker


def _upstream(broker: Broker) -> UpstreamSection:
    return UpstreamSection(
        broker=BrokerSection(host=broker.host, port=broker.port), topic_prefix="factory/line1"
    )


def test_discovery_message_is_a_problem_sensor_tied_to_presence() -> None:
    upstream = UpstreamSection(broker=BrokerSection(), topic_prefix="factory/line1")
    topic, payload = discovery_message(
        HomeAssistantSection(enabled=True), upstream, "gw7", "pump.flow"
    )
    assert topic == "homeassistant/binary_sensor/gw7/pump_flow/config"
    assert payload["device_class"] == "problem"
    assert payload["state_topic"] == "factory/line1/gw7/alerts/pump.flow"
    assert payload["availability_topic"] == "factory/line1/gw7/status"
    assert (payload["payload_available"], payload["payload_not_available"]) == ("online", "offline")
    assert "raised" in payload["value_template"]
    assert payload["unique_id"] == "liquid-gateway_gw7_pump_flow_alert"


@pytest.mark.slow
def test_announcer_publishes_retained_configs_and_again_on_ha_restart(broker: Broker) -> None:
    got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    listener = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ha-listener")
    listener.on_message = lambda c, u, m: got.put(m)
    listener.connect(broker.host, broker.port)
    listener.subscribe("homeassistant/binary_sensor/#", qos=1)
    listener.loop_start()
    announcer = Announcer(HomeAssistantSection(enabled=True), _upstream(broker), "gw7")
    announcer.start()
    try:
        deadline = time.monotonic() + 10
        sent = 0
        while sent == 0 and time.monotonic() < deadline:
            sent = announcer.announce({"pump-1", "pump.flow"})
            time.sleep(0.05)
        assert sent == 2
        first = [got.get(timeout=5) for _ in range(2)]
        assert {m.topic for m in first} == {
            "homeassistant/binary_sensor/gw7/pump-1/config",
            "homeassistant/binary_sensor/gw7/pump_flow/config",
        }
        assert json.loads(first[0].payload)["device_class"] == "problem"
        assert announcer.announce({"pump-1", "pump.flow"}) == 0  # once per connection
        assert announcer.announce({"pump-1", "pump.flow", "pump-2"}) == 1  # a new stream
        got.get(timeout=5)
        # Home Assistant came back: it asks for everything again.
        listener.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        again = 0
        while again == 0 and time.monotonic() < deadline:
            again = announcer.announce({"pump-1", "pump.flow", "pump-2"})
            time.sleep(0.05)
        assert again == 3
    finally:
        announcer.stop()
        listener.loop_stop()
        listener.disconnect()
    # Retained: a late subscriber (Home Assistant starting later) still gets them.
    late: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ha-late")
    client.on_message = lambda c, u, m: late.put(m)
    client.connect(broker.host, broker.port)
    client.subscribe("homeassistant/binary_sensor/gw7/pump-2/config")
    client.loop_start()
    try:
        message = late.get(timeout=5)
        assert message.retain and json.loads(message.payload)["name"] == "pump-2 alert"
    finally:
        client.loop_stop()
        client.disconnect()
