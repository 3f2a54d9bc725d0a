"""Where alerts and events leave the gateway, read from the store's outbox.

base           Output, DeliveryLoop  the seam, and the one outbox -> output thread per output
mqtt           MqttOutput, Forwarder an MQTT broker (at least once, PUBACK-checked)
webhook        WebhookOutput         HTTP POST of JSON, HMAC-SHA256 signed
alertmanager   AlertmanagerOutput    alerts as Prometheus Alertmanager alerts
homeassistant  Announcer             opt-in Home Assistant MQTT discovery on the upstream broker

A new output type is a module here with an ``Output`` subclass that has
``from_section(section, gateway_id)``, its config section in a module of the same name
in gateway/config/outputs/ (a member of ``OutputSection`` there), and its line in
``OUTPUT_TYPES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.outputs.base import DeliveryLoop, Output
from gateway.store import Durability

# type tag -> (module, class)
OUTPUT_TYPES: dict[str, tuple[str, str]] = {
    "mqtt": ("gateway.outputs.mqtt", "MqttOutput"),
    "webhook": ("gateway.outputs.webhook", "WebhookOutput"),
    "alertmanager": ("gateway.outputs.alertmanager", "AlertmanagerOutput"),
}

__all__ = ["OUTPUT_TYPES", "DeliveryLoop", "Output", "build_output", "delivery_loop"]


def build_output(section: Any, gateway_id: str) -> Output:
    """The output for one ``outputs:`` entry (``section.type`` picks the class)."""
    try:
        module, name = OUTPUT_TYPES[section.type]
    except KeyError:
        raise ValueError(f"unknown output type {section.type!r}") from None
    output: Output = getattr(importlib.import_module(module), name).from_section(
        section, gateway_id
    )
    return output


def delivery_loop(
    section: Any,
    gateway_id: str,
    database: Path,
    durability: Durability,
    outputs: Sequence[str],
) -> DeliveryLoop:
    """The thread that feeds one configured output from the outbox."""
    return DeliveryLoop(build_output(section, gateway_id), database, durability, outputs=outputs)
