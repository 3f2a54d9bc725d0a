"""Clocks from outside (#13 items 8 and 9): a device clock that jumps back and forth is
quarantined and reported once, a reading from the far future is not scored, and a wall clock
that jumps ahead does not make retention delete the history."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from gateway.config import parse_config
from gateway.detector import Detector
from gateway.model.runtime import load_model
from gateway.pipeline.clock import EVENT_EVERY_S, TimeGuard, WallClock
from gateway.pipeline.events import EventRate
from gateway.pipeline.ingest import IngestQueue
from gateway.pipeline.runner import Pipeline
from gateway.records import Batch, DeadLetter, Event, Reading, ScoredReading
from gateway.store import Store

NOW = 1_780_000_000.0
DAY = 86400.0


class Clocks:
    """A wall clock and a monotonic one that a test moves by hand."""

    def __init__(self) -> None:
        self.wall_s = NOW
        self.mono_s = 1000.0

    def wall(self) -> float:
        return self.wall_s

    def mono(self) -> float:
        return self.mono_s

    def run(self, seconds: float) -> None:
        self.wall_s += seconds
        self.mono_s += seconds


def test_a_device_clock_jumping_back_and_forth_is_quarantined_and_reported_once() -> None:
    clocks = Clocks()
    guard = TimeGuard(600.0, clocks.wall, clocks.mono)
    kept_all: list[Reading] = []
    side_all: list[DeadLetter | Event] = []
    for i in range(100):
        ts = NOW - 100 + i if i % 2 == 0 else 946_684_800.0 + i  # 2000-01-01 every other one
        kept, side = guard.check([Reading("dev.t", ts, float(i), "serial")])
        kept_all += kept
        side_all += side
    assert [r.value for r in kept_all] == [float(i) for i in range(0, 100, 2)]
    letters = [s for s in side_all if isinstance(s, DeadLetter)]
    events = [s for s in side_all if isinstance(s, Event)]
    assert len(letters) == 50 and {d.reason for d in letters} == {"timestamp_went_back"}
    assert [e.kind for e in events] == ["device_clock"]
    assert events[0].subject == "dev.t" and events[0].detail["quarantined"] == 1
    clocks.run(EVENT_EVERY_S)  # an hour later the still-broken clock is reported again
    _, side = guard.check([Reading("dev.t", 946_684_800.0, 0.0, "serial")])
    assert [s.kind for s in side if isinstance(s, Event)] == ["device_clock"]
    assert guard.quarantined == 51


def test_future_readings_are_dead_lettered_small_disorder_is_kept() -> None:
    clocks = Clocks()
    guard = TimeGuard(600.0, clocks.wall, clocks.mono)
    readings = [
        Reading("a", NOW, 1.0, "mqtt"),
        Reading("a", NOW - 30, 2.0, "mqtt"),  # late by half a minute: MQTT redelivery
        Reading("a", NOW + 601, 3.0, "mqtt"),  # ten minutes ahead of the gateway
        Reading("b", NOW + 365 * DAY, 4.0, "mqtt"),  # a first reading from next year
    ]
    kept, side = guard.check(readings)
    assert [r.value for r in kept] == [1.0, 2.0]
    assert [(d.reason, d.source) for d in side if isinstance(d, DeadLetter)] == [
        ("future_timestamp", "mqtt"),
        ("future_timestamp", "mqtt"),
    ]
    assert TimeGuard(None).check(readings) == (readings, [])  # null: not checked


def test_a_wall_clock_jumping_a_year_ahead_does_not_prune_the_history(tmp_path: Path) -> None:
    cfg = parse_config(
        f"gateway: {{id: gw, data_dir: {tmp_path}}}\nstorage: {{readings_retention: 7d}}\n"
    )
    clocks = Clocks()
    model = load_model(cfg.model.path, cfg.model.runtime)
    pipeline = Pipeline(
        cfg, IngestQueue(), Detector(cfg.detector, model), clock=WallClock(clocks.wall, clocks.mono)
    )
    store = Store.open(cfg.database_path)
    try:
        rows = [ScoredReading("s", NOW - 3600 + i, 1.0, 1.0, 0.0, False) for i in range(100)]
        store.write_batch(Batch(readings=rows))
        clocks.run(300.0)
        clocks.wall_s += 365 * DAY  # the clock jumps; an hour of history is a year old by it
        pipeline._prune(store)
        assert store.db.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 100
        assert pipeline.status()["clock"] == {
            "jumps": 1,
            "pruning_by_age": False,
            "quarantined_readings": 0,
        }
        pipeline._write(store, Batch(status=pipeline.status()))  # carries the event
        with sqlite3.connect(cfg.database_path) as db:
            events = db.execute("SELECT kind, detail FROM events").fetchall()
        assert [e[0] for e in events] == ["clock_jump"]
        assert json.loads(events[0][1]) == {"by_s": 365 * DAY, "age_pruning_held_s": 7 * DAY}
        clocks.run(7 * DAY)  # a retention of real time later the clock is trusted again
        pipeline._prune(store)  # by age again: the next writes delete what expired
        for i in range(2):  # a bounded number per write (65 for a batch of one)
            fresh = [ScoredReading("s", clocks.wall_s + i, 1.0, 1.0, 0.0, False)]
            pipeline._write(store, Batch(readings=fresh))
        assert store.db.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 2
    finally:
        store.close()


def test_a_subject_flooding_events_is_held_back_from_upstream_not_lost(tmp_path: Path) -> None:
    clocks = Clocks()
    rate = EventRate(burst=10, per_hour=10.0, monotonic=clocks.mono)
    flood = [Event("gap_reset", "dev.t", ts=NOW + i) for i in range(100)]
    sorted_ = rate.sort(flood + [Event("stale", "other")])
    assert [e.upstream for e in sorted_] == [True] * 10 + [False] * 90 + [True]
    assert rate.held_back == 90
    clocks.run(360.0)  # a tenth of an hour: one more
    assert [e.upstream for e in rate.sort(flood[:3])] == [True, False, False]
    store = Store.open(tmp_path / "g.db", outbox=True, gateway_id="gw")
    try:
        store.write_batch(Batch(events=sorted_))
        assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 101
        assert store.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 11
    finally:
        store.close()
