"""The ingest queue (bounded, explicit overflow policy) and back-pressure through the pipeline."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.config import IngestSection, parse_config
from gateway.detector import Detector
from gateway.errors import ConfigError
from gateway.model.runtime import load_model
from gateway.pipeline.ingest import IngestQueue
from gateway.pipeline.runner import Pipeline
from gateway.records import DeadLetter, Event, Reading
from tests.helpers import wait_for


def reading(i: int, source: str = "s") -> Reading:
    return Reading(stream=f"{source}.x", ts=1_700_000_000.0 + i, value=float(i), source=source)


def test_drop_oldest_keeps_the_newest_readings_and_counts_per_source() -> None:
    queue = IngestQueue(capacity=3)
    for i in range(5):
        queue.put(reading(i, "a" if i < 2 else "b"))
    readings, side = queue.get_batch(10, 0.0)
    assert [r.value for r in readings] == [2, 3, 4] and side == []
    assert queue.dropped_readings == 2 and queue.dropped_by_source == {"a": 2}
    assert queue.stats()["high_water"] == 3


def test_drop_newest_keeps_the_oldest() -> None:
    queue = IngestQueue(capacity=3, overflow="drop_newest")
    for i in range(5):
        queue.put(reading(i))
    readings, _ = queue.get_batch(10, 0.0)
    assert [r.value for r in readings] == [0, 1, 2]
    assert queue.stats()["dropped_by_source"] == {"s": 2}


def test_readings_and_junk_never_push_out_events() -> None:
    queue = IngestQueue(capacity=100, side_capacity=100)
    queue.put(Event("port_lost", "line-a"))
    for i in range(1000):
        queue.put(reading(i))
        queue.put(DeadLetter.of("line-a", "bad_json", b"{"))
    queue.put(Event("port_recovered", "line-a"))
    readings, side = queue.get_batch(10_000, 0.0)
    events = [r for r in side if isinstance(r, Event)]
    dead = [r for r in side if isinstance(r, DeadLetter)]
    assert [e.kind for e in events] == ["port_lost", "port_recovered"]
    assert len(readings) == 100 and len(dead) == 100
    # Dropped junk is still accounted for, per source and reason.
    assert queue.dropped_dead_letters == {"line-a/bad_json": 900}
    assert queue.dropped_readings == 900


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        IngestQueue(overflow="block")
    with pytest.raises(ConfigError, match="ingest.overflow"):
        parse_config("ingest: {overflow: block}\n")


def test_ingest_section_builds_the_queue() -> None:
    config = parse_config("ingest: {queue_size: 500, overflow: drop_newest, stale_factor: null}\n")
    queue = IngestQueue.from_section(config.ingest)
    assert queue.capacity == 500 and queue.overflow == "drop_newest"
    assert config.ingest.stale_factor is None
    assert parse_config("").ingest == IngestSection()


class GatedDetector:
    """The real detector, held up on its first batch until the test lets it go: the pipeline
    falls behind deterministically, however fast this machine is."""

    def __init__(self, detector: Detector) -> None:
        self._detector = detector
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.values: list[float] = []

    def process(self, readings: Sequence[Reading]) -> Any:
        self.entered.set()
        self.values += [r.value for r in readings]
        self.gate.wait(30.0)
        return self._detector.process(readings)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._detector, name)


def test_feeding_faster_than_the_pipeline_drops_oldest_readings_never_events(
    tmp_path: Path,
) -> None:
    config = parse_config(
        f"gateway: {{data_dir: {tmp_path}}}\nmodel: {{runtime: numpy}}\n"
        "ingest: {queue_size: 1000}\n"
    )
    queue = IngestQueue.from_section(config.ingest)
    model = load_model(None, "numpy")
    detector = GatedDetector(Detector(config.detector, model, config.assets))
    pipeline = Pipeline(config, queue, detector)  # type: ignore[arg-type]
    pipeline.start()
    sent = 20_000
    try:
        queue.put(reading(-1, "first"))
        assert detector.entered.wait(10.0)  # the pipeline is busy with one reading
        for i in range(sent):
            queue.put(reading(i, "a" if i % 2 else "b"))
            if i % 1000 == 0:
                queue.put(Event("port_lost", f"line-{i}"))
                queue.put(DeadLetter.of("a", "bad_json", b"{"))
        detector.gate.set()
        wait_for(lambda: pipeline.readings == 1 + sent - queue.dropped_readings and not len(queue))
        status = pipeline.status()
    finally:
        detector.gate.set()
        pipeline.stop()
    assert queue.dropped_readings == sent - 1000  # exactly the overflow, every one counted
    assert status["dropped_readings"] == sent - 1000
    assert status["ingest"]["dropped_by_source"] == {"a": 9500, "b": 9500}
    assert status["ingest"]["overflow"] == "drop_oldest"
    assert pipeline.events["port_lost"] == 20  # events are never dropped
    assert pipeline.dead_letters["a/bad_json"] == 20
    # drop_oldest: the newest 1000 readings were scored, in order.
    assert detector.values == [-1.0, *map(float, range(sent - 1000, sent))]
