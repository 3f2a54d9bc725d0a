"""Delivery state per output (#15 item 2): each output's own pending rows, a row settled
(and prunable) only once every configured output is done with it, and an outbox from before
the ``deliveries`` migration delivered after the upgrade."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database

from gateway.records import Batch, Event
from gateway.store import MIGRATIONS, Store, migrate

T0 = 1_700_000_000.0


def queue(store: Store, n: int) -> list[int]:
    store.write_batch(Batch(events=[Event("port_lost", f"line-{i}", T0 + i) for i in range(n)]))
    return [r.seq for r in store.pending(100)]


def test_each_output_has_its_own_pending_rows_and_a_row_settles_when_all_are_done(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "g.db") as store:
        store.outputs = ("upstream", "hook")
        a, b, c = queue(store, 3)
        store.mark_delivered([a, b], output="upstream")
        assert [r.seq for r in store.pending(10, output="upstream")] == [c]
        assert [r.seq for r in store.pending(10, output="hook")] == [a, b, c]
        assert len(store.pending(10)) == 3  # nothing settled: the hook still owes all three
        store.record_failure(a, "503 Service Unavailable", output="hook")
        assert store.pending(10, output="hook")[0].attempts == 1
        assert store.pending(10, output="upstream")[0].attempts == 0
        store.mark_delivered([a], output="hook")
        store.quarantine(b, "400 Bad Request", output="hook")
        assert [r.seq for r in store.pending(10)] == [c]
        assert store.outbox_quarantined() == 1  # b: one output will never send it
        assert store.output_backlog("hook") == {
            "backlog": 1,
            "oldest_pending_ts": store.pending(1)[0].created_ts,
            "parked": 0,
            "delivered": 1,
            "quarantined": 1,
        }
        assert store.output_backlog("upstream")["backlog"] == 1
        # Delivered rows go with retention, and their delivery state with them.
        store.prune(0, 10**12, now=T0 + 10**10)
        assert store.db.execute("SELECT seq FROM deliveries").fetchall() == []


def test_an_output_taken_out_of_the_configuration_holds_nothing_back(tmp_path: Path) -> None:
    with Store.open(tmp_path / "g.db") as store:
        store.outputs = ("upstream", "hook")
        (a,) = queue(store, 1)
        store.mark_delivered([a], output="upstream")
        assert store.outbox_backlog()[0] == 1
    with Store.open(tmp_path / "g.db") as store:  # hook removed from the configuration
        assert store.settle_outbox() == 1
        assert store.outbox_backlog()[0] == 0


def test_rows_queued_before_the_deliveries_migration_are_pending_for_every_output(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    migrate(Database(conn), MIGRATIONS[:5])  # the schema before per-output delivery state
    conn.executemany(
        "INSERT INTO outbox (msg_id, kind, subject, payload, created_ts, delivered_ts) "
        "VALUES (?, 'event', 'line', '{}', ?, ?)",
        [("sent", T0, T0 + 1), ("owed-1", T0, None), ("owed-2", T0, None)],
    )
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        store.outputs = ("upstream", "hook")
        for output in store.outputs:
            assert [r.msg_id for r in store.pending(10, output=output)] == ["owed-1", "owed-2"]
        seqs = [r.seq for r in store.pending(10)]
        store.mark_delivered(seqs, output="upstream")
        store.mark_delivered(seqs, output="hook")
        assert store.outbox_backlog()[0] == 0
