"""The ``type: mqtt`` source's section (the driver: gateway/sources/mqtt.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import BrokerSection, Name, Section
from gateway.config.sources.serial import FieldSpec


class SourceBrokerSection(BrokerSection):
    """A source's broker: as upstream's, but MQTT 3.1.1 unless set. A subscriber uses nothing
    of MQTT 5, and for every PUBLISH paho builds an MQTT 5 ``Properties`` object even when
    there are none: about a tenth of the source thread's time at a few thousand messages/s.
    (The upstream client keeps MQTT 5 by default: it reads PUBACK reason codes.)"""

    protocol: Literal["5", "3.1.1"] = Field(
        "3.1.1",
        description="MQTT version: '3.1.1' (cheaper per message; a subscriber needs nothing of 5) or '5' (the broker then never sends more than max_payload)",
    )


class Subscription(Section):
    topic: str = Field(
        description="topic filter; + and # wildcards, $share/group/... for a shared subscription",
        examples=["plant/+/telemetry"],
    )
    format: Literal["json", "number"] = Field(
        "json", description="json (each number a stream) or number (the payload is one number)"
    )
    qos: Literal[0, 1, 2] = Field(1, description="0, 1 or 2")
    stream: str = Field(
        "",
        description="stream name template: {topic} (/ turned into .), {0}, {1}... (topic levels), {field} (JSON key); left out: {topic}.{field} for json, {topic} for number",
    )
    fields: list[str] = Field(
        default_factory=list, description="JSON keys (or dotted paths) to take; empty: every number"
    )
    timestamp_field: str | None = Field(
        None,
        description="JSON key with the device's time (epoch s or ms, or ISO 8601); null: time of receipt",
    )
    max_payload: int = Field(
        65536,
        ge=16,
        le=16_777_216,
        description="larger payloads are dead letters (payload_too_large), in bytes",
    )
    units: dict[str, FieldSpec] = Field(
        default_factory=dict, description="scale, offset and unit per JSON key or stream name"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_stream(cls, data: Any) -> Any:
        # Filled in here, not where it is used, so that `config show` prints the template used.
        if isinstance(data, dict) and not data.get("stream"):
            number = data.get("format") == "number"
            data = {**data, "stream": "{topic}" if number else "{topic}.{field}"}
        return data

    @field_validator("topic")
    @classmethod
    def _valid_filter(cls, value: str) -> str:
        if not value or "\x00" in value:
            raise ValueError("topic filter must not be empty")
        parts = value.split("/")
        for i, part in enumerate(parts):
            if "#" in part and (part != "#" or i != len(parts) - 1):
                raise ValueError("'#' must be a whole last level of the topic filter")
            if "+" in part and part != "+":
                raise ValueError("'+' must stand for a whole topic level")
        return value


class MqttSource(Section):
    type: Literal["mqtt"] = Field(description="an MQTT broker the sensors publish to")
    name: Name = Field(description="the source's name, in events and status", examples=["plant"])
    broker: SourceBrokerSection = Field(
        default_factory=SourceBrokerSection, description="the broker to subscribe at"
    )
    subscribe: list[Subscription] = Field(
        min_length=1,
        description="what to subscribe to (at least one); renewed after every reconnect",
    )
