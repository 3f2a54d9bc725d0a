"""Stream cardinality is bounded (#13 item 2): ``limits.max_streams`` refuses new streams past
it with a counted dead letter and one event, streams unseen for ``limits.stream_retention``
are forgotten in memory and on disk, and checkpointed state is loaded per stream when it
first sends, so start-up does not grow with the number of streams ever seen."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gateway.config import Config, parse_config
from gateway.detector import Detector
from gateway.errors import ConfigError
from gateway.model.runtime import load_model
from gateway.pipeline.ingest import IngestQueue
from gateway.pipeline.runner import Pipeline
from gateway.records import Reading
from gateway.store import Store

T0 = 1_000_000.0


def config(data_dir: Path, extra: str = "") -> Config:
    return parse_config(
        f"gateway: {{id: gw, data_dir: {data_dir}}}\ndetector: {{warmup: 20}}\n" + extra
    )


def run(cfg: Config, readings: list[Reading]) -> Pipeline:
    queue = IngestQueue()
    model = load_model(cfg.model.path, cfg.model.runtime)
    pipeline = Pipeline(cfg, queue, Detector(cfg.detector, model, cfg.assets))
    pipeline.start()
    for reading in readings:
        queue.put(reading)
    pipeline.stop()  # drains the queue, checkpoints
    assert not pipeline.is_alive()
    return pipeline


def series(streams: list[str], n: int, start: int = 0) -> list[Reading]:
    return [
        Reading(s, T0 + i, float(i % 5) + k, "src")
        for i in range(start, start + n)
        for k, s in enumerate(streams)
    ]


def rows(data_dir: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(data_dir / "gateway.db") as db:
        return db.execute(sql).fetchall()


def test_streams_past_the_limit_are_refused_counted_and_reported_once(tmp_path: Path) -> None:
    cfg = config(tmp_path, "limits: {max_streams: 5}\n")
    names = [f"s{i}" for i in range(8)]
    pipeline = run(cfg, series(names, 30))
    scored = rows(tmp_path, "SELECT stream, COUNT(*) FROM readings GROUP BY stream")
    assert dict(scored) == {f"s{i}": 30 for i in range(5)}
    letters = rows(tmp_path, "SELECT reason, payload FROM dead_letters ORDER BY id")
    assert [r[0] for r in letters] == ["max_streams"] * 3  # one per refused stream
    assert [r[1].split()[0] for r in letters] == ["s5", "s6", "s7"]
    events = rows(tmp_path, "SELECT kind, detail FROM events WHERE kind = 'stream_limit'")
    assert len(events) == 1
    assert json.loads(events[0][1]) == {"max_streams": 5, "first_refused": "s5"}
    status = pipeline.status()
    assert status["limits"]["refused_readings"] == 3 * 30
    assert status["limits"]["streams_tracked"] == 5
    assert status["dead_letters"] == {"src/max_streams": 3}


def test_configured_asset_streams_always_have_their_place(tmp_path: Path) -> None:
    cfg = config(tmp_path, "limits: {max_streams: 3}\nassets: {pump: [a, b]}\n")
    loose = [f"x{i}" for i in range(4)]
    run(cfg, series(loose, 10) + series(["a", "b"], 10))
    scored = dict(rows(tmp_path, "SELECT stream, COUNT(*) FROM readings GROUP BY stream"))
    assert scored == {"x0": 10, "a": 10, "b": 10}  # a and b still fit: one place was left


def test_assets_naming_more_streams_than_the_limit_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"assets name 3 streams, more than limits.max_streams"):
        parse_config("limits: {max_streams: 2}\nassets: {pump: [a, b, c]}\n")


def test_state_is_loaded_when_a_stream_first_sends_not_at_start(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    names = [f"s{i}" for i in range(40)]
    run(cfg, series(names, 50))
    assert rows(tmp_path, "SELECT COUNT(*) FROM stream_state")[0][0] == 80  # streams + assets
    queue = IngestQueue()
    model = load_model(cfg.model.path, cfg.model.runtime)
    detector = Detector(cfg.detector, model, cfg.assets)
    pipeline = Pipeline(cfg, queue, detector)
    pipeline.start()
    try:
        assert pipeline.restored_streams == 0  # nothing read at start
        for reading in series(["s3", "s7"], 1, start=50):
            queue.put(reading)
    finally:
        pipeline.stop()
    assert pipeline.restored_streams == 2
    assert sorted(detector.streams) == ["s3", "s7"]
    view = detector.channel_view("s3")
    assert view is not None and view["readings"] == 51  # carried on, not started again
    # The other 38 streams' checkpoints are still there for when they come back.
    assert rows(tmp_path, "SELECT COUNT(*) FROM stream_state")[0][0] == 80


def test_an_open_alert_of_a_stream_is_restored_with_it(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    calm = series(["p"], 200)
    fault = [Reading("p", T0 + 200 + i, 100.0, "src") for i in range(10)]
    first = run(cfg, calm + fault)
    assert first.alerts["raised"] == 1
    queue = IngestQueue()
    detector = Detector(cfg.detector, load_model(cfg.model.path, cfg.model.runtime))
    pipeline = Pipeline(cfg, queue, detector)
    pipeline.start()
    try:
        queue.put(Reading("p", T0 + 210, 100.0, "src"))
    finally:
        pipeline.stop()
    view = detector.channel_view("p")
    assert view is not None and view["alert"] is True
    assert pipeline.alerts["raised"] == 0  # still the same alert, not raised again


def test_forgetting_idle_streams_frees_their_places(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    detector = Detector(cfg.detector, load_model(cfg.model.path, cfg.model.runtime))
    detector.max_streams = 2
    kept, refused = detector.admit(series(["a", "b"], 1), now=0.0)
    detector.process(kept)
    kept, refused = detector.admit(series(["a", "c"], 1, start=1), now=100.0)
    assert [r.stream for r in kept] == ["a"] and [r.stream for r in refused] == ["c"]
    detector.process(kept)
    assert detector.forget_idle(50.0, now=120.0) == ["b"]
    assert sorted(detector.streams) == ["a"]
    kept, refused = detector.admit(series(["c"], 30, start=2), now=130.0)
    assert len(kept) == 30 and not refused
    detector.process(kept)
    view = detector.channel_view("c")
    assert view is not None and view["readings"] == 30
    a = detector.channel_view("a")
    assert a is not None and a["readings"] == 2  # untouched by c taking b's place


def test_a_checkpoint_writes_only_streams_seen_since_the_last_one(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    detector = Detector(cfg.detector, load_model(cfg.model.path, cfg.model.runtime))
    detector.process(detector.admit(series(["a", "b"], 3), now=0.0)[0])
    detector.process(detector.admit(series(["b"], 1, start=3), now=10.0)[0])
    assert sorted(detector.snapshot()) == ["a", "asset/a", "asset/b", "b"]
    assert sorted(detector.snapshot(since=5.0)) == ["asset/b", "b"]


def test_prune_removes_states_by_age_and_by_count(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "g.db")
    try:
        with store.db.conn:
            store.db.conn.executemany(
                "INSERT INTO stream_state (stream, model_hash, state, updated_ts) "
                "VALUES (?, 'm', '{}', ?)",
                [(f"s{i}", T0 + i) for i in range(10)],
            )
        counts = store.prune(1e9, 10**12, state_retention_s=5.5, max_states=3, now=T0 + 10)
        assert counts["states_expired"] == 5  # s0..s4: checkpointed more than 5.5 s ago
        assert counts["states_over_count"] == 2  # of s5..s9 the newest 3 stay
        assert sorted(store.load_states("m")) == ["s7", "s8", "s9"]
        assert store.load_states("m", ["s8", "nope"]) == {"s8": b"{}"}  # rows as stored bytes
    finally:
        store.close()


def test_a_forgotten_stream_is_freed_without_the_cycle_collector(tmp_path: Path) -> None:
    # The pipeline freezes survivors into the collector's permanent generation once a second
    # (runner._freeze_survivors), so a forgotten stream must not rely on the collector.
    import gc

    from gateway.detector.engine import core_module

    cfg = config(tmp_path)
    core = core_module("python")
    engine = core.Engine(cfg.detector, load_model(cfg.model.path, cfg.model.runtime))
    engine.process(series(["a", "b"], 40))
    tracked = [o for o in gc.get_objects() if isinstance(o, core.Channel)]
    mine = {id(o) for o in tracked if o in engine.channels.values()}
    assert len(mine) == 2
    del tracked
    gc.disable()
    try:
        before = sum(1 for o in gc.get_objects() if isinstance(o, core.Channel) and id(o) in mine)
        assert engine.forget("b")
        after = sum(1 for o in gc.get_objects() if isinstance(o, core.Channel) and id(o) in mine)
    finally:
        gc.enable()
    assert (before, after) == (2, 1)
