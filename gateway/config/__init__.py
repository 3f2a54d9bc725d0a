"""The configuration: one YAML file, parsed and validated once into typed, frozen sections.

Every component gets its own section through its constructor; nothing past this package sees
YAML or dicts. The loader and the top-level sections live in ``schema.py``; each source
type's section in ``sources/``, each output type's in ``outputs/``, what they are built of
in ``base.py``; ``schema.py`` re-exports them all. This module is the public face other
packages import from.

Imported lazily (PEP 562): ``from gateway.config import X`` loads the module that defines X
on first use, so a command that needs only ``locate.py`` (where the database is) does not
build the pydantic schema (#14 item 10)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config.locate import NAME_PATTERN, demo_config_path, is_name
    from gateway.config.schema import (
        SOURCE_TAGS,
        UPSTREAM_OUTPUT,
        AlertmanagerOutputSection,
        BrokerSection,
        Config,
        ConfigError,
        DetectorSection,
        Duration,
        FieldSpec,
        GatewaySection,
        HomeAssistantSection,
        IngestSection,
        LimitsSection,
        Located,
        MetricsSection,
        ModbusRegister,
        ModbusSlave,
        ModbusSource,
        ModelSection,
        MqttOutputSection,
        MqttSource,
        Name,
        OpcuaNode,
        OpcuaSecurity,
        OpcuaSource,
        OutputSection,
        Section,
        SerialSource,
        SimulateSource,
        Size,
        SourceBrokerSection,
        SourceSection,
        Span,
        StorageSection,
        Subscription,
        TlsSection,
        UpstreamSection,
        WebhookOutputSection,
        check_name,
        check_regex,
        format_duration,
        format_path,
        format_size,
        load_config,
        load_located,
        parse_config,
        parse_duration,
        parse_size,
        parse_span,
        redacted,
        register_count,
    )

__all__ = [
    "AlertmanagerOutputSection",
    "ConfigError",
    "BrokerSection",
    "Config",
    "DetectorSection",
    "Duration",
    "FieldSpec",
    "GatewaySection",
    "HomeAssistantSection",
    "IngestSection",
    "Located",
    "MetricsSection",
    "ModbusRegister",
    "ModbusSlave",
    "ModbusSource",
    "ModelSection",
    "MqttOutputSection",
    "MqttSource",
    "OutputSection",
    "UPSTREAM_OUTPUT",
    "NAME_PATTERN",
    "OpcuaNode",
    "OpcuaSecurity",
    "OpcuaSource",
    "SOURCE_TAGS",
    "Name",
    "Section",
    "SerialSource",
    "SimulateSource",
    "Size",
    "SourceBrokerSection",
    "SourceSection",
    "Span",
    "LimitsSection",
    "StorageSection",
    "Subscription",
    "TlsSection",
    "UpstreamSection",
    "WebhookOutputSection",
    "check_name",
    "check_regex",
    "demo_config_path",
    "format_duration",
    "format_path",
    "format_size",
    "is_name",
    "load_config",
    "load_located",
    "parse_config",
    "parse_duration",
    "parse_size",
    "parse_span",
    "redacted",
    "register_count",
]

_MODULE_OF = {
    name: "gateway.config.locate" for name in ("NAME_PATTERN", "demo_config_path", "is_name")
}
_MODULE_OF |= {name: "gateway.config.schema" for name in __all__ if name not in _MODULE_OF}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later look-ups do not come here
    return value
