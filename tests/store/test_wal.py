"""The WAL stays bounded with its checkpoints off the pipeline (#16 item 3): the pipeline's
connection no longer checkpoints in its commits, a ``WalCheckpointer`` on a connection of its
own does, and the WAL is then reused from its start instead of growing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.records import Batch, ScoredReading
from gateway.store import Store, WalCheckpointer
from tests.helpers import wait_for

T0 = 1_000_000.0


def batch(i: int) -> Batch:
    return Batch(
        readings=[
            ScoredReading(f"s{k}", T0 + i, float(k), float(k), 0.1, False) for k in range(200)
        ]
    )


def wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_passive_checkpoints_on_their_own_connection_keep_the_wal_small(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    checkpointer = WalCheckpointer(path)
    with Store.open(path) as store, sqlite3.connect(path, isolation_level=None) as own:
        store.hand_over_wal_checkpoints()
        for i in range(100):
            store.write_batch(batch(i))
        unchecked = wal_bytes(path)  # nobody checkpointed: it only grew
        checkpointer.checkpoint_once(own)
        for i in range(100, 400):
            store.write_batch(batch(i))
            if i % 10 == 0:
                checkpointer.checkpoint_once(own)
        assert wal_bytes(path) <= unchecked  # reused from its start, not grown 4 times
        assert checkpointer.checkpoints == 31 and checkpointer.errors == 0
        assert checkpointer.max_frames > 0


def test_the_thread_checkpoints_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with Store.open(path) as store:
        store.write_batch(batch(0))
        checkpointer = WalCheckpointer(path, every_s=0.01)
        checkpointer.start()
        try:
            wait_for(lambda: checkpointer.checkpoints >= 2, what="two checkpoints")
        finally:
            checkpointer.stop()
        assert not checkpointer.is_alive()
        assert checkpointer.status()["errors"] == 0


def test_a_database_it_cannot_open_is_an_error_counted_not_a_crash(tmp_path: Path) -> None:
    checkpointer = WalCheckpointer(tmp_path / "missing" / "gateway.db", every_s=0.01)
    checkpointer.start()
    wait_for(lambda: not checkpointer.is_alive(), what="the thread ends")
    assert checkpointer.errors == 1 and checkpointer.last_error
