"""Recovering a damaged database keeps the alerts that were waiting to go upstream (#13 item 7).

Real damaged files: a gateway database with delivered and waiting outbox rows, then one page
zeroed (found with SQLite's own ``dbstat``: a page of another table, a leaf of the outbox
table, the schema page). The daemon's way of opening it moves it aside and re-queues what can
be read; a real forwarder then delivers the salvaged rows to a real Mosquitto.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.records import Batch, ScoredReading
from gateway.store import Store, salvage_outbox
from tests.helpers import wait_for
from tests.outputs.test_forwarder import make_forwarder
from tests.upstream import GW, Subscriber, alert

if TYPE_CHECKING:
    from tests.conftest import Broker

T0 = 1_700_000_000.0
WAITING = 120
DELIVERED = 40


def build(path: Path) -> tuple[set[str], set[str]]:
    """A database with DELIVERED delivered and WAITING waiting alerts: (waiting, delivered) ids."""
    with Store.open(path, gateway_id=GW) as store:
        for i in range(DELIVERED + WAITING):
            store.write_batch(
                Batch(
                    readings=[ScoredReading(f"s{j}", T0 + i, float(j), 0.0, 0.1, False)
                              for j in range(40)],
                    alerts=[alert(f"pump{i % 5}")],
                )
            )  # fmt: skip
        rows = store.pending(10_000)
        store.mark_delivered([r.seq for r in rows[:DELIVERED]])
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    delivered = {r.msg_id for r in rows[:DELIVERED]}
    return {r.msg_id for r in rows[DELIVERED:]}, delivered


def pages(path: Path, table: str) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [p for (p,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
            (table,),
        )]  # fmt: skip
    finally:
        conn.close()


def zero_page(path: Path, pageno: int) -> None:
    data = bytearray(path.read_bytes())
    data[(pageno - 1) * 4096 : pageno * 4096] = bytes(4096)
    path.write_bytes(bytes(data))


def recovered(path: Path) -> tuple[dict, set[str]]:
    with Store.open(path, gateway_id=GW, recover="quick") as store:
        [event] = [e for e in store.list_events() if e["kind"] == "database_recovered"]
        queued = {r.msg_id for r in store.pending(10_000) if r.kind == "alert"}
    return event["detail"], queued


def test_damage_elsewhere_salvages_every_waiting_row_and_delivers_it(
    broker: Broker, tmp_path: Path
) -> None:
    db = tmp_path / "data" / "gateway.db"
    db.parent.mkdir()
    waiting, delivered = build(db)
    zero_page(db, pages(db, "readings")[3])
    detail, queued = recovered(db)
    assert queued == waiting  # all of them, and none already delivered
    assert detail["outbox_salvaged"] == WAITING and detail["outbox_unreadable"] == 0
    watcher = Subscriber(broker)
    forwarder = make_forwarder(broker, db)
    forwarder.start()
    try:
        wait_for(lambda: {a["id"] for a in watcher.alerts()} >= waiting, timeout=60,
                 what="every salvaged alert upstream")  # fmt: skip
    finally:
        forwarder.stop()
        watcher.close()
    ids = [a["id"] for a in watcher.alerts()]
    assert not set(ids) & delivered
    with Store.open(db, gateway_id=GW) as store:
        assert store.outbox_backlog()[0] == 0


def test_damage_inside_the_outbox_salvages_the_readable_rows_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    db = tmp_path / "gateway.db"
    waiting, _ = build(db)
    leaves = pages(db, "outbox")
    assert len(leaves) >= 4
    zero_page(db, leaves[len(leaves) // 2])
    detail, queued = recovered(db)
    assert queued < waiting and len(queued) > WAITING // 2
    assert detail["outbox_salvaged"] == len(queued)
    lost = WAITING - len(queued)
    # The unreadable seqs cover every waiting row lost (and maybe delivered ones on that page).
    assert detail["outbox_unreadable"] >= lost > 0
    config = tmp_path / "gw.yaml"
    config.write_text(f"gateway: {{id: {GW}, data_dir: {tmp_path}}}\n")
    check = CliRunner().invoke(app, ["db", "check", "-c", str(config)])
    assert check.exit_code == 0, check.output
    assert (f"{len(queued)} waiting outbox rows salvaged, "
            f"{detail['outbox_unreadable']} unreadable") in check.output  # fmt: skip


def test_a_damaged_schema_page_is_reported_and_the_gateway_still_starts(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    build(db)
    zero_page(db, 1)
    detail, queued = recovered(db)
    assert queued == set() and detail["outbox_salvaged"] == 0
    assert detail["outbox_problem"]
    with Store.open(db, gateway_id=GW) as store:
        store.write_batch(Batch(alerts=[alert("pump1")]))
        assert len(store.pending(10)) == 2  # the recovery event and the new alert


def test_a_damaged_seq_counter_does_not_make_salvage_walk_forever(tmp_path: Path) -> None:
    """A garbage ``sqlite_sequence`` (or a huge seq) bounds the walk: the readable rows still
    come back, and the salvage ends."""
    db = tmp_path / "gateway.db"
    waiting, _ = build(db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'outbox'", (2**62,))
    conn.commit()
    conn.close()
    salvage = salvage_outbox(db)
    assert salvage.problem is None
    assert {r.msg_id for r in salvage.rows} == waiting
    assert salvage.unreadable == 0
