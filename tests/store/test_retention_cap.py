"""Retention at the size cap (#16 item 3): once the pages in use reach ``max_db_size``,
every batch written deletes the oldest readings (in proportion to the batch, in its own
transaction), so the file stays within 110 % of the cap and its free pages are reused,
also in a database made before ``auto_vacuum = INCREMENTAL`` (no shrinking there)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.records import Batch, ScoredReading
from gateway.store import Retention, Store

CAP = 1_000_000
T0 = 1_000_000.0


def batch(i: int, n: int = 500) -> Batch:
    return Batch(
        readings=[
            ScoredReading(f"s{k % 50}", T0 + i * n + k, float(k), float(k), 0.1, False)
            for k in range(n)
        ]
    )


def file_bytes(store: Store) -> int:
    """The database's size as its file will be once the WAL is checkpointed into it."""
    conn = store._conn
    return int(conn.execute("PRAGMA page_count").fetchone()[0]) * int(
        conn.execute("PRAGMA page_size").fetchone()[0]
    )


@pytest.mark.parametrize("auto_vacuum", ["incremental", "none"])
def test_at_the_cap_writes_delete_the_oldest_and_the_file_stays_within_110_percent(
    tmp_path: Path, auto_vacuum: str
) -> None:
    path = tmp_path / "gateway.db"
    if auto_vacuum == "none":  # a database from before auto_vacuum was set at creation
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE leftover (x)")
    with Store.open(path) as store:
        assert store.incremental_vacuum == (auto_vacuum == "incremental")
        largest = 0
        for i in range(120):  # 60,000 readings, several times what the cap holds
            store.write_batch(batch(i), Retention(CAP))
            largest = max(largest, file_bytes(store))
        assert largest <= 1.1 * CAP
        assert store.trimmed_over_size > 0
        conn = store._conn
        count, oldest, newest = conn.execute(
            "SELECT COUNT(*), MIN(ts), MAX(ts) FROM readings"
        ).fetchone()
        # Oldest first: what is left is the newest readings, without a gap.
        assert newest == T0 + 120 * 500 - 1
        assert newest - oldest == count - 1
        assert 0 < count < 60_000
        summary = conn.execute("SELECT SUM(readings), MIN(first_ts) FROM stream_summary")
        assert summary.fetchone() == (count, oldest)
    assert path.stat().st_size <= 1.1 * CAP  # the WAL checkpointed at close


def test_under_the_cap_readings_past_retention_go_a_batch_at_a_time(tmp_path: Path) -> None:
    with Store.open(tmp_path / "gateway.db") as store:
        for i in range(10):
            store.write_batch(batch(i))
        keep_from = T0 + 8 * 500
        store.write_batch(batch(10), Retention(10 * CAP, expire_before=keep_from))
        # The batch plus a quarter, not all 4,000 expired at once: the next batches go on.
        assert store.trimmed_expired == 500 + 125
        for i in range(11, 18):
            store.write_batch(batch(i), Retention(10 * CAP, expire_before=keep_from))
        oldest = store._conn.execute("SELECT MIN(ts) FROM readings").fetchone()[0]
        assert oldest == keep_from
        assert store.trimmed_expired == 8 * 500


def test_checkpoint_rows_written_at_the_cap_are_made_room_for(tmp_path: Path) -> None:
    """Checkpoint rows in the batches grow the pages in use faster than the batch's own
    readings: the trim deletes as many more readings as the overshoot takes."""
    path = tmp_path / "gateway.db"
    with Store.open(path) as store:
        largest = 0
        for i in range(120):
            b = batch(i)
            # 200 streams' rows, 20 a batch, each larger at every rewrite (1 KB to 3.4 KB):
            # what a checkpoint round does as the streams' histories fill.
            keys = [(i * 20 + k) % 200 for k in range(20)]
            b.states = {f"s{key}": bytes(1000 + 20 * i) for key in keys}
            b.state_model_hash = "m"
            store.write_batch(b, Retention(CAP))
            largest = max(largest, file_bytes(store))
        assert largest <= 1.1 * CAP


def test_over_the_cap_with_no_readings_left_is_reported_not_hidden(tmp_path: Path) -> None:
    """Retention only ever deletes readings: stream state (and alerts, events, the outbox)
    larger than the cap cannot be made room for. The store says by how much it is over, so
    the daemon can tell the operator to raise max_db_size, and says 0 once it fits again."""
    with Store.open(tmp_path / "gateway.db") as store:
        for i in range(3):
            b = batch(i, n=50)
            b.states = {f"s{i}-{k}": bytes(8000) for k in range(100)}  # 800 KB a batch
            b.state_model_hash = "m"
            store.write_batch(b, Retention(CAP))
        assert store._conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 0
        over = store.over_cap_bytes
        assert 1.2 * CAP - CAP < over < 2.5 * CAP - CAP  # ~2.4 MB of state in a 1 MB cap
        store.write_batch(batch(3, n=50), Retention(10 * CAP))
        assert store.over_cap_bytes == 0
        assert store._conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 50


def test_at_the_cap_with_readings_left_nothing_is_reported(tmp_path: Path) -> None:
    with Store.open(tmp_path / "gateway.db") as store:
        for i in range(120):
            store.write_batch(batch(i), Retention(CAP))
            assert store.over_cap_bytes == 0
        assert store.trimmed_over_size > 0
