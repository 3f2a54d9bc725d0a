"""The store's answers to the CLI's questions (``db check``, ``db vacuum``, ``plot``), against
real SQLite files: the CLI holds no SQL of its own (tests/repo), so these are the queries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.records import Batch, DeadLetter, Event, ScoredReading
from gateway.store import Store, disk_bytes

T0 = 1_700_000_000.0


def readings(stream: str, n: int, start: float = T0) -> list[ScoredReading]:
    return [ScoredReading(stream, start + i, float(i), float(i), 0.1, i % 7 == 0) for i in range(n)]


def test_health_of_a_sound_database_counts_every_table_of_the_schema(tmp_path: Path) -> None:
    with Store.open(tmp_path / "gateway.db") as store:
        store.write_batch(
            Batch(
                readings=readings("pump.temp", 30) + readings("pump.flow", 5),
                events=[Event("stale", "pump.flow", ts=T0)],
                dead_letters=[DeadLetter("mqtt", "not_json", "{", 1, ts=T0)],
            )
        )
        health = store.health()
        full = store.health(full=True)
    assert health.ok and health.problems == ()
    assert (health.check, full.check) == ("quick_check", "integrity_check") and full.ok
    # The tables as the migrations made them, in that order, without the bookkeeping ones.
    conn = sqlite3.connect(tmp_path / "gateway.db")
    made = [
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")
        if r[0] not in ("meta", "status", "sqlite_sequence")
    ]
    conn.close()
    assert list(health.rows) == made
    assert list(health.rows)[:6] == [
        "readings", "alerts", "events", "outbox", "dead_letters", "stream_state"
    ]  # fmt: skip
    assert health.rows["readings"] == 35 and health.rows["stream_summary"] == 2
    assert health.rows["events"] == 1 and health.rows["dead_letters"] == 1
    assert health.rows["outbox"] == 1 and health.outbox_backlog == 1
    assert health.outbox_oldest is not None
    assert health.bytes_in_use > 0 and health.last_recovery is None


def test_health_names_the_last_recovery_however_many_events_came_after(tmp_path: Path) -> None:
    with Store.open(tmp_path / "gateway.db", outbox=False) as store:
        store.write_batch(
            Batch(events=[Event("database_recovered", "gateway.db", ts=T0, detail={"n": 1})])
        )
        store.write_batch(
            Batch(events=[Event("stale", f"s{i}", ts=T0 + 1 + i) for i in range(1500)])
        )
        recovery = store.health().last_recovery
    assert recovery is not None and recovery["detail"] == {"n": 1} and recovery["ts"] == T0


def test_health_of_a_damaged_file_is_an_answer_not_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with Store.open(path, outbox=False) as store:
        store.write_batch(Batch(readings=readings("pump.temp", 20_000)))
    store = Store.open(path, read_only=True)  # opened while sound; damaged underneath
    try:
        data = bytearray(path.read_bytes())
        for offset in range(4096 * 2, len(data), 4096):
            data[offset + 8 : offset + 64] = b"\xff" * 56
        path.write_bytes(bytes(data))
        health = store.health()
    finally:
        store.close()
    assert not health.ok and health.problems and len(health.problems) <= 20
    assert all(isinstance(p, str) and p for p in health.problems)


def test_reclaim_free_pages_gives_space_back_in_an_incremental_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with Store.open(path, outbox=False) as store:
        assert store.incremental_vacuum
        store.write_batch(Batch(readings=readings("pump.temp", 40_000)))
        store.prune(1.0, 10**12)  # all readings are older than a second: all go
        free_before = store.health().free_bytes
        assert free_before > 0
        before = disk_bytes(path)
        assert store.reclaim_free_pages() == 0
        assert store.health().free_bytes == 0
    assert disk_bytes(path) < before


def test_reclaim_free_pages_stops_in_a_file_made_before_auto_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE leftover (x)")  # not empty: auto_vacuum can no longer change
    with Store.open(path, outbox=False) as store:
        assert not store.incremental_vacuum
        store.write_batch(Batch(readings=readings("pump.temp", 40_000)))
        store.prune(1.0, 10**12)
        free = store.health().free_bytes // 4096
        assert free > 0
        assert store.reclaim_free_pages() > 0  # returns instead of looping: only VACUUM helps
        store.vacuum_full()
        assert store.reclaim_free_pages() == 0


def test_readings_window_is_one_stream_oldest_first_the_newest_when_bounded(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "gateway.db", outbox=False) as store:
        store.write_batch(Batch(readings=readings("a", 100) + readings("b", 100)))
        window = store.readings_window("a", T0 + 50)
        assert [r[0] for r in window] == [T0 + i for i in range(50, 100)]
        assert window[6] == (T0 + 56, 56.0, 56.0, 0.1, True) and window[7][4] is False
        bounded = store.readings_window("a", T0, limit=10)
        assert [r[0] for r in bounded] == [T0 + i for i in range(90, 100)]
        assert store.readings_window("c", T0) == []
        assert store.streams_with_readings(T0 + 99) == ["a", "b"]
        assert store.streams_with_readings(T0 + 100) == []
        assert store.streams_with_readings(T0, limit=1) == ["a"]


def test_list_events_of_one_kind(tmp_path: Path) -> None:
    with Store.open(tmp_path / "gateway.db", outbox=False) as store:
        store.write_batch(
            Batch(events=[Event("stale" if i % 2 else "drift", "s", ts=T0 + i) for i in range(6)])
        )
        assert [e["ts"] for e in store.list_events(kind="drift")] == [T0 + 4, T0 + 2, T0]
        assert len(store.list_events()) == 6


def test_disk_bytes_counts_the_wal_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    assert disk_bytes(path) == 0
    with Store.open(path, outbox=False) as store:
        store.write_batch(Batch(readings=readings("a", 1000)))
        wal = path.with_name("gateway.db-wal")
        assert wal.exists()
        assert disk_bytes(path) >= path.stat().st_size + wal.stat().st_size
