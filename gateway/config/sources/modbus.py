"""The ``type: modbus`` source's section (the driver: gateway/sources/modbus.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

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


class ModbusSource(Section):
    """One RS-485 bus (one port), polled by one thread, with any number of slaves."""

    type: Literal["modbus"] = Field(description="a Modbus RTU bus (RS-485), polled by one thread")
    name: Name = Field(description="the source's name, in events and status", examples=["bus-1"])
    port: str = Field(description="as for serial", examples=["/dev/ttyUSB0"])
    baudrate: int = Field(19200, ge=50, le=4_000_000, description="bits per second")
    bytesize: Literal[7, 8] = Field(8, description="data bits: 7 or 8")
    parity: Literal["N", "E", "O"] = Field(
        "E", description="N, E or O (Modbus RTU's default is 8E1)"
    )
    stopbits: Literal[1, 2] = Field(1, description="1 or 2")
    reconnect_min: Duration = Field(
        0.5, gt=0.0, le=60.0, description="a lost port is reopened after this, the wait doubling..."
    )
    reconnect_max: Duration = Field(2.0, gt=0.0, le=300.0, description="...up to this")
    slaves: list[ModbusSlave] = Field(
        min_length=1, description="the devices on the bus (at least one)"
    )

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
