"""Detector state survives a restart: stop mid-stream, start again on the same database,
and the scores are those of an uninterrupted run (DESIGN.md: state persists in SQLite)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from gateway.config import DetectorSection, parse_config
from gateway.detector import Detector
from gateway.model.naive import NaiveModel
from gateway.model.runtime import StepModel, load_model
from gateway.pipeline.ingest import IngestQueue
from gateway.pipeline.runner import Pipeline
from gateway.records import Reading

N, STOP_AT = 900, 500


def readings() -> list[Reading]:
    rng = np.random.default_rng(9)
    values = 5.0 + rng.normal(0, 0.1, N)
    values[700:] += 1.0
    return [
        Reading(stream, 1_000_000.0 + i, float(v + k), "test")
        for i, v in enumerate(values)
        for k, stream in enumerate(("a", "b"))
    ]


def run_pipeline(
    data_dir: Path, batch: list[Reading], model: StepModel | None = None, assets: str = ""
) -> Pipeline:
    config = parse_config(
        f"gateway: {{id: gw, data_dir: {data_dir}}}\n"
        "detector: {warmup: 100, baseline_halflife: 10m}\n" + assets
    )
    model = model or load_model(config.model.path, config.model.runtime)
    queue = IngestQueue()
    pipeline = Pipeline(config, queue, Detector(config.detector, model, config.assets))
    pipeline.start()
    for reading in batch:
        queue.put(reading)
    pipeline.stop()  # drains the queue and checkpoints the detector state
    return pipeline


def scores(data_dir: Path) -> list[tuple[str, float, float]]:
    with sqlite3.connect(data_dir / "gateway.db") as db:
        rows = db.execute("SELECT stream, ts, score FROM readings ORDER BY stream, ts").fetchall()
    return [(s, t, x) for s, t, x in rows]


@pytest.mark.parametrize("assets", ["", "assets: {pump: [a, b]}\n"], ids=["streams", "asset"])
def test_restart_mid_stream_gives_the_same_scores(tmp_path: Path, assets: str) -> None:
    data = readings()
    run_pipeline(tmp_path / "whole", data, assets=assets)
    run_pipeline(tmp_path / "split", data[: 2 * STOP_AT], assets=assets)
    run_pipeline(tmp_path / "split", data[2 * STOP_AT :], assets=assets)
    whole, split = scores(tmp_path / "whole"), scores(tmp_path / "split")
    assert len(whole) == len(split) == 2 * N
    assert [r[:2] for r in whole] == [r[:2] for r in split]
    np.testing.assert_allclose([r[2] for r in split], [r[2] for r in whole], atol=1e-6)
    # the 10-sigma shift at 700 alerts in both runs
    assert max(r[2] for r in whole) > DetectorSection().threshold


def test_state_is_restored_only_for_the_same_model(tmp_path: Path) -> None:
    data = readings()
    run_pipeline(tmp_path / "db", data[: 2 * STOP_AT])
    same = run_pipeline(tmp_path / "db", data[2 * STOP_AT : 2 * STOP_AT + 2])
    assert same.restored_streams == 2
    other = run_pipeline(tmp_path / "db", data[2 * STOP_AT + 2 :], NaiveModel())
    assert other.restored_streams == 0  # another model hash: start fresh, no stale state
    view = other.detector.channel_view("a")
    assert view is not None and view["readings"] == N - STOP_AT - 1
