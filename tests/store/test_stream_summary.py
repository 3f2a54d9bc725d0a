"""``stream_summary`` against the truth it stands for: grouping every stored reading.

After batches (any order, equal timestamps, NaN values), after retention by age and by size,
after the migration of a database written before the summary existed, and after a writer
that died or failed in the middle of a batch."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from gateway.errors import StorageError
from gateway.records import Batch, DeadLetter, ScoredReading
from gateway.store import MIGRATIONS, Store, migrate

T0 = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]


def truth(path: Path) -> dict[str, tuple[Any, ...]]:
    """Per stream, from the readings themselves: count, oldest ts, newest ts and the newest
    reading's value, expected, score and alert flag (of equal ts, the last written)."""
    conn = sqlite3.connect(path)
    try:
        found = {}
        for stream, n, first, last in conn.execute(
            "SELECT stream, COUNT(*), MIN(ts), MAX(ts) FROM readings GROUP BY stream"
        ):
            newest = conn.execute(
                "SELECT value, expected, score, alert FROM readings WHERE stream = ? "
                "ORDER BY ts DESC, id DESC LIMIT 1",
                (stream,),
            ).fetchone()
            found[stream] = (n, first, last, *newest)
        return found
    finally:
        conn.close()


def summary(store: Store) -> dict[str, tuple[Any, ...]]:
    """The same, as ``streams`` reports it (streams with readings only)."""
    return {
        r["stream"]: (
            r["readings"],
            r["first_ts"],
            r["last_ts"],
            r["last_value"],
            r["last_expected"],
            r["last_score"],
            int(r["alert"]),
        )  # fmt: skip
        for r in store.streams()
        if r["readings"]
    }


def without_first_ts(rows: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    return {stream: (row[0], *row[2:]) for stream, row in rows.items()}


def reading(stream: str, ts: float, value: float, alert: bool = False) -> ScoredReading:
    return ScoredReading(stream, ts, value, value + 0.5, 0.25, alert)


readings_strategy = st.lists(
    st.builds(
        reading,
        stream=st.sampled_from(["a", "b", "c", "pump'; DROP TABLE readings; --"]),
        ts=st.integers(0, 20).map(lambda i: T0 + i),  # few values: equal ts are common
        value=st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)),
        alert=st.booleans(),
    ),
    max_size=40,
)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(readings_strategy, min_size=1, max_size=6))
def test_summary_is_the_grouping_of_the_readings_after_any_batches(
    batches: list[list[ScoredReading]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.db"
        with Store.open(path) as store:
            for batch in batches:
                store.write_batch(Batch(readings=batch))
                assert summary(store) == truth(path)


def test_a_batch_wider_than_one_statement_is_summarised(tmp_path: Path) -> None:
    """More streams in one batch than one multi-row statement holds (64 summary rows)."""
    path = tmp_path / "g.db"
    with Store.open(path) as store:
        batch = [reading(f"s{i % 1000}", T0 + i // 1000, float(i)) for i in range(3000)]
        store.write_batch(Batch(readings=batch))
        store.write_batch(Batch(readings=batch[:1500]))  # older than what is stored: counted
        rows = summary(store)
        assert len(rows) == 1000
        assert rows == truth(path)
        assert rows["s7"][0] == 5 and rows["s7"][3] == 2007.0


def test_prune_keeps_counts_and_newest_readings_exact(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    written: list[ScoredReading] = []
    with Store.open(path) as store:
        for block in range(10):
            batch = [
                reading(f"s{i % 7}", T0 + block * 100 + i // 7, float(block * 100 + i))
                for i in range(700)
                if not (i % 7 == 6 and block > 2)  # s6 falls silent after block 2
            ]
            # A name that JSON has to escape: prune hands the per-stream counts over as JSON.
            batch.append(reading('rare "1" \\ ü.\n', T0 + block * 100 + 50, float(block)))
            store.write_batch(Batch(readings=batch))
            written += batch

        counts = store.prune(1000 - 333, 10**12, now=T0 + 1000, chunk=97)
        assert counts["readings_expired"] > 0
        assert "s6" not in summary(store)  # every reading of it was old enough to go
        check_after_prune(store, path, written)

        full = store.used_bytes()
        counts = store.prune(10**9, full // 3, now=T0 + 1000, chunk=50)
        assert counts["readings_over_size"] > 0
        check_after_prune(store, path, written)

        store.prune(10**9, 1, now=T0 + 1000)  # a cap nothing meets: every reading goes
        assert summary(store) == {} == truth(path)


def check_after_prune(store: Store, path: Path, written: list[ScoredReading]) -> None:
    """Counts and newest readings are the truth; first_ts is where each stream's stored
    history starts: none of its stored readings is older, none newer was deleted."""
    rows = summary(store)
    actual = truth(path)
    assert without_first_ts(rows) == without_first_ts(actual)
    for stream, row in rows.items():
        first_ts = row[1]
        assert first_ts <= actual[stream][1]
        newer = [r for r in written if r.stream == stream and r.ts > first_ts]
        stored = store.db.execute(
            "SELECT COUNT(*) FROM readings WHERE stream = ? AND ts > ?", [stream, first_ts]
        ).fetchone()[0]
        assert stored == len(newer), stream


def test_first_ts_stays_exact_for_a_stream_prune_did_not_touch(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    with Store.open(path) as store:
        store.write_batch(Batch(readings=[reading("old", T0 + i, 1.0) for i in range(10)]))
        store.write_batch(Batch(readings=[reading("new", T0 + 500 + i, 1.0) for i in range(10)]))
        store.prune(100, 10**12, now=T0 + 110)  # every reading of "old" goes
        assert summary(store) == truth(path)
        assert set(summary(store)) == {"new"}


def test_a_database_from_before_the_summary_is_summarised_on_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    conn = sqlite3.connect(path)
    migrate(Database(conn), MIGRATIONS[:4])
    conn.executemany(  # what the previous release wrote, equal timestamps included
        "INSERT INTO readings (ts, stream, value, expected, score, alert) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(T0 + i // 2, f"s{i % 3}", float(i), None, 0.5, i % 4 == 0) for i in range(300)],
    )
    conn.execute(
        "INSERT INTO alerts (id, stream, raised_ts, active) VALUES ('a1', 's1', ?, 1)", [T0]
    )
    conn.commit()
    conn.close()
    before = truth(path)
    with Store.open(path) as store:
        assert summary(store) == before
        assert {r["stream"]: r["active_alert"] for r in store.streams()}["s1"] == "a1"
        store.write_batch(Batch(readings=[reading("s1", T0 + 149, 7.0), reading("s9", T0, 1.0)]))
        assert summary(store) == truth(path)
        assert summary(store)["s1"][3] == 7.0  # as new as the stored newest, written later
    assert (tmp_path / "v4.db.schema-v4.bak").exists()


def test_rebuild_gives_the_same_summary_as_the_writes(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    with Store.open(path) as store:
        store.write_batch(Batch(readings=[reading(f"s{i % 5}", T0 + i % 13, i) for i in range(99)]))
        kept = summary(store)
        store.rebuild_stream_summary()
        assert summary(store) == kept == truth(path)


def test_a_batch_that_fails_leaves_no_trace_in_the_summary(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    with Store.open(path) as store:
        store.write_batch(Batch(readings=[reading("a", T0, 1.0)]))
        kept = summary(store)
        # The dead letter fails its NOT NULL after the readings and the summary were written.
        doomed = DeadLetter("src", "bad", None, 0, ts=T0)  # type: ignore[arg-type]
        with pytest.raises(StorageError):
            store.write_batch(Batch(readings=[reading("a", T0 + 1, 2.0)], dead_letters=[doomed]))
        assert summary(store) == kept == truth(path)


CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys
    from gateway.records import Batch, ScoredReading
    from gateway.store import Store

    path, die_at = sys.argv[1], sys.argv[2]
    store = Store.open(path)
    store.write_batch(Batch(readings=[ScoredReading("a", 1.0, 1.0, None, 0.1, False)]))

    def trace(sql):
        if sql.startswith(die_at):
            os._exit(9)  # no rollback, no close: as a power cut or SIGKILL leaves it

    store._conn.set_trace_callback(trace)
    store.write_batch(Batch(readings=[
        ScoredReading(s, 2.0, 2.0, None, 0.2, True) for s in ("a", "b")
    ]))
    """
)


@pytest.mark.parametrize("die_at", ["INSERT INTO stream_summary", "COMMIT"])
def test_a_writer_killed_mid_batch_leaves_summary_and_readings_agreeing(
    tmp_path: Path, die_at: str
) -> None:
    path = tmp_path / "g.db"
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(path), die_at],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 9, done.stderr
    with Store.open(path) as store:
        assert summary(store) == truth(path) == {"a": (1, 1.0, 1.0, 1.0, None, 0.1, 0)}
