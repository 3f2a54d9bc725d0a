"""systemd's notify protocol (READY=1, STATUS=..., WATCHDOG=1), in a few lines of stdlib.

systemd passes ``$NOTIFY_SOCKET`` (an AF_UNIX datagram socket, ``@`` for the abstract
namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``. We ping at
half the watchdog period, as sd_watchdog_enabled(3) advises. With no ``$NOTIFY_SOCKET`` (not
run by systemd) every call is a no-op.

A send waits at most ``SEND_TIMEOUT_S``: a datagram socket whose reader has stopped reading
(a wedged service manager, a test harness that never drains it) fills, and a blocking send
would then hold the daemon's main thread, its signal handling and its shutdown with it. A
notification that cannot go in time is dropped and counted (``failed``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

SEND_TIMEOUT_S = 1.0


class Notifier:
    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = SEND_TIMEOUT_S,
    ) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self._address = address or None
        self._clock = clock
        self._timeout = timeout
        self.failed = 0  # notifications that could not be sent (no reader, a full socket)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        ours = not pid or (pid.isascii() and pid.isdigit() and int(pid) == os.getpid())
        enabled = ours and usec.isascii() and usec.isdigit() and int(usec) > 0
        # The watchdog period in seconds, and how often to ping (half of it).
        self.watchdog_timeout = int(usec) / 1e6 if enabled else None
        self.watchdog_interval = int(usec) / 2e6 if enabled else None
        self._last_ping: float | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> bool:
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(self._timeout)
                sock.sendto("\n".join(lines).encode(), self._address)
        except OSError:  # the timeout included
            self.failed += 1
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", f"STATUS={status}") if status else self.send("READY=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog_due(self) -> bool:
        """True when half the watchdog period has passed since the last ping."""
        if self.watchdog_interval is None:
            return False
        return self._last_ping is None or self._clock() - self._last_ping >= self.watchdog_interval

    def watchdog(self) -> bool:
        """Ping if due; returns whether a ping was sent."""
        if not self.watchdog_due():
            return False
        self._last_ping = self._clock()
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (Type=notify-reload, v253+) match this to the reload.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")
