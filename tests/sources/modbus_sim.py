"""A Modbus RTU bus with simulated slaves, behind a pseudo-terminal.

Written from the Modbus spec (not with pymodbus), so the tests check that our poller and
pymodbus talk real RTU: function codes 1-4, CRC-16/MODBUS, exception replies. Each slave can
be made dead (never answers) or slow (answers after ``delay`` seconds — after the poller has
given up, so its late reply lands in the middle of the next request, as on a real bus).
The bus can be unplugged (the pty closed) and plugged in again (a new pty behind the same
symlink, like /dev/serial/by-id/...).
"""

from __future__ import annotations

import os
import select
import threading
from dataclasses import dataclass, field
from pathlib import Path


def crc16(data: bytes) -> bytes:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


@dataclass
class SimSlave:
    registers: dict[int, int] = field(default_factory=dict)  # holding and input alike
    bits: dict[int, bool] = field(default_factory=dict)  # coils and discrete inputs alike
    dead: bool = False
    delay: float = 0.0
    requests: int = 0


class RtuBus:
    def __init__(self, link: Path) -> None:
        self.link = link
        self.slaves: dict[int, SimSlave] = {}
        self._master = -1
        self._slave_fd = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.plug()

    def plug(self) -> None:
        """A new pty behind the link (re-creating it, as udev does for a by-id name)."""
        self._master, self._slave_fd = os.openpty()
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(os.ttyname(self._slave_fd))
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, args=(self._master,), daemon=True)
        self._thread.start()

    def unplug(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        os.close(self._master)
        os.close(self._slave_fd)
        self._master = self._slave_fd = -1

    def close(self) -> None:
        if self._master >= 0:
            self.unplug()

    def _serve(self, master: int) -> None:
        buf = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                buf += os.read(master, 256)
            except OSError:
                return
            while len(buf) >= 8:
                frame = buf[:8]
                if crc16(frame[:6]) != frame[6:]:
                    buf = buf[1:]  # resynchronise on the next byte
                    continue
                buf = buf[8:]
                reply, delay = self._answer(frame)
                if reply is None:
                    continue
                if delay:
                    timer = threading.Timer(delay, self._write, args=(master, reply))
                    timer.daemon = True
                    timer.start()
                elif not self._write(master, reply):
                    return

    def _write(self, master: int, reply: bytes) -> bool:
        if self._stop.is_set():
            return False
        try:
            os.write(master, reply)
        except OSError:
            return False
        return True

    def _answer(self, frame: bytes) -> tuple[bytes | None, float]:
        unit, function = frame[0], frame[1]
        address = int.from_bytes(frame[2:4], "big")
        count = int.from_bytes(frame[4:6], "big")
        slave = self.slaves.get(unit)
        if slave is None or slave.dead:
            return None, 0.0
        slave.requests += 1
        return self._reply(slave, unit, function, address, count), slave.delay

    def _reply(self, slave: SimSlave, unit: int, function: int, address: int, count: int) -> bytes:
        if function in (3, 4):
            try:
                words = [slave.registers[a] for a in range(address, address + count)]
            except KeyError:
                return self._exception(unit, function, 2)
            data = b"".join(w.to_bytes(2, "big") for w in words)
        elif function in (1, 2):
            try:
                bits = [slave.bits[a] for a in range(address, address + count)]
            except KeyError:
                return self._exception(unit, function, 2)
            packed = bytearray((count + 7) // 8)
            for i, bit in enumerate(bits):
                if bit:
                    packed[i // 8] |= 1 << (i % 8)
            data = bytes(packed)
        else:
            return self._exception(unit, function, 1)
        body = bytes([unit, function, len(data)]) + data
        return body + crc16(body)

    @staticmethod
    def _exception(unit: int, function: int, code: int) -> bytes:
        body = bytes([unit, function | 0x80, code])
        return body + crc16(body)
