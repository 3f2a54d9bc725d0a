"""Read lines of sensor text from one serial port (RS-232/RS-485, USB adapters, pyserial URLs).

The port is opened with ``serial.serial_for_url``, so ``/dev/ttyUSB0``,
``/dev/serial/by-id/...``, ``loop://``, ``socket://host:port`` and ``rfc2217://host:port``
all work. One reader thread owns the port. Bytes are framed into lines (``framing.py``),
decoded as UTF-8 with undecodable bytes replaced (and counted), then parsed
(``parsers.py``). A port that cannot be opened, or fails while open (a USB adapter
unplugged), is reported once as ``port_lost`` and reopened with capped backoff
(``reconnect_min`` doubling up to ``reconnect_max``, 2 s by default, so a device that comes
back is read again within about 2 s); when it opens again ``port_recovered`` is reported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import serial

from gateway.config import SerialSource
from gateway.errors import ParseError
from gateway.sources.base import Sink, Source
from gateway.sources.framing import LineFramer, Oversize
from gateway.sources.parsers import RecordParser

log = logging.getLogger(__name__)

PortOpener = Callable[[SerialSource], Any]


def open_port(section: SerialSource) -> Any:
    """Open the configured port; raises serial.SerialException (or OSError) if it cannot."""
    return serial.serial_for_url(
        section.port,
        baudrate=section.baudrate,
        bytesize=section.bytesize,
        parity=section.parity,
        stopbits=section.stopbits,
        timeout=section.read_timeout,
        # Two readers on one port each get half the bytes; refuse a second one instead.
        exclusive=True,
    )


class SerialReader(Source):
    def __init__(self, section: SerialSource, sink: Sink, opener: PortOpener = open_port) -> None:
        super().__init__(section, sink)
        self.section: SerialSource = section
        self._opener = opener
        self._port: Any = None
        self._port_lock = threading.Lock()  # guards _port against stop() from another thread
        self._framer = LineFramer(section.max_line)
        self._parser = RecordParser(
            source=section.name,
            format=section.format,
            fields=section.fields,
            delimiter=section.delimiter,
            timestamp_field=section.timestamp_field,
            units=section.units,
            pattern=section.pattern,
        )
        self._backoff = section.reconnect_min
        self._lost = False
        self._lines = 0
        self._blank_lines = 0
        self._undecodable_lines = 0
        self._bytes = 0

    def _stream_name(self, field: str) -> str:
        return self.section.stream_prefix + field

    def _bodies(self) -> Sequence[Callable[[], None]]:
        return [self._read_once]

    def _extra_stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "port": self.section.port,
                "bytes": self._bytes,
                "lines": self._lines,
                "blank_lines": self._blank_lines,
                "undecodable_lines": self._undecodable_lines,
            }

    # --- the reader loop -----------------------------------------------------------------

    def _read_once(self) -> None:
        port = self._port
        if port is None:
            self._open()
            return
        try:
            # Block (up to read_timeout) for one byte, then take whatever else has arrived.
            data = port.read(port.in_waiting or 1)
        except (serial.SerialException, OSError) as exc:
            if not self.stopping:
                self._lose(exc)
            return
        if data:
            self._backoff = self.section.reconnect_min
            with self._lock:
                self._bytes += len(data)
            self._feed(data, time.time())

    def _open(self) -> None:
        try:
            port = self._opener(self.section)
        except (serial.SerialException, OSError, ValueError) as exc:
            if not self.stopping:
                self._mark_lost(exc)
                self._wait_backoff()
            return
        with self._port_lock:
            self._port = port
        recovered = self._lost
        self._lost = False
        self._set_connected(True, reconnect=recovered)
        if recovered:
            log.info("serial %s: port %s recovered", self.name, self.section.port)
            self._event("port_recovered", port=self.section.port)
        else:
            log.info("serial %s: port %s open", self.name, self.section.port)

    def _lose(self, exc: BaseException) -> None:
        self._close_port()
        self._flush_partial()
        self._mark_lost(exc)
        self._wait_backoff()

    def _mark_lost(self, exc: BaseException) -> None:
        self._set_connected(False)
        if self._lost:
            return
        self._lost = True
        log.warning("serial %s: port %s lost: %s", self.name, self.section.port, exc)
        self._event("port_lost", port=self.section.port, error=str(exc)[:200])

    def _wait_backoff(self) -> None:
        self._stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, self.section.reconnect_max)

    def _close_port(self) -> None:
        with self._port_lock:
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("serial %s: close failed: %s", self.name, exc)

    def _flush_partial(self) -> None:
        partial = self._framer.reset()
        if partial:
            self._dead_letter("partial_line", partial, "the port closed in the middle of a line")

    def _interrupt(self) -> None:
        with self._port_lock:
            port = self._port
            cancel = getattr(port, "cancel_read", None)
            if cancel is not None:
                try:
                    cancel()
                except (serial.SerialException, OSError) as exc:
                    log.debug("serial %s: cancel_read failed: %s", self.name, exc)

    def _cleanup(self) -> None:
        self._close_port()
        self._flush_partial()
        self._set_connected(False)

    # --- lines ---------------------------------------------------------------------------

    def _feed(self, data: bytes, received: float) -> None:
        for item in self._framer.feed(data):
            if isinstance(item, Oversize):
                self._dead_letter(
                    "line_too_long", item.head, f"no newline within {item.max_line} bytes"
                )
            else:
                self._line(item, received)

    def _line(self, raw: bytes, received: float) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            with self._lock:
                self._undecodable_lines += 1
        if not text.strip():
            with self._lock:
                self._blank_lines += 1
            return
        with self._lock:
            self._lines += 1
        try:
            parsed = self._parser.parse(text, received, self._stream_name)
        except ParseError as exc:
            self._dead_letter(exc.reason, raw, exc.detail)
            return
        self._emit(parsed, raw)
