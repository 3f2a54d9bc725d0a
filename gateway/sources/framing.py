"""Cut a serial byte stream into lines — pure, so it can be tested with arbitrary chunking.

Serial reads return whatever bytes have arrived: half a line, three lines, a line split
inside its ``\\r\\n``. The framer keeps the partial line between reads and read timeouts,
accepts ``\\n`` and ``\\r\\n``, and bounds memory: a line longer than ``max_line`` bytes is
reported once as ``Oversize`` (with its first bytes, for the dead letter) and everything up
to the next newline is discarded, so a device that never sends a newline cannot exhaust
memory and the stream resynchronises at the next line.
"""

from __future__ import annotations

from dataclasses import dataclass

OVERSIZE_HEAD = 512  # bytes of an oversized line kept for the dead letter


@dataclass(frozen=True, slots=True)
class Oversize:
    head: bytes  # the first bytes of the line
    max_line: int


class LineFramer:
    def __init__(self, max_line: int) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False

    @property
    def pending(self) -> bytes:
        """The partial line received so far (empty while discarding an oversized line)."""
        return bytes(self._buf)

    def reset(self) -> bytes:
        """Forget the partial line (the port was lost or closed) and return it."""
        partial = bytes(self._buf)
        self._buf.clear()
        self._discarding = False
        return partial

    def feed(self, data: bytes) -> list[bytes | Oversize]:
        """Complete lines (without their terminator) and oversize notices, in order."""
        out: list[bytes | Oversize] = []
        pieces = data.split(b"\n")
        for piece in pieces[:-1]:
            self._take(piece, out)
            self._end_line(out)
        self._take(pieces[-1], out)
        return out

    def _take(self, piece: bytes, out: list[bytes | Oversize]) -> None:
        if self._discarding or not piece:
            return
        room = self.max_line + 1 - len(self._buf)  # +1: a trailing '\r' may still come
        if len(piece) <= room:
            self._buf += piece
            return
        head = bytes(self._buf[:OVERSIZE_HEAD]) + piece[: max(0, OVERSIZE_HEAD - len(self._buf))]
        out.append(Oversize(head, self.max_line))
        self._buf.clear()
        self._discarding = True

    def _end_line(self, out: list[bytes | Oversize]) -> None:
        if self._discarding:
            self._discarding = False
            return
        line = bytes(self._buf)
        self._buf.clear()
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line:
            out.append(Oversize(line[:OVERSIZE_HEAD], self.max_line))
        else:
            out.append(line)
