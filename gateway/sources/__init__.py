"""Sensor sources: where readings come from. One small module per kind, registered below.

serial    SerialReader    a serial port or pyserial URL, lines of CSV / key=value / JSON / regex
mqtt      MqttSubscriber  topics on a local broker, JSON or plain-number payloads
modbus    ModbusPoller    Modbus RTU slaves on an RS-485 bus, polled from register maps
simulate  Simulator       the embedded demo: realistic signals with injected faults
"""

from __future__ import annotations

from typing import Any

from gateway.sources.base import Sink, Source
from gateway.sources.modbus import ModbusPoller
from gateway.sources.mqtt import MqttSubscriber
from gateway.sources.serial import SerialReader
from gateway.sources.simulate import Simulator

SOURCE_TYPES: dict[str, type[Source]] = {
    "serial": SerialReader,
    "mqtt": MqttSubscriber,
    "simulate": Simulator,
    "modbus": ModbusPoller,
}

__all__ = [
    "SOURCE_TYPES",
    "ModbusPoller",
    "MqttSubscriber",
    "SerialReader",
    "Simulator",
    "Sink",
    "Source",
    "build_source",
]


def build_source(section: Any, sink: Sink) -> Source:
    """The source for one config section (``section.type`` picks the class)."""
    try:
        cls = SOURCE_TYPES[section.type]
    except KeyError:
        raise ValueError(f"unknown source type {section.type!r}") from None
    return cls(section, sink)
