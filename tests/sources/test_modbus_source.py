"""The Modbus RTU poller against simulated slaves behind a pseudo-terminal (tests/modbus_sim.py)."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from modbus_sim import RtuBus, SimSlave, crc16

from gateway.config import ModbusSource, parse_config
from gateway.errors import ConfigError
from gateway.sources import build_source
from gateway.sources.modbus import ModbusPoller, decode_registers
from tests.helpers import ListSink, wait_for


def float_words(value: float) -> list[int]:
    raw = struct.pack(">f", value)
    return [int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")]


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[RtuBus]:
    bus = RtuBus(tmp_path / "usb-rs485-by-id")
    try:
        yield bus
    finally:
        bus.close()


def config(port: Path, slaves: list[dict[str, Any]], **extra: Any) -> ModbusSource:
    return ModbusSource.model_validate(
        {
            "type": "modbus",
            "name": "rs485",
            "port": str(port),
            "reconnect_min": 0.05,
            "reconnect_max": 0.2,
            "slaves": slaves,
            **extra,
        }
    )


PUMP = {
    "id": 1,
    "name": "pump-1",
    "poll_interval": 0.05,
    "timeout": 0.2,
    "stream_prefix": "pump-1.",
    "registers": [
        {"stream": "flow", "address": 0, "type": "float32", "word_order": "little", "unit": "m3/h"},
        {"stream": "temp", "address": 2, "function": "input", "type": "int16", "scale": 0.1},
        {"stream": "energy", "address": 3, "type": "uint32", "unit": "kWh"},
        {"stream": "running", "address": 5, "function": "coil"},
        {"stream": "swapped", "address": 6, "type": "uint16", "byte_order": "little"},
    ],
}


def pump_slave() -> SimSlave:
    flow = float_words(12.5)
    regs = {0: flow[1], 1: flow[0], 2: (-215) & 0xFFFF, 3: 0x0001, 4: 0x86A0, 6: 0x3412}
    return SimSlave(registers=regs, bits={5: True})


def test_registers_of_every_type_become_readings(bus: RtuBus) -> None:
    bus.slaves[1] = pump_slave()
    sink = ListSink()
    source = build_source(config(bus.link, [PUMP]), sink)
    assert isinstance(source, ModbusPoller)
    source.start()
    try:
        wait_for(lambda: len(sink.readings("pump-1.swapped")) >= 3)
    finally:
        source.stop()
        assert source.join(5.0)
    first = {r.stream: (r.value, r.unit) for r in sink.readings()[:5]}
    assert first == {
        "pump-1.flow": (12.5, "m3/h"),
        "pump-1.temp": (pytest.approx(-21.5), None),
        "pump-1.energy": (100_000.0, "kWh"),
        "pump-1.running": (1.0, None),
        "pump-1.swapped": (0x1234, None),
    }
    assert sink.dead() == [] and source.stats()["errors"] == 0
    assert source.stats()["slaves"]["pump-1"]["failures"] == 0


@pytest.mark.slow
def test_dead_and_slow_slaves_do_not_stall_the_others(bus: RtuBus) -> None:
    bus.slaves[1] = pump_slave()
    bus.slaves[2] = SimSlave(registers={0: 1}, dead=True)
    bus.slaves[3] = SimSlave(registers={0: 3}, delay=0.3)  # answers after the 0.1 s timeout
    others = [
        {
            "id": sid,
            "poll_interval": 0.05,
            "timeout": 0.1,
            "backoff_max": 1.0,
            "registers": [{"stream": f"s{sid}.level", "address": 0}],
        }
        for sid in (2, 3)
    ]
    sink = ListSink()
    source = ModbusPoller(config(bus.link, [PUMP, *others]), sink)
    source.start()
    try:
        wait_for(lambda: len(sink.events("slave_lost")) == 2)
        before = len(sink.readings("pump-1.flow"))
        wait_for(lambda: len(sink.readings("pump-1.flow")) >= before + 40)
        stats = source.stats()["slaves"]
    finally:
        source.stop()
        assert source.join(5.0)
    assert {e.detail["slave"] for e in sink.events("slave_lost")} == {"slave-2", "slave-3"}
    # Backed off: while the live pump was polled 40+ times, the dead slave was tried far less
    # often (each try costs a whole timeout), and the pump was never reported lost.
    assert stats["slave-2"]["failures"] >= 2 and stats["slave-2"]["polls"] == 0
    assert stats["pump-1"]["polls"] > 3 * stats["slave-2"]["failures"]
    assert not stats["pump-1"]["lost"] and stats["slave-2"]["lost"]
    # Late replies of the slow slave never turn into readings of another slave.
    assert {r.value for r in sink.readings("pump-1.flow")} == {12.5}
    assert sink.readings("s2.level") == []
    assert all(r.value == 3 for r in sink.readings("s3.level"))


def test_slave_recovers_and_exception_replies_are_dead_letters(bus: RtuBus) -> None:
    bus.slaves[4] = SimSlave(registers={0: 7}, dead=True)
    slave = {
        "id": 4,
        "poll_interval": 0.05,
        "timeout": 0.1,
        "backoff_max": 0.2,
        "registers": [{"stream": "ok", "address": 0}, {"stream": "missing", "address": 9}],
    }
    sink = ListSink()
    source = ModbusPoller(config(bus.link, [slave]), sink)
    source.start()
    try:
        wait_for(lambda: sink.events("slave_lost"))
        bus.slaves[4].dead = False
        wait_for(lambda: sink.events("slave_recovered") and sink.readings("ok"))
        wait_for(lambda: sink.dead())
    finally:
        source.stop()
        assert source.join(5.0)
    assert sink.readings("ok")[0].value == 7.0
    assert sink.dead()[0].reason == "modbus_exception" and "code 2" in sink.dead()[0].detail
    assert len(sink.events("slave_lost")) == 1


def test_bus_unplugged_and_plugged_back(bus: RtuBus) -> None:
    bus.slaves[1] = pump_slave()
    sink = ListSink()
    source = ModbusPoller(config(bus.link, [PUMP]), sink)
    source.start()
    try:
        wait_for(lambda: sink.readings("pump-1.flow"))
        bus.unplug()
        wait_for(lambda: sink.events("port_lost"))
        bus.plug()
        wait_for(lambda: sink.events("port_recovered"))
        n = len(sink.readings("pump-1.flow"))
        wait_for(lambda: len(sink.readings("pump-1.flow")) > n)
    finally:
        source.stop()
        assert source.join(5.0)
    assert source.stats()["reconnects"] == 1 and source.stats()["errors"] == 0


def test_crc_of_the_simulator_matches_the_spec_example() -> None:
    # Modbus over serial line spec, section 6.2.2: 01 03 00 00 00 0A -> CRC C5 CD
    assert crc16(bytes.fromhex("01030000000A")) == bytes.fromhex("C5CD")


@pytest.mark.parametrize(
    ("words", "dtype", "byte_order", "word_order", "value"),
    [
        ([0xFFFF], "int16", "big", "big", -1),
        ([0xFFFF], "uint16", "big", "big", 65535),
        ([0x0001, 0x0000], "uint32", "big", "little", 1),
        ([0x0000, 0x0001], "uint32", "big", "big", 1),
        ([0x0100, 0x0000], "uint32", "little", "little", 1),
        ([0xC2C8, 0x0000], "float32", "big", "big", -100.0),
        ([0x0000, 0x0000, 0x0000, 0x0001], "int64", "big", "big", 1),
        ([0x3FF0, 0, 0, 0], "float64", "big", "big", 1.0),
    ],
)
def test_decode_registers(
    words: list[int], dtype: str, byte_order: str, word_order: str, value: float
) -> None:
    assert decode_registers(words, dtype, byte_order, word_order) == value


@given(st.floats(width=32, allow_nan=False), st.booleans(), st.booleans())
def test_decode_float32_round_trip(value: float, swap_bytes: bool, swap_words: bool) -> None:
    words = float_words(value)
    if swap_words:
        words.reverse()
    if swap_bytes:
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    byte_order = "little" if swap_bytes else "big"
    word_order = "little" if swap_words else "big"
    assert decode_registers(words, "float32", byte_order, word_order) == value


def test_modbus_config_is_validated() -> None:
    good = "sources:\n  - type: modbus\n    name: bus\n    port: /dev/ttyUSB0\n    slaves:\n"
    parse_config(good + "      - {id: 1, registers: [{stream: a, address: 0}]}\n")
    cases = {
        "      - {id: 0, registers: [{stream: a, address: 0}]}\n": "sources[0].slaves[0].id",
        "      - {id: 1, registers: [{stream: a, address: 0, type: float16}]}\n": "type",
        "      - {id: 1, registers: [{stream: a, address: 65535, type: float32}]}\n": "past",
        "      - {id: 1, registers: [{stream: a, address: 0, function: coil, type: int32}]}\n": (
            "bits"
        ),
        "      - {id: 1, registers: []}\n": "registers",
        (
            "      - {id: 1, registers: [{stream: a, address: 0}]}\n"
            "      - {id: 1, registers: [{stream: b, address: 0}]}\n"
        ): "unique",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_config(good + text, "bus.yaml")
        assert expected in str(info.value), str(info.value)
        assert "bus.yaml:" in str(info.value)


@pytest.mark.slow
def test_repeated_unplugging_leaks_no_descriptors_or_threads(bus: RtuBus) -> None:
    bus.slaves[1] = SimSlave(registers={0: 42})
    slave = {"id": 1, "poll_interval": 0.01, "registers": [{"stream": "v", "address": 0}]}
    cfg = config(bus.link, [slave], reconnect_min=0.01, reconnect_max=0.02)
    sink = ListSink()
    source = ModbusPoller(cfg, sink)
    source.start()
    baseline: tuple[int, int] | None = None
    try:
        for cycle in range(100):
            n = len(sink.readings())
            wait_for(lambda n=n: len(sink.readings()) > n)
            if cycle == 1:  # plugged in and polling, as at the end
                baseline = (len(os.listdir("/proc/self/fd")), threading.active_count())
            bus.unplug()
            wait_for(lambda c=cycle: len(sink.events("port_lost")) == c + 1)
            bus.plug()
        wait_for(lambda: len(sink.events("port_recovered")) == 100)
        n = len(sink.readings())
        wait_for(lambda: len(sink.readings()) > n)
        assert baseline is not None
        assert len(os.listdir("/proc/self/fd")) <= baseline[0]
        assert threading.active_count() <= baseline[1]
    finally:
        source.stop()
        assert source.join(5.0)
    assert {r.value for r in sink.readings()} == {42.0}
    assert source.stats()["errors"] == 0
