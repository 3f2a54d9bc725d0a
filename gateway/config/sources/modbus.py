"""The ``type: modbus`` source's section (the driver: gateway/sources/modbus.py)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import Duration, Name, Section


class ModbusRegister(Section):
    """One value read from a slave: a holding/input register run, a coil or a discrete input."""

    stream: Name = Field(
        description="the stream name (the slave's stream_prefix is put in front)", examples=["flow"]
    )
    address: int = Field(
        ge=0,
        le=65535,
        description="0-based protocol address (register 40001 is address 0)",
        examples=[0],
    )
    function: Literal["holding", "input", "coil", "discrete"] = Field(
        "holding", description="holding, input, coil or discrete"
    )
    type: Literal["int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"] = (
        Field(
            "uint16",
            description="int16, uint16, int32, uint32, float32, int64, uint64 or float64 "
            "(coils and discrete inputs: leave out)",
        )
    )
    byte_order: Literal["big", "little"] = Field(
        "big", description="bytes inside each 16-bit register: big or little"
    )
    word_order: Literal["big", "little"] = Field(
        "big", description="big: the first register holds the high word; or little"
    )
    scale: float = Field(1.0, description="value = raw * scale + offset")
    offset: float = Field(0.0, description="added after scaling")
    unit: str | None = Field(None, description="unit shown with the stream")

    @model_validator(mode="after")
    def _bits_are_plain(self) -> ModbusRegister:
        if self.function in ("coil", "discrete") and self.type != "uint16":
            raise ValueError("coils and discrete inputs are bits: leave 'type' out")
        if self.address + register_count(self.type) > 65536:
            raise ValueError("the value runs past register 65535")
        return self


def register_count(dtype: str) -> int:
    """16-bit registers a value of this type occupies."""
    return {"16": 1, "32": 2, "64": 4}[dtype[-2:]]


class ModbusSlave(Section):
    id: int = Field(
        ge=1, le=247, description="the slave's (unit's) address on the bus, 1-247", examples=[1]
    )
    name: Name | None = Field(None, description="for events and logs; left out: slave-<id>")
    poll_interval: Duration = Field(1.0, ge=0.01, description="how often its registers are read")
    timeout: Duration = Field(
        0.5,
        gt=0.0,
        le=30.0,
        description="per request: a dead slave costs this much of the bus's time",
    )
    backoff_max: Duration = Field(
        30.0, gt=0.0, description="a failing slave is retried at most this rarely"
    )
    stream_prefix: str = Field("", description="put in front of each register's stream name")
    registers: list[ModbusRegister] = Field(
        min_length=1, description="the values read from it (at least one)"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        # Filled in here, so that `config show` prints the name events and logs use.
        slave = data.get("id") if isinstance(data, dict) else None
        if isinstance(slave, int | str) and str(slave).isdigit() and data.get("name") is None:
            data = {**data, "name": f"slave-{int(slave)}"}
        return data

    @property
    def label(self) -> str:
        assert self.name is not None  # filled in by _default_name
        return self.name


# The serial line's settings and their defaults, for ``transport: rtu``; on TCP they mean
# nothing and are refused. Filled in before validation, so `config show` prints them for an
# RTU bus and leaves them out (null) for a TCP connection.
RTU_DEFAULTS: dict[str, Any] = {"baudrate": 19200, "bytesize": 8, "parity": "E", "stopbits": 1}
TCP_PORT = 502
# A host name (RFC 1123 letters, digits, dots, hyphens) or an IPv4/IPv6 address (hex, colons,
# a %zone): no spaces, no scheme, no port.
_HOST = re.compile(r"[A-Za-z0-9_.:%-]{1,253}")


class ModbusSource(Section):
    """One Modbus connection polled by one thread, with any number of slaves: an RS-485 bus
    (RTU, one serial port) or one TCP connection (a device, or a gateway to an RTU bus,
    whose unit ids are the slaves' ids)."""

    type: Literal["modbus"] = Field(
        description="Modbus RTU on an RS-485 bus or Modbus TCP, polled by one thread"
    )
    name: Name = Field(description="the source's name, in events and status", examples=["bus-1"])
    transport: Literal["rtu", "tcp"] = Field(
        "rtu", description="rtu: a serial port (RS-485); tcp: a Modbus TCP server (host, port)"
    )
    host: str | None = Field(
        None,
        description="tcp: the server's address or name (required); rtu: leave out",
    )
    port: str | int = Field(
        description=f"rtu: as for serial (required); tcp: the TCP port ({TCP_PORT})",
        examples=["/dev/ttyUSB0"],
    )
    baudrate: int | None = Field(
        None,
        ge=50,
        le=4_000_000,
        description=f"rtu: bits per second ({RTU_DEFAULTS['baudrate']}); tcp: leave out",
    )
    bytesize: Literal[7, 8] | None = Field(
        None, description=f"rtu: data bits, 7 or 8 ({RTU_DEFAULTS['bytesize']}); tcp: leave out"
    )
    parity: Literal["N", "E", "O"] | None = Field(
        None,
        description=f"rtu: N, E or O ({RTU_DEFAULTS['parity']}: Modbus RTU's default is 8E1); "
        "tcp: leave out",
    )
    stopbits: Literal[1, 2] | None = Field(
        None, description=f"rtu: 1 or 2 ({RTU_DEFAULTS['stopbits']}); tcp: leave out"
    )
    reconnect_min: Duration = Field(
        0.5,
        gt=0.0,
        le=60.0,
        description="a lost port or connection is reopened after this, the wait doubling...",
    )
    reconnect_max: Duration = Field(2.0, gt=0.0, le=300.0, description="...up to this")
    slaves: list[ModbusSlave] = Field(
        min_length=1,
        description="the devices on the bus, or the unit ids behind the TCP server (at least one)",
    )

    @field_validator("host")
    @classmethod
    def _host_is_a_name(cls, value: str | None) -> str | None:
        if value is not None and not _HOST.fullmatch(value):
            raise ValueError(f"{value!r} is not a host name or address (no scheme, no port)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _transport_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        transport = data.get("transport", "rtu")
        given = {k for k, v in data.items() if v is not None}
        if transport == "tcp":
            serial = sorted(given & RTU_DEFAULTS.keys())
            if serial:
                raise ValueError(
                    f"{', '.join(serial)}: serial line settings, not for transport tcp"
                )
            if "host" not in given:
                raise ValueError("transport tcp needs host (the Modbus TCP server's address)")
            return {**data, "port": data.get("port") or TCP_PORT}
        if transport == "rtu":
            if "host" in given:
                raise ValueError(
                    "host is for transport tcp; an RTU bus has a port (a device or pyserial URL)"
                )
            return {**data, **{k: v for k, v in RTU_DEFAULTS.items() if k not in given}}
        return data  # an unknown transport: the Literal says so

    @model_validator(mode="after")
    def _port_fits_transport(self) -> ModbusSource:
        if self.transport == "tcp":
            if isinstance(self.port, str) or not 1 <= self.port <= 65535:
                raise ValueError("port: a TCP port number, 1-65535, for transport tcp")
        elif not isinstance(self.port, str) or not self.port:
            raise ValueError("port: a serial device or pyserial URL for transport rtu")
        return self

    @property
    def where(self) -> str:
        """The port or server, as events, logs and status name it."""
        if self.transport == "tcp":
            host = f"[{self.host}]" if self.host and ":" in self.host else self.host
            return f"{host}:{self.port}"
        return str(self.port)

    @model_validator(mode="after")
    def _unique(self) -> ModbusSource:
        ids = [s.id for s in self.slaves]
        if len(set(ids)) != len(ids):
            raise ValueError("slave ids must be unique on one bus")
        streams = [s.stream_prefix + r.stream for s in self.slaves for r in s.registers]
        dupes = sorted({n for n in streams if streams.count(n) > 1})
        if dupes:
            raise ValueError(f"stream names must be unique: {', '.join(dupes)}")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be below reconnect_min")
        return self
