"""A damaged database at start is moved aside (never deleted) and replaced by a fresh one.

Many mutations of a real gateway database — truncations, flipped bytes in the header and in
b-tree pages, zeroed pages, a garbage WAL — each opened the way the daemon opens it.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from pathlib import Path

import pytest

from gateway.records import AlertChange, Batch, Event, ScoredReading
from gateway.store import Store, find_damage

T0 = 1_700_000_000.0


def build(path: Path) -> bytes:
    with Store.open(path, gateway_id="gw-7") as store:
        for i in range(20):
            store.write_batch(
                Batch(
                    readings=[ScoredReading(f"s{j}", T0 + i, float(j), 0.0, 0.1, False) for j in range(50)],
                    alerts=[AlertChange(uuid.uuid4().hex, "s1", "raised", T0 + i, 0.99, 1.0, 0.0,
                                        (0.0, 0.5), None, "m")],
                    events=[Event("drift", "s1", T0 + i)],
                )
            )  # fmt: skip
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.read_bytes()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build(tmp_path_factory.mktemp("pristine") / "gateway.db")


def mutations(original: bytes) -> list[tuple[str, bytes, bytes | None]]:
    """(name, database bytes, WAL bytes or None)."""
    rng = random.Random(42)
    page = 4096
    pages = len(original) // page
    out: list[tuple[str, bytes, bytes | None]] = [
        ("garbage", bytes(rng.getrandbits(8) for _ in range(8192)), None),
        ("header-only", original[:100], None),
        ("half-header", original[:50], None),
        ("bad-magic", b"SQLite format 4\x00" + original[16:], None),
        ("zeroed-first-page", bytes(page) + original[page:], None),
    ]
    for cut in sorted(rng.sample(range(page, len(original)), 12)):
        out.append((f"truncated-at-{cut}", original[:cut], None))
    for n in range(16):
        victim = rng.randrange(1, pages)
        data = bytearray(original)
        data[victim * page : victim * page + page] = bytes(page)
        out.append((f"zeroed-page-{victim}-{n}", bytes(data), None))
    for n in range(20):
        data = bytearray(original)
        for _ in range(8):
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
        out.append((f"bit-flips-{n}", bytes(data), None))
    for n in range(6):
        at = rng.randrange(16, 100)  # inside the 100-byte header
        data = bytearray(original)
        data[at] = (data[at] + 1 + rng.randrange(254)) % 256
        out.append((f"header-byte-{at}-{n}", bytes(data), None))
    out.append(
        (
            "garbage-wal",
            original,
            b"\x37\x7f\x06\x82" + bytes(rng.getrandbits(8) for _ in range(5000)),
        )
    )
    return out  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("check", ["quick", "full"])
def test_every_mutation_opens_and_nothing_is_deleted(
    pristine: bytes, tmp_path: Path, check: str
) -> None:
    moved = kept = 0
    for i, (name, data, wal) in enumerate(mutations(pristine)):
        folder = tmp_path / f"{i:03d}-{name}"
        folder.mkdir()
        db = folder / "gateway.db"
        db.write_bytes(data)
        if wal is not None:
            (folder / "gateway.db-wal").write_bytes(wal)
        store = Store.open(db, gateway_id="gw-7", recover=check)  # never raises
        try:
            # quick_check does not compare indexes with their tables; integrity_check does.
            pragma = "integrity_check" if check == "full" else "quick_check"
            assert store.db.execute(f"PRAGMA {pragma}").fetchone()[0] == "ok", name
            store.write_batch(Batch(readings=[ScoredReading("s", T0, 1.0, 1.0, 0.1, False)]))
            events = [e for e in store.list_events() if e["kind"] == "database_recovered"]
            asides = sorted(folder.glob("gateway.db.corrupt-*[!lm]"))
        finally:
            store.close()
        if asides:
            moved += 1
            aside = asides[0]
            assert aside.read_bytes() == data, f"{name}: the damaged file must be kept as it was"
            assert len(events) == 1 and events[0]["detail"]["moved_to"] == str(aside), name
            assert events[0]["detail"]["reason"]
        else:
            kept += 1
            assert events == [], name
            assert find_damage(db, full=check == "full") is None, name
    print(f"damaged-db ({check}): {moved} moved aside, {kept} sound and kept")
    assert moved >= 30  # most mutations really damage the file


def test_recovery_is_announced_upstream(pristine: bytes, tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    db.write_bytes(pristine[: len(pristine) // 2])
    with Store.open(db, gateway_id="gw-7", recover="quick") as store:
        [row] = store.pending(10)
    assert row.kind == "event" and '"database_recovered"' in row.payload


def test_a_locked_database_is_not_moved_aside(pristine: bytes, tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    db.write_bytes(pristine)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(Exception):  # noqa: B017 - busy is a StorageError, never a recovery
            Store.open(db, recover="quick", busy_timeout_ms=100)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not list(tmp_path.glob("*.corrupt-*"))


def _undecodable_schema(db: Path) -> None:
    """A table whose name and SQL in ``sqlite_master`` hold a byte that is not UTF-8."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_master SET name = CAST(X'74ff' AS TEXT), "
            "tbl_name = CAST(X'74ff' AS TEXT), "
            "sql = CAST(X'435245415445205441424c452022ff22286129' AS TEXT) WHERE name = 'events'"
        )
    finally:
        conn.close()


def test_a_schema_that_is_not_utf8_is_reported_and_moved_aside(
    pristine: bytes, tmp_path: Path
) -> None:
    """The quick-check message quoted the bad bytes; its UnicodeDecodeError escaped
    find_damage, and run, db check and status all crashed with the file left in place."""
    from typer.testing import CliRunner

    from gateway.cli.app import app

    db = tmp_path / "data" / "gateway.db"
    db.parent.mkdir()
    db.write_bytes(pristine)
    _undecodable_schema(db)
    assert "not valid UTF-8" in (find_damage(db) or ""), find_damage(db)
    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{id: gw-7, data_dir: {db.parent}}}\n")
    runner = CliRunner()
    check = runner.invoke(app, ["db", "check", "-c", str(config)])
    assert check.exit_code == 1 and "UTF-8" in check.output, check.output
    assert check.exception is None or isinstance(check.exception, SystemExit)
    status = runner.invoke(app, ["status", "-c", str(config)])
    assert status.exception is None or isinstance(status.exception, SystemExit), status.output
    with Store.open(db, gateway_id="gw-7", recover="quick") as store:
        events = [e for e in store.list_events() if e["kind"] == "database_recovered"]
    assert len(events) == 1 and "UTF-8" in events[0]["detail"]["reason"]
    assert len(list(db.parent.glob("gateway.db.corrupt-*[!lm]"))) == 1
