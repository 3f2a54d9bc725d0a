"""Keeps the write-ahead log bounded without the pipeline paying for it.

SQLite's automatic checkpoint runs inside the commit that crosses ``wal_autocheckpoint``
(1,000 pages): the pipeline's. It copies the WAL into the database file and, at
``synchronous=NORMAL``, syncs it, all inside that commit (#16 item 3 measured commits of
0.7 s and more at 10,000 streams). The pipeline's connection turns the automatic checkpoint
off (``Store.hand_over_wal_checkpoints``) and this thread, on a connection of its own, runs
PASSIVE checkpoints: a passive checkpoint neither waits for the writer nor blocks it, so the
pipeline's commits only append to the WAL.

The WAL starts from its beginning again only when a checkpoint has copied every frame before
the next write transaction begins. A checkpoint on a timer, against a writer that commits
30 times a second, nearly never finishes between two commits: the WAL grew by 80 MB in 30 s
(measured). So the pipeline calls ``committed()`` after each commit and the checkpoint runs
right then, at most every ``every_s``, while the pipeline scores its next batch: it then
usually copies everything and the WAL stays about what ``every_s`` writes.
``journal_size_limit`` (set by ``Store``) truncates the file back after a burst.

The connection belongs to this thread alone (opened, used and closed in it).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class WalCheckpointer:
    def __init__(self, path: Path, every_s: float = 0.2, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        self.every_s = every_s
        self.busy_timeout_s = busy_timeout_s
        self._stop = threading.Event()
        self._committed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self.checkpoints = 0
        self.incomplete = 0  # a reader held frames back, or the writer was busy
        self.max_frames = 0  # the most frames the WAL held at a checkpoint
        self.errors = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._committed.set()
        self._thread.join(timeout)

    def committed(self) -> None:
        """The writer just committed: now is the moment to checkpoint (never blocks)."""
        self._committed.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, self.busy_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        try:
            while not self._stop.wait(self.every_s):
                # Right after the next commit (the writer is busy scoring then), or after
                # every_s without one (the writer is idle).
                self._committed.clear()
                self._committed.wait(self.every_s)
                if not self._stop.is_set():
                    self.checkpoint_once(conn)
        finally:
            conn.close()

    def checkpoint_once(self, conn: sqlite3.Connection) -> None:
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        self.checkpoints += 1
        self.max_frames = max(self.max_frames, int(frames))
        if busy or copied < frames:
            self.incomplete += 1

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.last_error != str(exc):  # once per kind of failure, not once a second
            log.error("WAL checkpoint of %s failed: %s", self.path, exc)
        self.last_error = str(exc)

    def status(self) -> dict[str, Any]:
        return {
            "checkpoints": self.checkpoints,
            "incomplete": self.incomplete,
            "max_frames": self.max_frames,
            "errors": self.errors,
            "last_error": self.last_error,
        }
