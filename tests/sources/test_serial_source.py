"""The serial source against pyserial's loop:// and real pseudo-terminals."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from gateway.config import SerialSource
from gateway.sources import build_source
from gateway.sources.serial import SerialReader, open_port
from tests.helpers import ListSink, wait_for


def section(port: str, **kwargs: Any) -> SerialSource:
    values: dict[str, Any] = {
        "type": "serial",
        "name": "line-a",
        "port": port,
        "fields": ["temperature", "pressure"],
        "read_timeout": 0.05,
    }
    values.update(kwargs)
    return SerialSource.model_validate(values)


@pytest.fixture
def loop_reader() -> Iterator[tuple[SerialReader, ListSink, list[Any]]]:
    """A reader on loop://; the test writes into the port object the reader opened."""
    ports: list[Any] = []

    def opener(cfg: SerialSource) -> Any:
        port = open_port(cfg)
        ports.append(port)
        return port

    sink = ListSink()
    reader = SerialReader(section("loop://", max_line=32, stream_prefix="a."), sink, opener)
    reader.start()
    wait_for(lambda: ports)
    try:
        yield reader, sink, ports
    finally:
        reader.stop()
        assert reader.join(5.0)


def test_loop_lines_become_readings(loop_reader: tuple[SerialReader, ListSink, list[Any]]) -> None:
    reader, sink, ports = loop_reader
    ports[0].write(b"21.5,1.2\r\n22.0,1.3\n")
    wait_for(lambda: len(sink.readings()) == 4)
    assert [(r.stream, r.value, r.source) for r in sink.readings()] == [
        ("a.temperature", 21.5, "line-a"),
        ("a.pressure", 1.2, "line-a"),
        ("a.temperature", 22.0, "line-a"),
        ("a.pressure", 1.3, "line-a"),
    ]
    stats = reader.stats()
    assert stats["readings"] == 4 and stats["connected"] is True and stats["lines"] == 2


def test_partial_lines_survive_read_timeouts(
    loop_reader: tuple[SerialReader, ListSink, list[Any]],
) -> None:
    reader, sink, ports = loop_reader
    ports[0].write(b"21.")
    wait_for(lambda: reader._framer.pending == b"21.")  # held across read timeouts
    ports[0].write(b"5,1")
    wait_for(lambda: reader._framer.pending == b"21.5,1")
    ports[0].write(b".25\r")
    ports[0].write(b"\n")
    wait_for(lambda: len(sink.readings()) == 2)
    assert [r.value for r in sink.readings()] == [21.5, 1.25]


def test_oversized_and_bad_lines_are_dead_letters_then_good_lines_parse(
    loop_reader: tuple[SerialReader, ListSink, list[Any]],
) -> None:
    reader, sink, ports = loop_reader
    ports[0].write(b"1,2\n" + b"9" * 100)
    wait_for(lambda: sink.dead())
    ports[0].write(b"9" * 50 + b",7\n\n3,4\nnot,numbers\n5,x\n\xff\xfe,6\n7,8\n")
    wait_for(lambda: len(sink.readings()) == 8)
    wait_for(lambda: len(sink.dead()) == 4)
    assert [r.value for r in sink.readings()] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [d.reason for d in sink.dead()] == [
        "line_too_long",
        "not_a_number",
        "not_a_number",  # "5,x": 5 kept, x dead-lettered
        "not_a_number",  # undecodable bytes replaced, then not a number; 6 kept
    ]
    assert sink.dead()[0].payload.startswith("9" * 32)
    stats = reader.stats()
    assert stats["dead_letters"] == {"line_too_long": 1, "not_a_number": 3}
    assert stats["undecodable_lines"] == 1 and stats["blank_lines"] == 1


def test_digits_of_other_scripts_are_dead_letters_not_readings(
    loop_reader: tuple[SerialReader, ListSink, list[Any]],
) -> None:
    reader, sink, ports = loop_reader
    ports[0].write("２１.５,1.2\n21.5,١.٢\n".encode())  # float() takes both
    wait_for(lambda: len(sink.readings()) == 2 and len(sink.dead()) == 2)
    assert [(r.stream, r.value) for r in sink.readings()] == [
        ("a.pressure", 1.2),
        ("a.temperature", 21.5),
    ]
    assert [d.reason for d in sink.dead()] == ["not_a_number", "not_a_number"]
    assert reader.stats()["dead_letters"] == {"not_a_number": 2}


def test_pty_with_kv_lines_and_build_source() -> None:
    master, slave = os.openpty()
    try:
        sink = ListSink()
        cfg = section(os.ttyname(slave), format="kv", fields=[], baudrate=115200)
        reader = build_source(cfg, sink)
        reader.start()
        wait_for(lambda: reader.stats()["connected"])
        os.write(master, b"temperature=21.5 pressure=1.2\r\ntemperature=2")
        os.write(master, b"2.5,pressure=1.25\r\n")
        wait_for(lambda: len(sink.readings()) == 4)
        assert [(r.stream, r.value) for r in sink.readings()][2:] == [
            ("temperature", 22.5),
            ("pressure", 1.25),
        ]
        reader.stop()
        assert reader.join(5.0)
    finally:
        os.close(master)
        os.close(slave)


def test_missing_port_is_lost_then_recovered_when_it_appears(tmp_path: Path) -> None:
    link = tmp_path / "ttyUSB-by-id"
    sink = ListSink()
    reader = SerialReader(section(str(link)), sink)
    reader.start()
    ptys: list[tuple[int, int]] = []
    try:
        lost = wait_for(lambda: sink.events("port_lost"))
        assert lost[0].subject == "line-a" and lost[0].detail["port"] == str(link)
        assert reader.stats()["connected"] is False

        ptys.append(os.openpty())
        link.symlink_to(os.ttyname(ptys[0][1]))
        wait_for(lambda: sink.events("port_recovered"))
        assert len(sink.events("port_lost")) == 1  # reported once, not per retry
        os.write(ptys[0][0], b"1,2\n")
        wait_for(lambda: len(sink.readings()) == 2)

        # The adapter is unplugged: the pty master goes away and reads fail.
        os.write(ptys[0][0], b"3,")  # a partial line, lost with the port
        wait_for(lambda: reader._framer.pending == b"3,")
        os.close(ptys[0][0])
        wait_for(lambda: len(sink.events("port_lost")) == 2)
        assert [d.reason for d in sink.dead()] == ["partial_line"]

        # ...and plugged in again, under the same by-id name.
        ptys[0] = (-1, ptys[0][1])
        ptys.append(os.openpty())
        link.unlink()
        link.symlink_to(os.ttyname(ptys[1][1]))
        wait_for(lambda: len(sink.events("port_recovered")) == 2)
        os.write(ptys[1][0], b"5,6\n")
        wait_for(lambda: len(sink.readings()) == 4)
        stats = reader.stats()
        assert stats["reconnects"] == 2 and stats["connected"] is True
    finally:
        reader.stop()
        assert reader.join(5.0)
        for master, slave in ptys:
            if master >= 0:
                os.close(master)
            os.close(slave)


def test_socket_url_refused_is_port_lost() -> None:
    sink = ListSink()
    reader = SerialReader(section("socket://127.0.0.1:1"), sink)
    reader.start()
    try:
        wait_for(lambda: sink.events("port_lost"))
    finally:
        reader.stop()
        assert reader.join(5.0)
    assert reader.stats()["errors"] == 0


def test_unexpected_error_is_counted_and_the_thread_carries_on() -> None:
    calls: list[int] = []

    def flaky_opener(cfg: SerialSource) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("driver bug")
        return serial.serial_for_url("loop://", timeout=0.05)

    sink = ListSink()
    reader = SerialReader(section("loop://"), sink, flaky_opener)
    reader.start()
    try:
        wait_for(lambda: reader.stats()["connected"])
        assert reader.stats()["errors"] == 1
        assert reader._threads[0].name == "source-line-a" and reader._threads[0].daemon
    finally:
        reader.stop()
        assert reader.join(5.0)
