"""The store against real SQLite files: schema, one transaction per batch, alerts and the
outbox, WAL readers, retention, and arbitrary text staying data."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

from gateway.errors import StorageError
from gateway.records import (
    AlertChange,
    Batch,
    Contribution,
    DeadLetter,
    Event,
    ScoredReading,
    alert_payload,
)
from gateway.store import MIGRATIONS, Store, migrate, schema_version

T0 = 1_700_000_000.0


def change(
    alert_id: str,
    state: str = "raised",
    ts: float = T0,
    stream: str = "pump-1",
    score: float = 0.9995,
) -> AlertChange:
    return AlertChange(
        alert_id=alert_id,
        stream=stream,
        state=state,
        ts=ts,
        score=score,
        observed=81.5,
        expected=60.2,
        band=(55.0, 65.0),
        unit="degC",
        model="cfc-default@3f2a9c1e",
        contributors=(Contribution("temperature", 81.5, 60.2, (55.0, 65.0), 0.8, "degC"),),
    )


def readings(stream: str, n: int, start: float = T0, alert: bool = False) -> list[ScoredReading]:
    return [ScoredReading(stream, start + i, float(i), float(i), 0.1, alert) for i in range(n)]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "gateway.db"


@pytest.fixture
def store(db_path: Path) -> Store:
    s = Store.open(db_path, gateway_id="gw-7")
    yield s
    s.close()


def test_open_creates_folder_schema_and_wal(db_path: Path, store: Store) -> None:
    assert db_path.is_file()
    assert schema_version(store.db) == len(MIGRATIONS)
    assert {
        "readings",
        "alerts",
        "events",
        "outbox",
        "dead_letters",
        "stream_state",
        "status",
        "meta",
    } <= set(store.db.table_names())
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_new_data_dir_and_database_are_not_world_readable(tmp_path: Path, umask: int) -> None:
    """Started by hand (no systemd UMask=), with a permissive umask: the folders the store
    makes are 0750, the database and its -wal/-shm 0640."""
    db = tmp_path / "site" / "data" / "gateway.db"
    previous = os.umask(umask)
    try:
        with Store.open(db) as store:
            store.write_batch(Batch(readings=readings("s", 3)))
            modes = {p.name: _mode(p) for p in (db.parent.parent, db.parent, *db.parent.iterdir())}
        # A damaged file is moved aside and a fresh one made: that one too.
        db.write_bytes(b"this is not sqlite" * 100)
        db.chmod(0o644)
        with Store.open(db, recover="quick") as store:
            fresh = _mode(db)
    finally:
        os.umask(previous)
    assert modes == {
        "site": 0o750,
        "data": 0o750,
        "gateway.db": 0o640,
        "gateway.db-wal": 0o640,
        "gateway.db-shm": 0o640,
    }
    assert fresh == 0o640


def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    """What the operator set is left alone: only what the store creates gets its modes."""
    db = tmp_path / "gateway.db"
    with Store.open(db):
        pass
    db.chmod(0o600)
    with Store.open(db):
        assert _mode(db) == 0o600


def test_reopen_keeps_data_and_version(db_path: Path) -> None:
    with Store.open(db_path) as first:
        first.write_batch(Batch(readings=readings("s", 3)))
    with Store.open(db_path, "full", busy_timeout_ms=2500) as again:
        assert schema_version(again.db) == len(MIGRATIONS)
        pragmas = [
            again.db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("synchronous", "busy_timeout")
        ]
        assert pragmas == [2, 2500]  # FULL
        assert again.streams()[0]["readings"] == 3


def test_later_migrations_apply_in_order_in_one_transaction(store: Store) -> None:
    applied: list[int] = []

    def v2(db) -> None:
        applied.append(2)
        db.execute("CREATE TABLE extra (x INTEGER)")

    def v3(db) -> None:
        applied.append(3)
        db.execute("ALTER TABLE extra ADD COLUMN y TEXT")

    assert migrate(store.db, (*MIGRATIONS, v2, v3)) == len(MIGRATIONS) + 2
    assert applied == [2, 3]
    assert schema_version(store.db) == len(MIGRATIONS) + 2
    assert store.db["extra"].columns_dict == {"x": int, "y": str}


def test_failing_migration_leaves_the_schema_as_it_was(store: Store) -> None:
    def v2(db) -> None:
        db.execute("CREATE TABLE extra (x INTEGER)")

    def v3(db) -> None:
        db.execute("THIS IS NOT SQL")

    with pytest.raises(sqlite3.Error):
        migrate(store.db, (*MIGRATIONS, v2, v3))
    assert schema_version(store.db) == len(MIGRATIONS)
    assert not store.db["extra"].exists()


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    with Store.open(db_path) as store:
        migrate(store.db, (*MIGRATIONS, lambda db: None))
    with pytest.raises(StorageError, match="newer"):
        Store.open(db_path)


def test_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    junk = tmp_path / "gateway.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError):
        Store.open(junk)
    with pytest.raises(StorageError):
        Store.open(junk, read_only=True)


def test_batch_is_one_transaction(store: Store) -> None:
    bad = DeadLetter("serial", "bad_json", None, 3)  # type: ignore[arg-type]  # NOT NULL
    batch = Batch(
        readings=readings("s", 5),
        alerts=[change("a" * 32)],
        events=[Event("drift", "s", T0)],
        dead_letters=[DeadLetter.of("serial", "bad_json", "{"), bad],
        states={"s": "{}"},
        state_model_hash="h",
        status={"ok": True},
    )
    with pytest.raises(StorageError):
        store.write_batch(batch)
    for table in (
        "readings",
        "alerts",
        "events",
        "outbox",
        "dead_letters",
        "stream_state",
        "status",
    ):
        assert store.db[table].count == 0, table
    # The connection is still usable after the rollback.
    store.write_batch(Batch(readings=readings("s", 1)))
    assert store.db["readings"].count == 1


def test_alert_raise_clear_ack_round_trip(store: Store) -> None:
    alert_id = uuid.uuid4().hex
    store.write_batch(Batch(readings=readings("pump-1", 2, alert=True), alerts=[change(alert_id)]))
    store.write_batch(
        Batch(readings=[ScoredReading("temperature", T0 + 5, 1.0, 0.5, 0.99999, True)])
    )
    store.write_batch(Batch(alerts=[change(alert_id, "cleared", T0 + 10, score=0.95)]))

    alert = store.get_alert(alert_id)
    assert alert is not None
    assert alert["active"] is False
    assert (alert["raised_ts"], alert["cleared_ts"]) == (T0, T0 + 10)
    assert alert["score"] == 0.9995
    assert alert["max_score"] == 0.99999  # from a contributing channel's reading
    assert (alert["band_low"], alert["band_high"]) == (55.0, 65.0)
    assert alert["contributors"][0]["stream"] == "temperature"
    assert store.get_alert(alert_id[:6]) == alert
    assert store.get_alert(alert_id[:5]) is None  # too short for a prefix

    assert [a["id"] for a in store.list_alerts()] == [alert_id]
    assert store.ack_alert(alert_id[:8], "checked the pump")
    assert not store.ack_alert(alert_id)  # already acknowledged
    assert not store.ack_alert("0" * 32)
    assert store.list_alerts() == []
    acked = store.list_alerts(state="acked")
    assert acked[0]["ack_note"] == "checked the pump" and acked[0]["acked_ts"] is not None
    assert len(store.list_alerts(state="all", stream="pump-1", since_ts=T0 + 9)) == 1
    assert store.list_alerts(state="all", stream="other") == []


def test_count_alerts_counts_past_a_page_of_alerts(store: Store) -> None:
    """`status` shows how many alerts are not acknowledged: all of them, not the first 1000
    that ``list_alerts`` returns."""
    ids = [uuid.uuid4().hex for _ in range(1203)]
    store.write_batch(Batch(alerts=[change(i, ts=T0 + n) for n, i in enumerate(ids)]))
    for alert_id in ids[:3]:
        store.ack_alert(alert_id)
    assert len(store.list_alerts(state="open")) == 1000
    assert store.count_alerts("open") == 1200
    assert store.count_alerts("acked") == 3 and store.count_alerts("all") == 1203
    with pytest.raises(ValueError):
        store.count_alerts("bogus")  # type: ignore[arg-type]


def test_ambiguous_prefix_matches_nothing(store: Store) -> None:
    store.write_batch(Batch(alerts=[change("abcdef01" + "0" * 24), change("abcdef02" + "0" * 24)]))
    assert store.get_alert("abcdef") is None
    assert len(store.match_alert_ids("abcdef")) == 2
    assert store.get_alert("abcdef01") is not None


def test_outbox_row_is_written_with_the_alert(store: Store) -> None:
    alert_id = uuid.uuid4().hex
    store.write_batch(Batch(alerts=[change(alert_id)], events=[Event("port_lost", "line-a", T0)]))
    rows = store.pending(10)
    assert [(r.kind, r.subject) for r in rows] == [("alert", "pump-1"), ("event", "line-a")]
    body = json.loads(rows[0].payload)
    assert rows[0].msg_id == body["id"] == f"{alert_id}:raised"
    assert body["gateway"] == "gw-7"
    for key in (
        "id",
        "ts",
        "stream",
        "state",
        "score",
        "observed",
        "expected",
        "band",
        "unit",
        "model",
    ):
        assert key in body
    event = json.loads(rows[1].payload)
    assert rows[1].msg_id == event["id"] and event["kind"] == "port_lost"
    assert store.outbox_backlog() == (2, rows[0].created_ts)

    store.record_failure(rows[0].seq, "refused")
    assert store.pending(10)[0].attempts == 1
    store.mark_delivered([rows[0].seq])
    assert [r.seq for r in store.pending(10)] == [rows[1].seq]
    assert store.pending(10, after_seq=rows[1].seq) == []
    assert store.outbox_backlog()[0] == 1


def test_no_outbox_when_not_forwarding(db_path: Path) -> None:
    with Store.open(db_path, outbox=False) as store:
        store.write_batch(Batch(alerts=[change("b" * 32)], events=[Event("drift", "s", T0)]))
        assert store.pending(10) == []
        assert store.get_alert("b" * 32) is not None


def test_queries_for_the_cli(store: Store) -> None:
    store.write_batch(
        Batch(
            readings=readings("a", 3) + readings("b", 2, start=T0 + 100, alert=True),
            events=[Event("drift", "a", T0), Event("stale", "b", T0 + 50, {"age": 12})],
            dead_letters=[DeadLetter.of("line-a", "bad_json", "{")] * 2
            + [DeadLetter.of("line-a", "line_too_long", "x")],
            states={"a": '{"h": [0]}', "c": "{}"},
            state_model_hash="model-1",
            status={"readings": 5},
        )
    )
    rows = {r["stream"]: r for r in store.streams()}
    assert rows["a"]["readings"] == 3 and rows["a"]["last_ts"] == T0 + 2
    assert rows["a"]["last_value"] == 2.0 and rows["a"]["alert"] is False
    assert rows["b"]["alert"] is True
    assert rows["c"]["readings"] == 0 and rows["c"]["state_updated_ts"] is not None
    assert store.load_states("model-1") == {"a": b'{"h": [0]}', "c": b"{}"}
    assert store.load_states("model-2") == {}
    assert [e["kind"] for e in store.list_events()] == ["stale", "drift"]
    assert store.list_events(since_ts=T0 + 1)[0]["detail"] == {"age": 12}
    assert store.dead_letter_counts() == {("line-a", "bad_json"): 2, ("line-a", "line_too_long"): 1}
    status = store.status()
    assert status is not None and status["readings"] == 5 and "updated_ts" in status


def test_read_only_cannot_write_and_does_not_block_the_writer(db_path: Path, store: Store) -> None:
    store.write_batch(Batch(alerts=[change("c" * 32)]))
    reader = Store.open(db_path, read_only=True)
    try:
        with pytest.raises(StorageError):
            reader.ack_alert("c" * 32)
        with pytest.raises(StorageError):
            reader.write_batch(Batch(readings=readings("s", 1)))
        with reader.snapshot():
            assert len(reader.list_alerts()) == 1
            # The writer commits while the reader holds its read transaction open.
            store.write_batch(Batch(alerts=[change("d" * 32)], readings=readings("s", 10)))
            assert len(reader.list_alerts()) == 1  # the reader's snapshot is stable
        assert len(reader.list_alerts()) == 2
        assert reader.streams()[0]["readings"] == 10
    finally:
        reader.close()


def test_read_only_never_creates_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "nothing" / "gateway.db"
    with pytest.raises(StorageError, match="no gateway database"):
        Store.open(missing, read_only=True)
    assert not missing.parent.exists()


def test_prune_by_age_keeps_alerts_and_undelivered_outbox(store: Store) -> None:
    now = T0 + 10 * 86400
    store.write_batch(
        Batch(
            readings=readings("s", 100) + readings("s", 5, start=now - 10),
            alerts=[change("e" * 32), change("f" * 32)],
            events=[Event("drift", "s", T0), Event("drift", "s", now)],
            dead_letters=[DeadLetter("x", "bad", "p", 1, ts=T0)],
        )
    )
    delivered = store.pending(1)[0].seq
    store.mark_delivered([delivered])
    store.db.execute("UPDATE outbox SET delivered_ts = ? WHERE seq = ?", [T0, delivered])

    counts = store.prune(86400, 10**12, now=now, chunk=7)
    assert counts["readings_expired"] == 100
    assert counts["events_expired"] == 1 and counts["dead_letters_expired"] == 1
    assert counts["outbox_expired"] == 1
    assert store.db["readings"].count == 5
    assert store.db["alerts"].count == 2
    # The undelivered alert stays, and so do the outbox rows of both events, old or not.
    assert [r.kind for r in store.pending(10)] == ["alert", "event", "event"]
    assert store.prune(86400, 10**12, now=now) == {k: 0 for k in counts}


def test_prune_by_size_removes_oldest_readings_only(store: Store) -> None:
    store.write_batch(Batch(alerts=[change(uuid.uuid4().hex) for _ in range(20)]))
    store.mark_delivered([r.seq for r in store.pending(5)])
    for block in range(20):
        store.write_batch(Batch(readings=readings(f"s{block % 3}", 2000, start=T0 + block * 2000)))
    full = store.used_bytes()

    counts = store.prune(10**9, full // 2, now=T0, chunk=1000)
    assert counts["readings_over_size"] > 0
    assert store.used_bytes() <= full // 2
    oldest_left = store.db.execute("SELECT MIN(ts) FROM readings").fetchone()[0]
    assert oldest_left > T0  # the oldest went first
    assert store.db.execute("SELECT MAX(ts) FROM readings").fetchone()[0] == T0 + 40_000 - 1

    counts = store.prune(10**9, 1, now=T0)  # a cap nothing can meet
    assert store.db["readings"].count == 0
    assert counts["outbox_over_size"] == 5  # delivered rows may go
    assert store.db["alerts"].count == 20
    assert len(store.pending(100)) == 15


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.text(min_size=1, max_size=60),
    text=st.text(max_size=300),
    value=st.floats(allow_nan=False, allow_infinity=False),
)
@pytest.mark.slow
def test_arbitrary_text_is_data_never_sql(stream: str, text: str, value: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "g.db") as store:
        alert_id = uuid.uuid4().hex
        store.write_batch(
            Batch(
                readings=[ScoredReading(stream, T0, value, None, 0.5, False)],
                alerts=[change(alert_id, stream=stream)],
                events=[Event(text, stream, T0, {"text": text})],
                dead_letters=[DeadLetter(stream, text, text, len(text), ts=T0, detail=text)],
                states={stream: text},
                state_model_hash=text,
                status={"note": text},
            )
        )
        row = store.streams()[0]
        assert (row["stream"], row["last_value"], row["readings"]) == (stream, value, 1)
        assert store.list_alerts(stream=stream)[0]["id"] == alert_id
        event = store.list_events()[0]
        assert (event["kind"], event["subject"], event["detail"]) == (text, stream, {"text": text})
        assert store.dead_letter_counts() == {(stream, text): 1}
        assert store.load_states(text) == {stream: text.encode()}  # rows as stored bytes
        assert store.status()["note"] == text  # type: ignore[index]
        assert json.loads(store.pending(1)[0].payload)["stream"] == stream
        assert store.ack_alert(alert_id, note=text)
        assert store.get_alert(alert_id)["ack_note"] == text  # type: ignore[index]


def test_a_version_1_database_is_migrated_on_open_and_keeps_its_alerts(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    migrate(Database(conn), MIGRATIONS[:1])  # what the first release created
    conn.execute("INSERT INTO alerts (id, stream, raised_ts, active) VALUES ('a1', 'pump', 1.0, 1)")
    conn.commit()
    conn.close()
    store = Store.open(path)
    try:
        assert schema_version(store.db) == len(MIGRATIONS)
        assert store.ack_alert("a1", new_normal=True)
        assert store.pending_new_normals() == [("a1", "pump")]
        store.mark_new_normals_applied(["a1"])
        assert store.pending_new_normals() == []
        assert store.get_alert("a1")["new_normal"] is True  # type: ignore[index]
    finally:
        store.close()


def test_a_version_2_database_gets_the_time_ordered_readings_index(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    migrate(Database(conn), MIGRATIONS[:2])
    conn.executemany(
        "INSERT INTO readings (ts, stream, value) VALUES (?, ?, ?)",
        [(T0 + i, f"s{i % 3}", float(i)) for i in range(30)],
    )
    conn.commit()
    conn.close()
    store = Store.open(path)
    try:
        indexes = {
            row[0]
            for row in store.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'readings'"
            ).fetchall()
        }
        assert indexes == {"readings_ts_stream"}
        plan = " ".join(
            str(row[-1])
            for row in store.db.execute(
                "EXPLAIN QUERY PLAN SELECT ts FROM readings WHERE stream = ? AND ts >= ?",
                ["s1", T0],
            ).fetchall()
        )
        assert "readings_ts_stream" in plan
        rows = {r["stream"]: r for r in store.streams()}
        assert rows["s2"]["readings"] == 10 and rows["s2"]["last_value"] == 29.0
        assert store.prune(86400, 10**12, now=T0 + 86400 + 15)["readings_expired"] == 15
    finally:
        store.close()


def _old_database(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    migrate(Database(conn), MIGRATIONS[:version])
    conn.close()


def test_an_upgrade_keeps_a_copy_of_the_database_as_the_old_schema_left_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "gateway.db"
    old = len(MIGRATIONS) - 1
    _old_database(db, old)
    with Store.open(db) as store:
        assert schema_version(store.db) == len(MIGRATIONS)
    backup = tmp_path / f"gateway.db.schema-v{old}.bak"
    copy = sqlite3.connect(backup)
    assert schema_version(copy) == old  # what the previous release can open again
    copy.close()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o640
    assert f"the old one is kept as {backup}" in caplog.text
    # Opening a current database, or creating one, copies nothing.
    with Store.open(db):
        pass
    with Store.open(tmp_path / "fresh.db"):
        pass
    assert sorted(p.name for p in tmp_path.glob("*.bak")) == [backup.name]


def test_an_upgrade_goes_ahead_when_the_copy_cannot_be_made(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "gateway.db"
    old = len(MIGRATIONS) - 1
    _old_database(db, old)
    (tmp_path / f"gateway.db.schema-v{old}.bak.partial").mkdir()  # cannot be opened as a file
    with Store.open(db) as store:
        assert schema_version(store.db) == len(MIGRATIONS)
    assert not (tmp_path / f"gateway.db.schema-v{old}.bak").exists()
    assert "migrating without a copy" in caplog.text


def test_active_alerts_are_the_raises_still_open_as_they_were_queued(db_path: Path) -> None:
    """What an output re-sends (Alertmanager) rebuilt from the alerts table: the same payload
    the raise was queued with; cleared alerts are not in it, damaged contributors are left
    out but never the alert."""
    with Store.open(db_path, gateway_id="gw") as store:
        first, cleared, damaged = change("a1", ts=T0), change("a2", ts=T0 + 1), change("a3")
        store.write_batch(Batch(alerts=[first, cleared, damaged]))
        store.write_batch(Batch(alerts=[change("a2", "cleared", ts=T0 + 5)]))
        store._conn.execute("UPDATE alerts SET contributors = '[{\"x\": 1}]' WHERE id = 'a3'")
        active = store.active_alerts()
        assert [a.alert_id for a in active] == ["a1", "a3"]  # oldest first, then by id
        again = {a.alert_id: a for a in active}
        assert alert_payload(again["a1"], "gw") == alert_payload(first, "gw")
        assert again["a3"].contributors == () and again["a3"].stream == "pump-1"
        assert store.active_alerts(limit=1) == active[:1]
