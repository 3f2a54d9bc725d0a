"""Serial ports that come and go: pseudo-terminals closed and re-created behind a by-id link.

A USB adapter that is unplugged makes reads fail (the pty master closed: EIO on the slave);
plugged in again it appears under the same /dev/serial/by-id name (here: a symlink to a new
pty). Over 100 such cycles the reader must recover every time and leak neither file
descriptors nor threads.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import serial

from gateway.config import SerialSource
from gateway.sources.serial import SerialReader, open_port
from tests.helpers import ListSink, wait_for

CYCLES = 100


def open_fds() -> dict[str, str]:
    """Open file descriptors and what they point at (for a readable failure)."""
    fds: dict[str, str] = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return fds


def section(port: str, **kwargs: Any) -> SerialSource:
    values: dict[str, Any] = {
        "type": "serial",
        "name": "line-a",
        "port": port,
        "fields": ["temperature", "pressure"],
        "read_timeout": 0.05,
        "reconnect_min": 0.01,
        "reconnect_max": 0.05,
    }
    values.update(kwargs)
    return SerialSource.model_validate(values)


class Adapter:
    """A USB serial adapter behind a stable by-id name."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = self.slave = -1

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(os.ttyname(self.slave))

    def unplug(self) -> None:
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = -1

    def send(self, data: bytes) -> None:
        os.write(self.master, data)


@pytest.mark.slow
def test_100_unplug_replug_cycles_recover_without_leaking(tmp_path: Path) -> None:
    adapter = Adapter(tmp_path / "usb-FTDI_FT232R-if00-port0")
    adapter.plug()
    sink = ListSink()
    reader = SerialReader(section(str(adapter.link)), sink)
    reader.start()
    baseline: tuple[dict[str, str], int] | None = None
    try:
        for cycle in range(CYCLES + 1):
            # pyserial flushes input at open: the device talks once the port is open again.
            wait_for(
                lambda c=cycle: reader.stats()["connected"] and sink.count("port_recovered") == c
            )
            adapter.send(f"{cycle},{cycle}.5\r\n".encode())
            wait_for(lambda c=cycle: len(sink.readings()) == 2 * (c + 1))
            if cycle == 1:  # measured in the same state as at the end: plugged in, reading
                baseline = (open_fds(), threading.active_count())
            adapter.send(b"99,")  # half a line when the cable is pulled
            wait_for(lambda: reader._framer.pending == b"99,")
            adapter.unplug()
            wait_for(lambda c=cycle: sink.count("port_lost") == c + 1)
            adapter.plug()
        wait_for(lambda: reader.stats()["connected"])
        adapter.send(b"1,2\n")
        wait_for(lambda: len(sink.readings()) == 2 * (CYCLES + 2))
        assert baseline is not None
        fds = open_fds()
        assert len(fds) <= len(baseline[0]), {k: v for k, v in fds.items() if k not in baseline[0]}
        assert threading.active_count() == baseline[1]
    finally:
        reader.stop()
        assert reader.join(5.0)
        if adapter.master >= 0:
            adapter.unplug()
    values = [r.value for r in sink.readings() if r.stream == "temperature"]
    assert values == [*range(CYCLES + 1), 1]
    assert sink.count("port_lost") == CYCLES + 1 and sink.count("port_recovered") == CYCLES + 1
    # The half line of every cycle is a dead letter, not silently dropped.
    assert [d.reason for d in sink.dead()] == ["partial_line"] * (CYCLES + 1)
    stats = reader.stats()
    assert stats["reconnects"] == CYCLES + 1 and stats["errors"] == 0


def test_regex_lines_over_loop() -> None:
    ports: list[Any] = []

    def opener(cfg: SerialSource) -> Any:
        ports.append(open_port(cfg))
        return ports[-1]

    sink = ListSink()
    cfg = section(
        "loop://",
        format="regex",
        fields=[],
        pattern=r"T=(?P<temperature>\S+) P=(?P<pressure>\S+)",
        units={"pressure": {"scale": 0.001, "unit": "bar"}},
    )
    reader = SerialReader(cfg, sink, opener)
    reader.start()
    try:
        wait_for(lambda: ports)
        ports[0].write(b"#12 T=21.5 P=1013\r\nboot banner v1.2\r\nT=22 P=1000\n")
        wait_for(lambda: len(sink.readings()) == 4 and sink.dead())
    finally:
        reader.stop()
        assert reader.join(5.0)
    assert [(r.stream, r.value, r.unit) for r in sink.readings()][:2] == [
        ("temperature", 21.5, None),
        ("pressure", pytest.approx(1.013), "bar"),
    ]
    assert [d.reason for d in sink.dead()] == ["no_match"]


def test_socket_url_server_restart_is_lost_and_recovered() -> None:
    """socket:// (a serial device server, e.g. a Moxa NPort): the server goes away and
    comes back on the same port."""
    import socket as socketlib

    server = socketlib.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    sink = ListSink()
    reader = SerialReader(section(f"socket://127.0.0.1:{port}"), sink)
    reader.start()
    try:
        conn, _ = server.accept()
        # pyserial's socket:// discards what arrives while it opens: wait until it is open.
        wait_for(lambda: reader.stats()["connected"])
        conn.sendall(b"1,2\n")
        wait_for(lambda: len(sink.readings()) == 2)
        conn.close()
        server.close()
        wait_for(lambda: sink.count("port_lost") == 1)
        server = socketlib.create_server(("127.0.0.1", port))
        conn, _ = server.accept()
        wait_for(lambda: reader.stats()["connected"])
        conn.sendall(b"3,4\n")
        wait_for(lambda: len(sink.readings()) == 4 and sink.count("port_recovered") == 1)
        conn.close()
    finally:
        reader.stop()
        assert reader.join(5.0)
        server.close()
    assert [r.value for r in sink.readings()] == [1, 2, 3, 4]


def test_serial_exception_class_is_an_oserror() -> None:
    # The reader and pymodbus both rely on this: a lost port surfaces as OSError.
    assert issubclass(serial.SerialException, OSError)
