"""Sensor sources: where readings come from. One small module per kind, registered below.

serial    SerialReader    a serial port or pyserial URL, lines of CSV / key=value / JSON / regex
mqtt      MqttSubscriber  topics on a local broker, JSON or plain-number payloads
modbus    ModbusPoller    Modbus RTU slaves on an RS-485 bus or units behind a Modbus TCP
                          server, polled from register maps
opcua     OpcuaSubscriber variables on an OPC UA server, by data-change subscriptions
simulate  Simulator       the embedded demo: realistic signals with injected faults

The keys are the ``type`` tags of the config's source sections (``SourceSection`` in
gateway/config/sources/, the one list of them, each driver's section in the module of its
name there); tests/sources check that the two agree.
A driver's module is imported when a config uses it: a gateway without OPC UA or Modbus
sources never loads asyncua (about 0.7 s) or pymodbus.
"""

from __future__ import annotations

import importlib
from typing import Any

from gateway.sources.base import Sink, Source

# type tag -> (module, class)
SOURCE_TYPES: dict[str, tuple[str, str]] = {
    "serial": ("gateway.sources.serial", "SerialReader"),
    "mqtt": ("gateway.sources.mqtt", "MqttSubscriber"),
    "simulate": ("gateway.sources.simulate", "Simulator"),
    "modbus": ("gateway.sources.modbus", "ModbusPoller"),
    "opcua": ("gateway.sources.opcua", "OpcuaSubscriber"),
}

__all__ = ["SOURCE_TYPES", "Sink", "Source", "build_source", "source_class"]


def source_class(kind: str) -> type[Source]:
    """The driver class for a source ``type`` (ValueError if there is none)."""
    try:
        module, name = SOURCE_TYPES[kind]
    except KeyError:
        raise ValueError(f"unknown source type {kind!r}") from None
    cls: type[Source] = getattr(importlib.import_module(module), name)
    return cls


def build_source(section: Any, sink: Sink) -> Source:
    """The source for one config section (``section.type`` picks the class)."""
    return source_class(section.type)(section, sink)
