"""The demo simulator: deterministic signals, faults announced at their configured times."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest

from gateway.config import NAME_PATTERN, SimulateSource
from gateway.records import Event, Reading
from gateway.sources import build_source
from gateway.sources.simulate import FAULT_KINDS, SignalModel, Simulator, simulate
from tests.helpers import ListSink, wait_for


def config(**kwargs: Any) -> SimulateSource:
    values: dict[str, Any] = {"type": "simulate", "streams": 4, "rate_hz": 10.0}
    values.update(kwargs)
    return SimulateSource.model_validate(values)


def test_streams_are_named_and_deterministic_from_the_seed() -> None:
    cfg = config(streams=5, name="demo")
    first = list(simulate(cfg, t0=1000.0, n_ticks=50))
    assert first == list(simulate(cfg, t0=1000.0, n_ticks=50))
    other = list(simulate(config(streams=5, name="demo", seed=8), 1000.0, 50))
    assert [r.value for r in first if isinstance(r, Reading)] != [
        r.value for r in other if isinstance(r, Reading)
    ]
    names = [r.stream for r in first if isinstance(r, Reading)][:5]
    assert names == [
        "demo-temp-0",
        "demo-pressure-1",
        "demo-flow-2",
        "demo-vibration-3",
        "demo-temp-4",
    ]
    assert all(re.fullmatch(NAME_PATTERN, n) for n in names)
    # Random access: a later window equals the same ticks of one long run.
    late = list(simulate(cfg, 1000.0, n_ticks=10, start_tick=600))
    full = list(simulate(cfg, 1000.0, n_ticks=610))
    assert late == full[-len(late) :]


def test_values_are_finite_realistic_and_drift() -> None:
    cfg = config(streams=4, rate_hz=1.0, faults=False, drift_per_hour=2.0)
    model = SignalModel(cfg)
    hour = np.array([model.values(k) for k in range(3600)])
    assert np.isfinite(hour).all()
    residual = hour - np.array([model.clean(k) for k in range(3600)])
    assert np.all(residual == 0)  # faults off: nothing injected
    later = np.array([model.values(k) for k in range(10 * 3600, 10 * 3600 + 3600)])
    moved = np.abs(later.mean(axis=0) - hour.mean(axis=0)) / model.sigma
    assert np.all((moved > 10) & (moved < 30))  # ~20 sigma in 10 h, at 2 sigma/hour
    temp = hour[:, 0]
    assert 15 < temp.mean() < 28 and temp.std() < 1.0


def test_faults_follow_the_schedule_and_cycle_kinds_and_streams() -> None:
    cfg = config(streams=2, rate_hz=20.0, fault_after=1.0, fault_every=2.0, fault_length=0.5)
    events = [r for r in simulate(cfg, t0=500.0, n_ticks=20 * 18) if isinstance(r, Event)]
    assert [e.detail["start"] for e in events] == pytest.approx(
        [501.0, 503.0, 505.0, 507.0, 509.0, 511.0, 513.0, 515.0, 517.0]
    )
    assert all(e.kind == "fault_injected" for e in events)
    assert all(e.detail["end"] - e.detail["start"] == pytest.approx(0.5) for e in events)
    assert [e.detail["kind"] for e in events[:4]] == list(FAULT_KINDS)
    seen = {(e.subject, e.detail["kind"]) for e in events[:8]}
    assert len(seen) == 8  # every kind on every stream within two cycles
    assert all(
        math.isfinite(r.value) for r in simulate(cfg, 500.0, 20 * 18) if isinstance(r, Reading)
    )


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_changes_only_its_window(kind: str) -> None:
    cfg = config(streams=1, rate_hz=10.0, fault_after=2.0, fault_every=100.0, fault_length=1.0)
    model = SignalModel(cfg)
    number = FAULT_KINDS.index(kind)
    start = 2 + 100 * number
    ticks = range((start - 2) * 10, (start + 3) * 10)
    diff = np.array([model.values(k)[0] - model.clean(k)[0] for k in ticks])
    inside = np.array([start * 10 <= k < (start + 1) * 10 for k in ticks])
    assert np.all(diff[~inside] == 0)
    sigma = model.sigma[0]
    window = diff[inside]
    if kind == "level_shift":
        assert np.allclose(np.abs(window), 6 * sigma)
    elif kind == "spike_burst":
        assert np.max(np.abs(window)) == pytest.approx(8 * sigma)
    elif kind == "variance_burst":
        assert np.std(window) > sigma
    else:
        stuck = [model.values(k)[0] for k in range(start * 10, (start + 1) * 10)]
        assert len(set(stuck)) == 1


def test_live_source_matches_the_offline_generator_and_announces_faults() -> None:
    cfg = config(streams=3, rate_hz=50.0, fault_after=0.2, fault_every=0.3, fault_length=0.1)
    sink = ListSink()
    source = build_source(cfg, sink)
    assert isinstance(source, Simulator)
    source.start()
    try:
        wait_for(lambda: len(sink.events()) >= 3)
        wait_for(lambda: len(sink.readings()) >= 3 * 30)
    finally:
        source.stop()
        assert source.join(5.0)
    assert source.t0 is not None
    readings = sink.readings()
    n_ticks = len(readings) // 3
    offline = list(simulate(cfg, source.t0, n_ticks))
    assert readings[: 3 * n_ticks] == [r for r in offline if isinstance(r, Reading)]
    events = sink.events()
    assert events == [r for r in offline if isinstance(r, Event)][: len(events)]
    for j, event in enumerate(events):
        assert event.detail["start"] == pytest.approx(source.t0 + 0.2 + 0.3 * j)
        assert event.ts == event.detail["start"]
    stats = source.stats()
    assert stats["readings"] == len(readings) and stats["events"]["fault_injected"] == len(events)
    assert source._threads[0].name == "source-sim"


def test_falling_behind_skips_ticks_but_still_announces_faults() -> None:
    clock = {"mono": 0.0}
    cfg = config(streams=1, rate_hz=10.0, fault_after=2.0, fault_every=1000.0)
    sink = ListSink()
    source = Simulator(cfg, sink, clock=lambda: 1000.0, monotonic=lambda: clock["mono"])
    source.t0, source._mono0 = 1000.0, 0.0
    source._tick_once()  # tick 0
    clock["mono"] = 5.0  # stalled for five seconds
    source._tick_once()
    stats = source.stats()
    assert stats["skipped_ticks"] == 40  # everything but the last second (10 ticks) skipped
    assert len(sink.readings()) == 11 and stats["ticks"] == 51
    assert [e.detail["start"] for e in sink.events()] == [1002.0]
