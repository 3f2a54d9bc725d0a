"""Poll Modbus slaves on one RS-485 bus (RTU) or behind one Modbus TCP server: holding/input
registers, coils, discrete inputs.

One thread owns the bus or connection (RS-485 is half-duplex: one request at a time anyway;
a TCP gateway to such a bus is no faster, and many allow only a few connections) and polls
each slave on its own ``poll_interval``, earliest due first. A slave that does not answer
costs one ``timeout`` and is then backed off (doubling up to ``backoff_max``) so that a dead
or slow slave never holds up the others; after two missed polls in a row it is reported once
as ``slave_lost``, and its return as ``slave_recovered``. A port that cannot be opened or
fails (adapter unplugged), or a TCP server that refuses or drops the connection, is
``port_lost`` / ``port_recovered`` (``port`` names the device or ``host:port``), reopened with
the same back-off as the serial source. A Modbus exception reply (illegal address, ...) is a
dead letter ``modbus_exception``, except a gateway's 10 / 11 (path unavailable, target did not
respond): that is the unit behind it not answering, a missed poll like a timeout. A value
that decodes to NaN or infinity is a dead letter ``non_finite``.

On TCP (``transport: tcp``) the slaves' ids are the unit ids and only the connection differs:
pymodbus' synchronous ``ModbusTcpClient``, connected here so that a refusal is ours to report.
On RTU the protocol is pymodbus' synchronous RTU client; the port is opened here with pyserial
(``serial_for_url``, so ``socket://`` and ``rfc2217://`` work too) so that open errors are
ours to report, and values are decoded here with ``struct`` (``decode_registers``), which
keeps byte and word order explicit and independent of pymodbus' conversion helpers.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import serial
from pymodbus.client import ModbusBaseSyncClient, ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from gateway.config import ModbusRegister, ModbusSlave, ModbusSource, register_count
from gateway.records import Reading
from gateway.sources.base import Sink, Source

log = logging.getLogger(__name__)
# pymodbus logs every timeout at ERROR and every stale byte at WARNING, once per request:
# a dead slave polled for a day would write thousands of lines. We report those ourselves,
# once per transition and rate-limited, so its own logger only speaks for real failures.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

_FORMATS = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "int64": "q",
    "uint64": "Q",
    "float64": "d",
}

PortOpener = Callable[[ModbusSource, float], Any]
# Polls a slave must miss in a row before it is reported lost: one missed reply on RS-485
# is line noise or a collision with another slave's late reply, not a dead device.
LOST_AFTER = 2
# Exception codes a Modbus gateway answers for a unit behind it that it cannot reach (10: no
# path to it, 11: it did not respond): the unit is not answering, not refusing a register.
GATEWAY_NO_ANSWER = frozenset({0x0A, 0x0B})


def decode_registers(
    registers: Sequence[int], dtype: str, byte_order: str, word_order: str
) -> float:
    """16-bit registers -> one number. ``byte_order`` is the order of the two bytes inside
    each register, ``word_order`` the order of the registers (big: most significant first)."""
    if len(registers) != register_count(dtype):
        raise ValueError(f"{dtype} needs {register_count(dtype)} registers, got {len(registers)}")
    words = list(registers) if word_order == "big" else list(reversed(registers))
    raw = b"".join(
        (w & 0xFFFF).to_bytes(2, "big" if byte_order == "big" else "little") for w in words
    )
    return float(struct.unpack(">" + _FORMATS[dtype], raw)[0])


def open_port(section: ModbusSource, timeout: float) -> Any:
    return serial.serial_for_url(
        section.port,
        baudrate=section.baudrate,
        bytesize=section.bytesize,
        parity=section.parity,
        stopbits=section.stopbits,
        timeout=timeout,
        write_timeout=timeout,
        exclusive=True,
    )


def _open_socket(client: ModbusBaseSyncClient) -> bool:
    """Whether the client still holds its port or socket (pymodbus drops it on a fault)."""
    return getattr(client, "socket", None) is not None


@dataclass
class _SlaveState:
    config: ModbusSlave
    next_due: float = 0.0
    backoff: float = 0.0
    lost: bool = False
    missed: int = 0  # failed polls in a row
    polls: int = 0
    failures: int = 0


class ModbusPoller(Source):
    def __init__(self, section: ModbusSource, sink: Sink, opener: PortOpener = open_port) -> None:
        super().__init__(section, sink)
        self.section: ModbusSource = section
        self._opener = opener
        self._client: ModbusBaseSyncClient | None = None
        self._client_lock = threading.Lock()
        self._slaves = [_SlaveState(s) for s in section.slaves]
        self._port_backoff = section.reconnect_min
        self._port_lost = False
        self._requests = 0
        self._timeouts = 0
        self._retries = 0

    def _bodies(self) -> Sequence[Callable[[], None]]:
        return [self._poll_once]

    def _extra_stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "port": self.section.where,
                "requests": self._requests,
                "timeouts": self._timeouts,
                "retries": self._retries,
                "slaves": {
                    s.config.label: {
                        "id": s.config.id,
                        "polls": s.polls,
                        "failures": s.failures,
                        "lost": s.lost,
                    }
                    for s in self._slaves
                },
            }

    # --- the poll loop -------------------------------------------------------------------

    def _poll_once(self) -> None:
        if self._client is None:
            self._open()
            return
        now = time.monotonic()
        slave = min(self._slaves, key=lambda s: s.next_due)
        if slave.next_due > now:
            self._stop.wait(slave.next_due - now)
            return
        self._poll(slave, now)

    def _open(self) -> None:
        timeout = min(s.timeout for s in self.section.slaves)
        try:
            client = self._connect(timeout)
        except (serial.SerialException, OSError, ValueError, ConnectionException) as exc:
            if not self.stopping:
                self._lose_port(exc)
            return
        with self._client_lock:
            self._client = client
        self._port_backoff = self.section.reconnect_min
        recovered = self._port_lost
        self._port_lost = False
        self._set_connected(True, reconnect=recovered)
        if recovered:
            log.info("modbus %s: port %s recovered", self.name, self.section.where)
            self._event("port_recovered", port=self.section.where)
        else:
            log.info("modbus %s: port %s open", self.name, self.section.where)
        now = time.monotonic()
        for state in self._slaves:
            state.next_due = now

    def _connect(self, timeout: float) -> ModbusBaseSyncClient:
        """A connected client: the only part that differs between RTU and TCP."""
        section = self.section
        if section.transport == "tcp":
            assert section.host is not None and isinstance(section.port, int)  # validated
            tcp = ModbusTcpClient(section.host, port=section.port, timeout=timeout, retries=0)
            if not tcp.connect():  # pymodbus logs why (quietened above); we say where
                raise ConnectionException(f"cannot connect to {section.where}")
            return tcp
        baudrate, bytesize, parity, stopbits = (
            section.baudrate,
            section.bytesize,
            section.parity,
            section.stopbits,
        )
        # Filled in for rtu by the config (RTU_DEFAULTS there), never None here.
        assert baudrate and bytesize and parity and stopbits
        port = self._opener(section, timeout)
        client = ModbusSerialClient(
            str(section.port),
            baudrate=baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=stopbits,
            timeout=timeout,
            retries=0,  # a retry is a second timeout on a dead slave; the next poll retries
        )
        client.socket = port  # already open: connect() returns at once and never reopens
        return client

    def _lose_port(self, exc: BaseException) -> None:
        self._close_client()
        self._set_connected(False)
        if not self._port_lost:
            self._port_lost = True
            log.warning("modbus %s: port %s lost: %s", self.name, self.section.where, exc)
            self._event("port_lost", port=self.section.where, error=str(exc)[:200])
        self._stop.wait(self._port_backoff)
        self._port_backoff = min(self._port_backoff * 2, self.section.reconnect_max)

    def _close_client(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("modbus %s: close failed: %s", self.name, exc)

    def _interrupt(self) -> None:
        with self._client_lock:
            port = getattr(self._client, "socket", None)
            cancel = getattr(port, "cancel_read", None)
            if cancel is not None:
                try:
                    cancel()
                except (serial.SerialException, OSError) as exc:
                    log.debug("modbus %s: cancel_read failed: %s", self.name, exc)

    def _cleanup(self) -> None:
        self._close_client()
        self._set_connected(False)

    # --- one slave -----------------------------------------------------------------------

    def _poll(self, state: _SlaveState, started: float) -> None:
        slave = state.config
        client = self._client
        assert client is not None
        # pymodbus waits for a reply by polling in_waiting up to this (per client) timeout;
        # setting it per request gives each slave its own. The port's own read timeout stays
        # as opened: reconfiguring it re-runs tcsetattr, which some drivers (ptys) refuse.
        client.comm_params.timeout_connect = slave.timeout
        readings: list[Reading] = []
        received = time.time()
        for register in slave.registers:
            with self._lock:
                self._requests += 1
            try:
                response = self._read_or_retry(client, slave, register)
            except ConnectionException as exc:
                self._lose_port(exc)
                return
            except (ModbusException, serial.SerialException, OSError) as exc:
                # No answer or a garbled one: the slave (or its cable) is at fault, not the bus.
                if isinstance(exc, serial.SerialException | OSError) and not _open_socket(client):
                    self._lose_port(exc)
                    return
                self._slave_failed(state, exc, started)
                return
            if response.isError():
                code = getattr(response, "exception_code", None)
                if code in GATEWAY_NO_ANSWER:
                    why = f"gateway: unit {slave.id} does not answer (exception code {code})"
                    self._slave_failed(state, ModbusException(why), started)
                    return
                self._dead_letter(
                    "modbus_exception",
                    f"slave {slave.id} {register.function} {register.address}: code {code}",
                    f"{slave.label}: {register.stream}: exception code {code}",
                )
                continue
            reading = self._decode(slave, register, response, received)
            if reading is not None:
                readings.append(reading)
        self._slave_ok(state, started)
        self._emit_readings(readings)

    def _read_or_retry(
        self, client: ModbusBaseSyncClient, slave: ModbusSlave, register: ModbusRegister
    ) -> Any:
        """One request; repeated once if it failed well before the timeout. A dead slave
        always costs the whole timeout; an early failure is a garbled or foreign frame on the
        bus (typically a slow slave's late reply to the previous request), not this slave."""
        started = time.monotonic()
        try:
            return self._read(client, slave.id, register)
        except ConnectionException:
            raise
        except ModbusException:
            if time.monotonic() - started >= slave.timeout / 2:
                raise
        with self._lock:
            self._requests += 1
            self._retries += 1
        return self._read(client, slave.id, register)

    def _read(self, client: ModbusBaseSyncClient, slave_id: int, register: ModbusRegister) -> Any:
        count = register_count(register.type)
        if register.function == "holding":
            return client.read_holding_registers(register.address, count=count, device_id=slave_id)
        if register.function == "input":
            return client.read_input_registers(register.address, count=count, device_id=slave_id)
        if register.function == "coil":
            return client.read_coils(register.address, count=1, device_id=slave_id)
        return client.read_discrete_inputs(register.address, count=1, device_id=slave_id)

    def _decode(
        self, slave: ModbusSlave, register: ModbusRegister, response: Any, received: float
    ) -> Reading | None:
        stream = slave.stream_prefix + register.stream
        try:
            if register.function in ("coil", "discrete"):
                value = 1.0 if response.bits[0] else 0.0
            else:
                count = register_count(register.type)
                value = decode_registers(
                    response.registers[:count],
                    register.type,
                    register.byte_order,
                    register.word_order,
                )
        except (ValueError, IndexError, struct.error) as exc:
            self._dead_letter("bad_response", repr(response)[:200], f"{stream}: {exc}")
            return None
        value = value * register.scale + register.offset
        if not math.isfinite(value):
            self._dead_letter("non_finite", repr(value), f"{stream}: register value not finite")
            return None
        return Reading(
            stream=stream, ts=received, value=value, source=self.name, unit=register.unit
        )

    def _slave_ok(self, state: _SlaveState, started: float) -> None:
        slave = state.config
        with self._lock:
            state.polls += 1
        state.backoff = 0.0
        state.missed = 0
        # The next poll is one interval after this one was due; after a long stall, now.
        state.next_due = max(state.next_due + slave.poll_interval, started)
        if state.lost:
            state.lost = False
            log.info("modbus %s: %s (id %d) answers again", self.name, slave.label, slave.id)
            self._event("slave_recovered", slave=slave.label, id=slave.id, port=self.section.where)

    def _slave_failed(self, state: _SlaveState, exc: BaseException, started: float) -> None:
        slave = state.config
        with self._lock:
            state.failures += 1
            self._timeouts += 1
        state.backoff = min(
            max(state.backoff * 2, slave.poll_interval, slave.timeout), slave.backoff_max
        )
        state.next_due = time.monotonic() + state.backoff
        state.missed += 1
        if not state.lost and state.missed >= LOST_AFTER:
            state.lost = True
            log.warning(
                "modbus %s: %s (id %d) does not answer: %s", self.name, slave.label, slave.id, exc
            )
            self._event(
                "slave_lost",
                slave=slave.label,
                id=slave.id,
                port=self.section.where,
                error=str(exc)[:200],
            )
