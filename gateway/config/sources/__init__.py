"""The sources' config sections: one module per source type, named as its driver in
gateway/sources, and below the one list of them.

A new source type is a module here with its section (``type: Literal["<tag>"]`` first), its
class in ``SourceSection``, and its driver's line in ``SOURCE_TYPES`` (gateway/sources;
tests/sources check that the two agree). The loader, ``config sample`` and the error paths
follow this list.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gateway.config.base import sections_by_type
from gateway.config.sources.modbus import ModbusSource
from gateway.config.sources.mqtt import MqttSource
from gateway.config.sources.opcua import OpcuaSource
from gateway.config.sources.serial import SerialSource
from gateway.config.sources.simulate import SimulateSource

# The one list of source types, in the order an error lists them. A union, not a dict, so
# that a type checker sees each member; the registry below is read off it.
SourceSection = Annotated[
    SerialSource | MqttSource | SimulateSource | ModbusSource | OpcuaSource,
    Field(discriminator="type"),
]

# type tag -> section class
SOURCE_SECTIONS = sections_by_type(SourceSection)

__all__ = ["SOURCE_SECTIONS", "SourceSection"]
