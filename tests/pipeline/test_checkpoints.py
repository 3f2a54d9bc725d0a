"""Incremental checkpoints (#16 item 3): a round writes only the streams that had readings
since the last complete round, a slice per pipeline iteration, as compact binary rows; a
restart restores them; a damaged row is quarantined as a dead letter, not a crash."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

from gateway.config import Config, parse_config
from gateway.detector import Detector
from gateway.model.runtime import load_model
from gateway.pipeline.ingest import IngestQueue
from gateway.pipeline.runner import Pipeline
from gateway.records import Reading
from gateway.statecodec import VERSION
from tests.helpers import wait_for

T0 = 1_000_000.0
OLD_ROWS = Path(__file__).resolve().parents[1] / "detector" / "data" / "checkpoint_v1.json"


def config(data_dir: Path) -> Config:
    return parse_config(
        f"gateway: {{id: gw, data_dir: {data_dir}}}\ndetector: {{warmup: 20}}\n"
        "storage: {checkpoint_every: 0.05s}\n"
    )


def start(cfg: Config) -> tuple[Pipeline, IngestQueue, Detector]:
    queue = IngestQueue()
    detector = Detector(cfg.detector, load_model(cfg.model.path, cfg.model.runtime))
    pipeline = Pipeline(cfg, queue, detector)
    pipeline.start()
    return pipeline, queue, detector


def series(streams: list[str], n: int, start: int = 0) -> list[Reading]:
    return [Reading(s, T0 + i, float(i % 5) + k, "src") for i in range(start, start + n)
            for k, s in enumerate(streams)]  # fmt: skip


def settle(pipeline: Pipeline, readings: int) -> None:
    """Wait until ``readings`` are scored and two rounds began after that (the first may
    have started before), so every change is checkpointed."""
    wait_for(lambda: pipeline.readings == readings, what=f"{readings} readings scored")
    rounds = pipeline.checkpoint_rounds
    wait_for(lambda: pipeline.checkpoint_rounds >= rounds + 2, what="two more rounds")


def checkpoints(data_dir: Path) -> dict[str, tuple[bytes, float]]:
    with sqlite3.connect(data_dir / "gateway.db") as db:
        rows = db.execute("SELECT stream, CAST(state AS BLOB), updated_ts FROM stream_state")
        return {stream: (bytes(state), ts) for stream, state, ts in rows}


def test_a_round_writes_only_the_streams_that_changed_and_a_restart_restores_them(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    pipeline, queue, _ = start(cfg)
    try:
        queue.put_many(series(["a", "b", "c"], 40))
        settle(pipeline, 120)
        first = checkpoints(tmp_path)
        assert len(first) == 6  # a, b, c and their assets
        assert all(state[0] & 0x7F == VERSION for state, _ in first.values())  # binary rows
        queue.put_many(series(["a"], 5, start=40))
        settle(pipeline, 125)
    finally:
        pipeline.stop()
    last = checkpoints(tmp_path)
    for key in ("b", "asset/b", "c", "asset/c"):
        assert last[key] == first[key], f"{key} had no readings: not written again"
    assert last["a"] != first["a"] and last["asset/a"][1] > first["asset/a"][1]

    pipeline, queue, detector = start(config(tmp_path))
    try:
        queue.put_many(series(["a", "b", "c"], 1, start=45))
        wait_for(lambda: pipeline.restored_streams == 3, what="a, b, c restored")
    finally:
        pipeline.stop()
    for stream, seen in (("a", 46), ("b", 41), ("c", 41)):
        view = detector.channel_view(stream)
        assert view is not None and view["readings"] == seen  # carried on where it was


def test_a_damaged_checkpoint_row_is_a_dead_letter_and_the_stream_starts_fresh(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    pipeline, queue, _ = start(cfg)
    queue.put_many(series(["a", "b"], 30))
    pipeline.stop()
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        db.execute("UPDATE stream_state SET state = X'01FFFF' WHERE stream = 'a'")
    pipeline, queue, detector = start(cfg)
    try:
        queue.put_many(series(["a", "b"], 2, start=30))
        wait_for(lambda: pipeline.readings == 4, what="both streams scored")
        assert pipeline.is_alive()
    finally:
        pipeline.stop()
    assert pipeline.restored_streams == 1  # b
    assert pipeline.status()["checkpoint"]["unreadable_rows"] == 1
    assert pipeline.dead_letters == {"checkpoint/bad_checkpoint": 1}
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        letters = db.execute("SELECT source, reason, payload FROM dead_letters").fetchall()
    assert letters == [("checkpoint", "bad_checkpoint", "a")]
    view = detector.channel_view("a")
    assert view is not None and view["readings"] == 2  # started fresh


def test_rows_of_the_release_before_restore_through_the_pipeline(tmp_path: Path) -> None:
    """A database written by the release before #16 item 4 (a fault flag a byte, the history
    always 2,048 values), as binary rows and as the JSON text of older releases: a restart
    restores both streams where they were, nothing quarantined."""
    saved = json.loads(OLD_ROWS.read_text())
    binary = {k: base64.b64decode(v) for k, v in saved["binary"].items()}
    text = {k.replace("pump/temp", "pump/old"): v for k, v in saved["json"].items()}
    cfg = config(tmp_path)
    pipeline, queue, detector = start(cfg)
    pipeline.stop()  # the database exists now, empty
    model_hash = detector.model.sha256
    with sqlite3.connect(tmp_path / "gateway.db") as db:
        db.executemany(
            "INSERT INTO stream_state (stream, model_hash, state, updated_ts) VALUES (?, ?, ?, 0)",
            [(k, model_hash, v) for k, v in {**binary, **text}.items()],
        )
    pipeline, queue, detector = start(cfg)
    try:
        queue.put_many([Reading(s, T0 + 1600, 50.0, "src") for s in ("pump/temp", "pump/old")])
        wait_for(lambda: pipeline.readings == 2, what="both streams scored")
    finally:
        pipeline.stop()
    assert pipeline.restored_streams == 2
    assert pipeline.status()["checkpoint"]["unreadable_rows"] == 0
    for stream in ("pump/temp", "pump/old"):
        view = detector.channel_view(stream)
        assert view is not None and view["readings"] == 1601  # carried on where it was
