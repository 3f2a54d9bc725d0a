"""The ``type: serial`` source's section (the driver: gateway/sources/serial.py)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import Duration, Name, Section


def check_regex(pattern: str | None, timestamp_field: str | None = None) -> re.Pattern[str]:
    """A line pattern for format regex: it must compile and name at least one group."""
    if not pattern:
        raise ValueError("format regex needs a 'pattern' with named groups, e.g. (?P<temp>\\S+)")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"pattern does not compile: {exc}") from exc
    names = set(compiled.groupindex)
    if not names - {timestamp_field}:
        raise ValueError("pattern needs at least one named group (?P<name>...) for a reading")
    return compiled


class FieldSpec(Section):
    """How to turn one raw field into a stream value."""

    scale: float = Field(1.0, description="value = raw * scale + offset")
    offset: float = Field(0.0, description="added after scaling")
    unit: str | None = Field(None, description="unit shown with the stream, e.g. bar")


class SerialSource(Section):
    type: Literal["serial"] = Field(
        description="a serial line: a device, or a pyserial URL (loop://, socket://host:port, rfc2217://host:port)"
    )
    name: Name = Field(description="the source's name, in events and status", examples=["line-a"])
    port: str = Field(
        description="/dev/serial/by-id/... survives re-enumeration; or a pyserial URL",
        examples=["/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"],
    )
    baudrate: int = Field(9600, ge=50, le=4_000_000, description="bits per second")
    bytesize: Literal[5, 6, 7, 8] = Field(8, description="data bits: 5, 6, 7 or 8")
    parity: Literal["N", "E", "O", "M", "S"] = Field("N", description="N, E, O, M or S")
    # A float, not a Literal: a Literal of floats is not a valid type for mypy.
    stopbits: float = Field(1, description="1, 1.5 or 2")
    format: Literal["csv", "kv", "json", "regex"] = Field(
        "csv", description="csv, kv (temperature=21.5 pressure=1013), json or regex"
    )
    fields: list[Name] = Field(
        default_factory=list,
        description="column names (required for csv); for kv and json the keys to take (empty: every number)",
        examples=[["temperature", "pressure"]],
    )
    delimiter: str = Field(
        ",", min_length=1, max_length=1, description="csv column separator (one character)"
    )
    pattern: str | None = Field(
        None,
        max_length=4096,
        description="format regex: named groups are the fields, e.g. T=(?P<temperature>\\S+)",
    )
    timestamp_field: str | None = Field(
        None,
        description="field with the device's time (epoch s or ms, or ISO 8601); null: time of receipt",
    )
    max_line: int = Field(
        4096,
        ge=16,
        le=1_048_576,
        description="longer lines are dead letters (line_too_long), in bytes",
    )
    read_timeout: Duration = Field(1.0, description="how long one read waits")
    stream_prefix: str = Field("", description="stream name = stream_prefix + field name")
    units: dict[str, FieldSpec] = Field(
        default_factory=dict,
        description="scale, offset and unit per field: {field: {scale, offset, unit}}",
    )
    reconnect_min: Duration = Field(
        0.5, gt=0.0, le=60.0, description="a lost port is reopened after this, the wait doubling..."
    )
    reconnect_max: Duration = Field(2.0, gt=0.0, le=300.0, description="...up to this")

    @model_validator(mode="after")
    def _format_needs(self) -> SerialSource:
        if self.format == "csv" and not self.fields:
            raise ValueError("format csv needs a 'fields' list naming the columns")
        if self.format == "regex":
            check_regex(self.pattern, self.timestamp_field)
        elif self.pattern is not None:
            raise ValueError("'pattern' is only used with format regex")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be below reconnect_min")
        return self

    @field_validator("stopbits")
    @classmethod
    def _standard_stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("stopbits must be 1, 1.5 or 2")
        return value
