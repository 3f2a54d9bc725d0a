"""Home Assistant discovery, announced to a real Mosquitto broker."""

from __future__ import annotations

import json
import time

import pytest

from gateway.config import BrokerSection, HomeAssistantSection, UpstreamSection
from gateway.outputs.homeassistant import Announcer, discovery_message
from tests.conftest import Broker
from tests.helpers import Subscriber, wait_for


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
    listener = Subscriber(broker, "homeassistant/binary_sensor/#")
    announcer = Announcer(HomeAssistantSection(enabled=True), _upstream(broker), "gw7")
    announcer.start()
    try:
        deadline = time.monotonic() + 10
        sent = 0
        while sent == 0 and time.monotonic() < deadline:
            sent = announcer.announce({"pump-1", "pump.flow"})
            time.sleep(0.05)
        assert sent == 2
        wait_for(lambda: len(listener.messages) >= 2, timeout=5, what="two discovery configs")
        first = listener.messages
        assert {m.topic for m in first} == {
            "homeassistant/binary_sensor/gw7/pump-1/config",
            "homeassistant/binary_sensor/gw7/pump_flow/config",
        }
        assert json.loads(first[0].payload)["device_class"] == "problem"
        assert announcer.announce({"pump-1", "pump.flow"}) == 0  # once per connection
        assert announcer.announce({"pump-1", "pump.flow", "pump-2"}) == 1  # a new stream
        wait_for(lambda: len(listener.messages) >= 3, timeout=5, what="the new stream's")
        # Home Assistant came back: it asks for everything again.
        listener.publish("homeassistant/status", "online")
        deadline = time.monotonic() + 10
        again = 0
        while again == 0 and time.monotonic() < deadline:
            again = announcer.announce({"pump-1", "pump.flow", "pump-2"})
            time.sleep(0.05)
        assert again == 3
    finally:
        announcer.stop()
        listener.close()
    # Retained: a late subscriber (Home Assistant starting later) still gets them.
    with Subscriber(broker, "homeassistant/binary_sensor/gw7/pump-2/config") as late:
        [message] = wait_for(lambda: late.messages, timeout=5, what="the retained config")
        assert message.retain and json.loads(message.payload)["name"] == "pump-2 alert"
