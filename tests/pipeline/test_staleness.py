"""Stale and flapping streams: pure logic driven by a fake clock, then through the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.config import IngestSection, parse_config
from gateway.detector import Detector
from gateway.model.runtime import load_model
from gateway.pipeline.ingest import IngestQueue
from gateway.pipeline.runner import Pipeline
from gateway.pipeline.staleness import StalenessTracker
from gateway.records import Event, Reading
from tests.helpers import wait_for

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tracker(**section: Any) -> tuple[StalenessTracker, Clock]:
    clock = Clock()
    values = {"stale_factor": 5.0, "stale_min": 2.0, "flap_limit": 3, "flap_window": 100.0}
    values.update(section)
    return StalenessTracker(IngestSection(**values), clock, lambda: T0 + clock.now), clock


def feed(t: StalenessTracker, clock: Clock, stream: str, n: int, every: float) -> list[Event]:
    events: list[Event] = []
    for _ in range(n):
        clock.now += every
        events += t.observe([Reading(stream, T0 + clock.now, 1.0, "src")])
        events += t.check()
    return events


def kinds(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.kind, e.subject) for e in events]


def test_silent_stream_is_stale_once_then_recovered() -> None:
    t, clock = tracker()
    assert feed(t, clock, "a", 10, 1.0) == []
    assert t.interval("a") == 1.0
    clock.now += 4.9
    assert t.check() == []  # within 5 x the usual interval
    clock.now += 0.3  # (the tracker scans at most every 0.25 s)
    stale = t.check()
    assert kinds(stale) == [("stale", "a")]
    assert stale[0].detail["usual_interval_s"] == 1.0 and stale[0].detail["silent_s"] > 5.0
    clock.now += 60.0
    assert t.check() == [] and t.stale_streams() == ["a"]  # reported once
    back = feed(t, clock, "a", 1, 1.0)
    assert kinds(back) == [("recovered", "a")] and back[0].detail["silent_s"] > 60.0
    assert t.stale_streams() == []
    assert t.interval("a") == 1.0  # the silence did not teach it a longer interval


def test_each_stream_has_its_own_interval_and_a_floor() -> None:
    t, clock = tracker(stale_min=3.0)
    for _ in range(100):
        clock.now += 0.1
        t.observe([Reading("fast", T0 + clock.now, 1.0, "s")])
        if round(clock.now * 10) % 20 == 0:
            t.observe([Reading("slow", T0 + clock.now, 1.0, "s")])
    clock.now += 2.9  # fast: 5 x 0.1 s is below the 3 s floor
    assert t.check() == []
    clock.now += 0.3
    assert kinds(t.check()) == [("stale", "fast")]
    clock.now += 7.0  # slow: 5 x 2 s
    assert kinds(t.check()) == [("stale", "slow")]


def test_a_stream_needs_a_few_readings_before_it_can_be_stale() -> None:
    t, clock = tracker()
    feed(t, clock, "a", 2, 1.0)
    clock.now += 1000.0
    assert t.check() == []


def test_flapping_is_reported_once_and_then_held_back_until_steady() -> None:
    t, clock = tracker()
    events: list[Event] = []
    for _ in range(5):
        events += feed(t, clock, "a", 5, 1.0)
        clock.now += 10.0
        events += t.check()
    assert kinds(events) == [
        ("stale", "a"),
        ("recovered", "a"),
        ("stale", "a"),
        ("recovered", "a"),
        ("flapping", "a"),
    ]
    assert t.suppressed == 4  # two stale and two recovered events held back
    events = feed(t, clock, "a", 102, 1.0)
    assert kinds(events) == [("steady", "a")]
    clock.now += 10.0
    assert kinds(t.check()) == [("stale", "a")]


def test_disabled() -> None:
    t, clock = tracker(stale_factor=None)
    feed(t, clock, "a", 10, 1.0)
    clock.now += 1e6
    assert t.check() == [] and not t.enabled


def test_pipeline_reports_stale_and_recovered_and_the_detector_resets_after_max_gap(
    tmp_path: Path,
) -> None:
    config = parse_config(
        f"gateway: {{data_dir: {tmp_path}}}\nmodel: {{runtime: numpy}}\n"
        "detector: {max_gap: 30s}\ningest: {stale_min: 0.2s}\n"
    )
    queue = IngestQueue.from_section(config.ingest)
    detector = Detector(config.detector, load_model(None, "numpy"), config.assets)
    pipeline = Pipeline(config, queue, detector)
    pipeline.start()
    try:
        # Device time says 0.1 s between readings; they arrive in a quick burst. The tracker
        # learns the interval from device time, and silence from when readings arrive.
        for i in range(10):
            queue.put(Reading("pump.temp", T0 + 0.1 * i, 20.0 + 0.1 * i, "line-a"))
        wait_for(lambda: pipeline.readings == 10)
        queue.put(Reading("pump.temp", T0 + 1.0, 21.0, "line-a"))  # a fresh arrival
        wait_for(lambda: pipeline.events["stale"] == 1, timeout=30.0)
        assert pipeline.status()["stale_streams"] == ["pump.temp"]
        queue.put(Reading("pump.temp", T0 + 100, 21.0, "line-a"))  # back, 90 s later
        wait_for(lambda: pipeline.events["recovered"] == 1)
    finally:
        pipeline.stop()
    assert pipeline.status()["stale_streams"] == []
    assert pipeline.events["gap_reset"] == 1  # 90 s > max_gap: the detector starts afresh


def test_a_blip_of_one_source_is_one_event_not_one_per_stream() -> None:
    t, clock = tracker()
    names = [f"plant.s{i}" for i in range(20)]
    for _ in range(10):
        clock.now += 1.0
        t.observe([Reading(n, T0 + clock.now, 1.0, "broker-a") for n in names])
        t.observe([Reading("other.x", T0 + clock.now, 1.0, "serial-b")])
        t.check()
    clock.now += 6.0  # every stream of both sources is silent past 5 x its interval
    stale = t.check()
    assert kinds(stale) == [("stale", "other.x"), ("source_stale", "broker-a")]
    assert stale[1].detail["streams"] == 20
    assert stale[1].detail["sample"].split(", ") == sorted(names)[:10]
    assert t.stale_streams() == sorted(names + ["other.x"])  # each stream is still stale
    clock.now += 1.0
    back = t.observe([Reading(n, T0 + clock.now, 1.0, "broker-a") for n in names[:2]])
    assert kinds(back) == [("recovered", "plant.s0"), ("recovered", "plant.s1")]  # two: each
    back = t.observe([Reading(n, T0 + clock.now, 1.0, "broker-a") for n in names[2:]])
    assert kinds(back) == [("source_recovered", "broker-a")]
    assert back[0].detail["streams"] == 18
