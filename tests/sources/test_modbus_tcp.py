"""The Modbus poller over TCP (#15 item 4) against a real pymodbus TCP server on a loopback
port (tests/sources/modbus_tcp_server.py): the same poller, decode, dead letters and events
as on RTU; only the connection differs."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from modbus_tcp_server import TcpServer, unit
from pymodbus.constants import ExcCodes
from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.config import ModbusSource, load_config, parse_config
from gateway.errors import ConfigError
from gateway.sources import build_source
from gateway.sources.modbus import ModbusPoller
from tests.conftest import free_port
from tests.helpers import ListSink, wait_for

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def words(value: float) -> list[int]:
    raw = struct.pack(">f", value)
    return [int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")]


FLOW = words(12.5)
# Unit 1, a meter: raw words as the device holds them.
METER = {
    "holding": {0: FLOW[1], 1: FLOW[0], 3: 0x0001, 4: 0x86A0, 6: 0x3412},
    "inputs": {2: (-215) & 0xFFFF},
    "coils": {5: True},
}


def meter(**extra: Any) -> Any:
    return unit(1, holding=METER["holding"], inputs=METER["inputs"], coils=METER["coils"], **extra)


@pytest.fixture
def server() -> Iterator[TcpServer]:
    server = TcpServer(free_port(), [meter()])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def config(port: int, slaves: list[dict[str, Any]], **extra: Any) -> ModbusSource:
    return ModbusSource.model_validate(
        {
            "type": "modbus",
            "name": "plc",
            "transport": "tcp",
            "host": "127.0.0.1",
            "port": port,
            "reconnect_min": 0.05,
            "reconnect_max": 0.2,
            "slaves": slaves,
            **extra,
        }
    )


UNIT_1 = {
    "id": 1,
    "name": "meter",
    "poll_interval": 0.05,
    "timeout": 0.5,
    "stream_prefix": "meter.",
    "registers": [
        {"stream": "flow", "address": 0, "type": "float32", "word_order": "little", "unit": "m3/h"},
        {"stream": "temp", "address": 2, "function": "input", "type": "int16", "scale": 0.1},
        {"stream": "energy", "address": 3, "type": "uint32", "offset": -100, "unit": "kWh"},
        {"stream": "running", "address": 5, "function": "coil"},
        {"stream": "swapped", "address": 6, "byte_order": "little"},
    ],
}


def run(source: ModbusPoller, until: Any) -> None:
    source.start()
    try:
        wait_for(until)
    finally:
        source.stop()
        assert source.join(5.0)


def test_registers_of_every_kind_become_readings(server: TcpServer) -> None:
    sink = ListSink()
    source = build_source(config(server.port, [UNIT_1]), sink)
    assert isinstance(source, ModbusPoller)
    run(source, lambda: len(sink.readings("meter.swapped")) >= 3)
    first = {r.stream: (r.value, r.unit) for r in sink.readings()[:5]}
    assert first == {
        "meter.flow": (12.5, "m3/h"),
        "meter.temp": (pytest.approx(-21.5), None),
        "meter.energy": (99_900.0, "kWh"),
        "meter.running": (1.0, None),
        "meter.swapped": (0x1234, None),
    }
    stats = source.stats()
    assert sink.dead() == [] and stats["errors"] == 0 and sink.events() == []
    assert stats["port"] == f"127.0.0.1:{server.port}"
    assert stats["slaves"]["meter"]["failures"] == 0 and stats["timeouts"] == 0


def test_an_unmapped_address_is_a_dead_letter_and_the_rest_is_read(server: TcpServer) -> None:
    slave = {
        **UNIT_1,
        "registers": [{"stream": "ok", "address": 3}, {"stream": "no", "address": 9}],
    }
    sink = ListSink()
    source = ModbusPoller(config(server.port, [slave]), sink)
    run(source, lambda: len(sink.dead()) >= 2 and len(sink.readings("meter.ok")) >= 2)
    assert {r.value for r in sink.readings("meter.ok")} == {1.0}
    assert sink.readings("meter.no") == []
    dead = sink.dead()[0]
    assert dead.reason == "modbus_exception" and "code 2" in dead.detail, dead
    # An exception reply is an answer: the unit is not lost for it.
    assert sink.events() == [] and source.stats()["slaves"]["meter"]["failures"] == 0


def test_server_down_and_back_on_the_same_port(server: TcpServer) -> None:
    sink = ListSink()
    source = ModbusPoller(config(server.port, [UNIT_1]), sink)
    where = f"127.0.0.1:{server.port}"
    source.start()
    try:
        wait_for(lambda: sink.readings("meter.flow"))
        server.stop()
        wait_for(lambda: sink.events("port_lost"))
        assert source.stats()["connected"] is False
        n = len(sink.readings("meter.flow"))
        server.start()
        wait_for(lambda: sink.events("port_recovered"))
        wait_for(lambda: len(sink.readings("meter.flow")) > n)
    finally:
        source.stop()
        assert source.join(5.0)
    lost, recovered = sink.events("port_lost"), sink.events("port_recovered")
    assert len(lost) == 1 and len(recovered) == 1  # refused retries are not new events
    assert lost[0].detail["port"] == where and recovered[0].detail["port"] == where
    assert source.stats()["reconnects"] == 1 and source.stats()["errors"] == 0
    assert {r.value for r in sink.readings("meter.flow")} == {12.5}


def test_no_server_yet_is_port_lost_then_recovered() -> None:
    server = TcpServer(free_port(), [meter()])
    sink = ListSink()
    source = ModbusPoller(config(server.port, [UNIT_1]), sink)
    source.start()
    try:
        wait_for(lambda: sink.events("port_lost"))
        assert "cannot connect to 127.0.0.1:" in sink.events("port_lost")[0].detail["error"]
        server.start()
        wait_for(lambda: sink.events("port_recovered") and sink.readings("meter.flow"))
    finally:
        source.stop()
        assert source.join(5.0)
        server.stop()


class Reachable:
    """A gateway's view of the RTU unit behind it: when unreachable it answers exception 11
    (gateway target device failed to respond), as TCP-to-RTU gateways do."""

    def __init__(self) -> None:
        self.up = False

    async def answer(self, *_: Any, **__: Any) -> ExcCodes | None:
        return None if self.up else ExcCodes.GATEWAY_NO_RESPONSE


def test_a_unit_the_gateway_cannot_reach_is_lost_then_recovered() -> None:
    behind = Reachable()
    server = TcpServer(free_port(), [meter(), unit(9, holding={0: 42}, action=behind.answer)])
    server.start()
    far = {
        "id": 9,
        "poll_interval": 0.05,
        "timeout": 0.5,
        "backoff_max": 0.2,
        "registers": [{"stream": "far.level", "address": 0}],
    }
    sink = ListSink()
    source = ModbusPoller(config(server.port, [UNIT_1, far]), sink)
    source.start()
    try:
        wait_for(lambda: sink.events("slave_lost"))
        failures = source.stats()["slaves"]["slave-9"]["failures"]
        behind.up = True
        wait_for(lambda: sink.events("slave_recovered") and sink.readings("far.level"))
    finally:
        source.stop()
        assert source.join(5.0)
        server.stop()
    lost = sink.events("slave_lost")
    assert len(lost) == 1 and lost[0].detail["id"] == 9 and "code 11" in lost[0].detail["error"]
    assert failures >= 2  # lost after two misses in a row, not one
    assert sink.dead() == []  # "no answer" is a missed poll, not a dead letter per request
    assert sink.readings("far.level")[0].value == 42.0
    assert sink.readings("meter.flow")  # the other unit on the connection was read meanwhile
    assert sink.events("port_lost") == []


@pytest.mark.slow
def test_a_silent_unit_times_out_without_holding_up_the_others() -> None:
    async def silent(*_: Any, **__: Any) -> None:
        # Never answers. (Not "answers late": pymodbus' server keeps one request per
        # connection, so a late answer would go out under the next request's transaction id,
        # which no real device does.)
        await asyncio.sleep(3600)

    server = TcpServer(free_port(), [meter(), unit(4, holding={0: 3}, action=silent)])
    server.start()
    slow = {
        "id": 4,
        "poll_interval": 0.05,
        "timeout": 0.1,
        "backoff_max": 1.0,
        "registers": [{"stream": "slow.level", "address": 0}],
    }
    sink = ListSink()
    source = ModbusPoller(config(server.port, [UNIT_1, slow]), sink)
    source.start()
    try:
        wait_for(lambda: sink.events("slave_lost"))
        before = len(sink.readings("meter.flow"))
        wait_for(lambda: len(sink.readings("meter.flow")) >= before + 40)
        stats = source.stats()["slaves"]
    finally:
        source.stop()
        assert source.join(5.0)
        server.stop()
    assert [e.detail["slave"] for e in sink.events("slave_lost")] == ["slave-4"]
    # Backed off: each try costs a whole timeout, so the silent unit is tried far less often.
    assert stats["meter"]["polls"] > 3 * stats["slave-4"]["failures"]
    assert stats["slave-4"]["failures"] >= 2 and stats["slave-4"]["polls"] == 0
    assert {r.value for r in sink.readings("meter.flow")} == {12.5} and sink.dead() == []
    assert sink.readings("slow.level") == []


# --- config ----------------------------------------------------------------------------------

TCP = "sources:\n  - type: modbus\n    name: plc\n    transport: tcp\n    host: 10.0.0.5\n"
SLAVES = "    slaves: [{id: 1, registers: [{stream: a, address: 0}]}]\n"


def test_tcp_config_defaults_and_refusals() -> None:
    section = parse_config(TCP + SLAVES).sources[0]
    assert isinstance(section, ModbusSource)
    assert (section.host, section.port, section.where) == ("10.0.0.5", 502, "10.0.0.5:502")
    assert section.baudrate is None and section.parity is None
    v6 = parse_config(TCP.replace("10.0.0.5", "'::1'") + "    port: 1502\n" + SLAVES).sources[0]
    assert isinstance(v6, ModbusSource) and v6.where == "[::1]:1502"
    rtu = parse_config(
        "sources:\n  - type: modbus\n    name: bus\n    port: /dev/ttyUSB0\n" + SLAVES
    ).sources[0]
    assert isinstance(rtu, ModbusSource) and rtu.transport == "rtu"
    assert (rtu.baudrate, rtu.bytesize, rtu.parity, rtu.stopbits) == (19200, 8, "E", 1)
    assert rtu.host is None and rtu.where == "/dev/ttyUSB0"
    cases = {
        TCP + "    baudrate: 9600\n    parity: N\n" + SLAVES: (
            "baudrate, parity: serial line settings, not for transport tcp"
        ),
        TCP.replace("    host: 10.0.0.5\n", "") + SLAVES: "transport tcp needs host",
        TCP + "    port: /dev/ttyUSB0\n" + SLAVES: "a TCP port number, 1-65535",
        TCP + "    port: 70000\n" + SLAVES: "a TCP port number, 1-65535",
        TCP.replace("10.0.0.5", "'plc 1'") + SLAVES: "not a host name or address",
        TCP.replace("10.0.0.5", "'tcp://plc:502/'") + SLAVES: "not a host name or address",
        TCP.replace("transport: tcp", "transport: rtu\n    port: /dev/ttyUSB0") + SLAVES: (
            "host is for transport tcp"
        ),
        TCP.replace("host: 10.0.0.5", "port: 502").replace("transport: tcp", "transport: rtu")
        + SLAVES: "a serial device or pyserial URL",
        TCP.replace("tcp", "udp") + SLAVES: "transport",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_config(text, "plc.yaml")
        assert expected in str(info.value), (text, str(info.value))
        assert "plc.yaml:" in str(info.value)


def test_the_shipped_tcp_example_validates_and_shows_as_it_loads(tmp_path: Path) -> None:
    path = CONFIG_DIR / "modbus-tcp.yaml"  # tests/config validates every shipped config
    runner = CliRunner()
    config = load_config(path)
    section = config.sources[0]
    assert isinstance(section, ModbusSource) and section.transport == "tcp"
    shown = runner.invoke(app, ["config", "show", "-c", str(path)])
    assert shown.exit_code == 0, shown.output
    again = tmp_path / "shown.yaml"
    again.write_text(shown.output)
    assert load_config(again).sources == config.sources
