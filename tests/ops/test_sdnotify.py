"""The notify protocol against a real AF_UNIX datagram socket standing in for systemd's."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ops.sdnotify import Notifier


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(5.0)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def test_ready_status_watchdog_and_stopping(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    assert notifier.ready("running, 2 sources")
    assert sock.recv(4096).decode().splitlines() == ["READY=1", "STATUS=running, 2 sources"]
    assert notifier.status("3 streams")
    assert sock.recv(4096) == b"STATUS=3 streams"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.reloading()
    lines = sock.recv(4096).decode().splitlines()
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_namespace_socket() -> None:
    name = f"liquid-gateway-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(64) == b"READY=1"


def test_watchdog_pings_at_half_of_watchdog_usec(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    sock, path = systemd_socket
    now = [1000.0]
    notifier = Notifier(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())},
        clock=lambda: now[0],
    )
    assert notifier.watchdog_interval == 10.0 and notifier.watchdog_timeout == 20.0
    sent = []
    for _ in range(41):  # 0 .. 40 s in 1 s ticks, as the main loop ticks
        sent.append(notifier.watchdog())
        now[0] += 1.0
    assert [i for i, s in enumerate(sent) if s] == [0, 10, 20, 30, 40]
    sock.settimeout(0.5)
    assert [sock.recv(64) for _ in range(5)] == [b"WATCHDOG=1"] * 5


def test_no_socket_no_watchdog_or_someone_elses() -> None:
    assert not Notifier({}).ready() and not Notifier({}).enabled
    assert Notifier({}).watchdog_interval is None
    other = Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval is None and not other.watchdog()
    unreachable = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify.sock"})
    assert unreachable.ready() is False  # never raises


def test_a_socket_nobody_reads_never_holds_the_caller(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    """The service manager's socket fills when nothing reads it; a blocking send then held
    the daemon's main thread (and its SIGTERM handling) for minutes. Now a send that cannot
    go in time is dropped and counted."""
    import threading

    _, path = systemd_socket  # bound, never read
    notifier = Notifier({"NOTIFY_SOCKET": path}, timeout=0.05)
    outcome: list[bool] = []

    def notify_until_refused() -> None:
        for _ in range(100_000):
            if not notifier.status("x" * 512):
                outcome.append(False)
                return
        outcome.append(True)

    worker = threading.Thread(target=notify_until_refused, daemon=True)
    worker.start()
    worker.join(30.0)
    assert not worker.is_alive(), "a notification blocked on a full socket"
    assert outcome == [False]
    assert notifier.failed == 1
