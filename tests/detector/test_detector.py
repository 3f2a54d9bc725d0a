"""The detector's mechanisms, each on a signal made for it, through the real model, on both
builds (``core``). The promises an operator reads about are in test_properties.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from gateway.config import DetectorSection, Span
from gateway.detector import Detector
from gateway.model.runtime import StepModel
from gateway.records import Reading

CFG = DetectorSection()
T0 = 1_700_000_000.0


@dataclass
class CountingModel:
    """The real model, with a record of the batch size of every call."""

    inner: StepModel
    batch_sizes: list[int] = field(default_factory=list)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.inner, name)

    def step(self, x, h, dt):  # noqa: ANN001, ANN201
        self.batch_sizes.append(len(x))
        return self.inner.step(x, h, dt)


def run(detector: Detector, stream: str, values: np.ndarray, t0: float = T0, dt: float = 1.0):
    scores, alerts, events, states = [], [], [], []
    for i, value in enumerate(values):
        out = detector.process([Reading(stream, t0 + i * dt, float(value), "test")])
        scores.append(out.scored[0].score)
        states.append(out.scored[0].alert)
        alerts.extend(out.alerts)
        events.extend(out.events)
    return np.array(scores), alerts, events, np.array(states)


def noise(n: int, seed: int = 1, sd: float = 0.5) -> np.ndarray:
    return 20.0 + np.random.default_rng(seed).normal(0.0, sd, n)


def test_a_level_shift_is_explained_by_observed_expected_and_band(model, core) -> None:
    values = noise(1500)
    values[1000:] += 6 * 0.5
    _, alerts, _, _ = run(Detector(CFG, model, core=core), "temp", values)
    raised = [a for a in alerts if a.state == "raised"]
    assert len(raised) == 1 and T0 + 1000 <= raised[0].ts <= T0 + 1010
    top = raised[0].contributors[0]
    assert top.reason == "level" and top.observed > raised[0].band[1]
    assert raised[0].band[0] < 20.0 < raised[0].band[1]  # the band is the pre-fault normal
    assert 0.0 < raised[0].score < 1.0


def test_no_alert_during_warmup(model, core) -> None:
    values = noise(400)
    values[100:] += 10.0
    _, alerts, _, _ = run(Detector(CFG, model, core=core), "temp", values[:300])
    assert alerts == []


def test_all_streams_of_a_tick_are_stepped_in_one_call(model, core) -> None:
    spy = CountingModel(model)
    detector = Detector(CFG, spy, core=core)  # type: ignore[arg-type]
    readings = [Reading(f"s{k}", 10.0, 1.0 + k, "t") for k in range(7)]
    readings += [Reading(f"s{k}", 11.0, 1.0 + k, "t") for k in range(3)]  # a second round
    out = detector.process(readings)
    assert spy.batch_sizes == [7, 3]
    assert len(out.scored) == 10


def test_a_tick_with_a_stream_twice_is_two_ticks(model, core) -> None:
    detector = Detector(CFG, CountingModel(model), core=core)  # type: ignore[arg-type]
    tick = [Reading("a", 1.0, 1.0, "t"), Reading("b", 1.0, 2.0, "t"), Reading("a", 2.0, 1.5, "t")]
    out = detector.process_ticks([tick])
    assert [s.stream for s in out.scored] == ["a", "b", "a"]  # none dropped
    assert detector._engine.model.batch_sizes == [2, 1]


def test_an_asset_alert_names_the_faulty_channel_first(model, core) -> None:
    detector = Detector(CFG, model, assets={"pump": ["flow", "temp", "vib"]}, core=core)
    rng = np.random.default_rng(3)
    alerts = []
    for i in range(1300):
        flow = 10 + rng.normal(0, 0.2) + (3.0 if i >= 1000 else 0.0)
        tick = [
            Reading("flow", T0 + i, flow, "t"),
            Reading("temp", T0 + i, 50 + rng.normal(0, 1), "t"),
            Reading("vib", T0 + i, 0.02 + rng.normal(0, 0.001), "t"),
        ]
        alerts += detector.process(tick).alerts
    raised = [a for a in alerts if a.state == "raised"]
    assert raised and raised[0].stream == "pump"
    assert raised[0].contributors[0].stream == "flow"
    assert raised[0].contributors[0].share > 0.5


def test_a_small_persistent_shift_is_caught_by_the_average(model, core) -> None:
    # 2.5 sd, held: no single reading is remarkable, but sixteen in a row are.
    values = noise(2500, seed=4)
    values[2000:2400] += 2.5 * 0.5
    _, alerts, _, active = run(Detector(CFG, model, core=core), "temp", values)
    raised = [a for a in alerts if a.state == "raised"]
    assert [a for a in raised if a.ts < T0 + 2000] == []
    assert len(raised) == 1 and T0 + 2000 <= raised[0].ts <= T0 + 2040
    assert active[2040:2400].all()  # not learned while it lasts


def test_a_stuck_sensor_raises(model, core) -> None:
    values = noise(1500, seed=5)
    values[1000:] = values[999]
    _, alerts, _, _ = run(Detector(CFG, model, core=core), "flow", values)
    raised = [a for a in alerts if a.state == "raised"]
    assert raised and raised[0].contributors[0].reason == "stuck"
    assert T0 + 1020 <= raised[0].ts <= T0 + 1100


def test_one_step_of_a_coarse_transmitter_is_not_a_fault(model, core) -> None:
    values = np.full(3000, 65.0)  # a 5-degree transmitter at rest, that flickers once
    values[1500] = 60.0
    _, alerts, _, _ = run(Detector(CFG, model, core=core), "temp", values)
    assert alerts == []
    toggling = np.where(np.random.default_rng(6).random(3000) < 0.3, 60.0, 65.0)
    _, alerts, _, _ = run(Detector(CFG, model, core=core), "temp2", toggling)
    assert alerts == []
    values[2000:] = 80.0  # three steps at once is a change
    _, alerts, _, _ = run(Detector(CFG, model, core=core), "temp3", values)
    assert [a.ts - T0 for a in alerts if a.state == "raised"][:1] == [2002.0]  # min_duration


def test_a_cycle_is_found_and_shown(model, core) -> None:
    k = np.arange(6000)
    values = 10 + 3 * np.sin(2 * np.pi * k / 144.0) + np.random.default_rng(7).normal(0, 0.05, 6000)
    detector = Detector(CFG, model, core=core)
    _, alerts, _, _ = run(detector, "tank", values)
    assert alerts == []
    view = detector.channel_view("tank")
    assert view is not None and view["cycle_readings"] == pytest.approx(144.0, abs=0.5)


def test_an_alert_clears_when_its_channel_returns_though_another_channel_drifts(
    model, core
) -> None:
    # 'temp' ramps steadily (a pump warming up); 'flow' drops for 200 readings. Only the
    # channel that raised the alert stops adapting: temp keeps following its ramp.
    detector = Detector(CFG, model, assets={"pump": ["flow", "temp"]}, core=core)
    rng = np.random.default_rng(5)
    alerts = []
    for i in range(1800):
        flow = 10 + rng.normal(0, 0.2) - (2.0 if 1000 <= i < 1200 else 0.0)
        temp = 40 + 0.001 * i + rng.normal(0, 0.1)
        tick = [Reading("flow", T0 + i, flow, "t"), Reading("temp", T0 + i, temp, "t")]
        alerts += detector.process(tick).alerts
    raised = [a for a in alerts if a.state == "raised"]
    cleared = [a for a in alerts if a.state == "cleared"]
    assert len(raised) == 1 and T0 + 1000 <= raised[0].ts <= T0 + 1010
    assert raised[0].contributors[0].stream == "flow"
    assert len(cleared) == 1 and T0 + 1200 <= cleared[0].ts <= T0 + 1300


def test_accept_after_when_a_site_sets_it_takes_a_long_fault_as_the_new_normal(model, core) -> None:
    cfg = DetectorSection(accept_after=Span(600.0, True))
    values = noise(3000)
    values[1000:] += 6 * 0.5
    _, alerts, events, active = run(Detector(cfg, model, core=core), "temp", values)
    assert [a.state for a in alerts] == ["raised", "cleared"]
    assert active[1100:1500].all()
    new_normal = [e for e in events if e.kind == "new_normal"]
    assert len(new_normal) == 1 and T0 + 1590 <= new_normal[0].ts <= T0 + 1620
    assert not active[-500:].any()


def test_a_fault_right_after_a_short_alert_is_not_hidden_by_the_cooldown(model, core) -> None:
    """A blip raises an alert that clears; a real fault follows within the cooldown. It is
    reported once it has lasted ``cooldown_min_duration`` readings."""
    values = noise(2000)
    values[1000:1004] += 12 * 0.5
    values[1100:] += 6 * 0.5

    def raised(cooldown_min_duration: int) -> list[float]:
        cfg = CFG.model_copy(
            update={"cooldown": Span(600.0, True), "cooldown_min_duration": cooldown_min_duration}
        )
        _, alerts, _, _ = run(Detector(cfg, model, core=core), "temp", values)
        return [a.ts - T0 for a in alerts if a.state == "raised"]

    blip, fault = raised(30)[:2]
    assert 1000 <= blip < 1010
    assert 1100 + 30 <= fault <= 1100 + 60
    hidden = raised(0)  # no raise at all during the cooldown
    assert hidden[0] == blip and (len(hidden) == 1 or hidden[1] >= blip + 600)


def test_snapshot_restore_continues_exactly(model, core) -> None:
    values = noise(2500)
    values[1900:] += 3.0
    whole, whole_alerts, _, _ = run(Detector(CFG, model, core=core), "temp", values)
    first = Detector(CFG, model, core=core)
    head, _, _, _ = run(first, "temp", values[:1500])
    other = "compiled" if core == "python" else "python"  # a checkpoint moves between builds
    second = Detector(CFG, model, core=other)
    assert second.restore(first.snapshot()) == 1
    tail, tail_alerts, _, _ = run(second, "temp", values[1500:], t0=T0 + 1500)
    np.testing.assert_array_equal(np.concatenate([head, tail]), whole)
    assert [a.ts for a in tail_alerts] == [a.ts for a in whole_alerts if a.ts >= T0 + 1500]


def test_snapshot_restore_of_an_asset_keeps_its_relation(model, core) -> None:
    names = ["a", "b", "c"]
    rng = np.random.default_rng(9)
    load = np.cumsum(rng.normal(0, 0.05, 1500))
    rows = [[load[i] + rng.normal(0, 0.1) * (k + 1) for k in range(3)] for i in range(1500)]

    def feed(detector: Detector, start: int, stop: int) -> list[float]:
        scores = []
        for i in range(start, stop):
            tick = [Reading(n, T0 + i, float(rows[i][k]), "t") for k, n in enumerate(names)]
            scores += [s.score for s in detector.process(tick).scored]
        return scores

    whole = feed(Detector(CFG, model, assets={"m": names}, core=core), 0, 1500)
    first = Detector(CFG, model, assets={"m": names}, core=core)
    head = feed(first, 0, 900)
    second = Detector(CFG, model, assets={"m": names}, core=core)
    assert second.restore(first.snapshot()) == 3
    assert head + feed(second, 900, 1500) == whole


def test_restore_skips_damaged_entries_and_other_versions(model, core) -> None:
    detector = Detector(CFG, model, core=core)
    run(detector, "a", noise(600))
    good = detector.snapshot()
    stale = json.loads(good["a"])
    stale["v"] = 1
    broken = json.loads(good["a"])
    broken["c"][0] = "not base64!"
    states = {
        "a": json.dumps(stale),
        "b": json.dumps(broken),
        "c": "not json",
        "d": '{"h": [1, 2]}',
        "asset/x": "{}",
    }
    fresh = Detector(CFG, model, core=core)
    assert fresh.restore(states) == 0
    run(fresh, "a", noise(50))  # and the stream works from scratch
    assert fresh.channel_view("a")["readings"] == 50


def test_scores_stay_below_one_and_state_finite_on_wild_input(model, core) -> None:
    detector = Detector(CFG, model, core=core)
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [
            noise(400),
            rng.normal(0, 1e9, 50),
            np.full(50, 1e-12),
            [1e200, -1e300, 5e-324],
            noise(100),
        ]
    )
    scores, _, _, _ = run(detector, "wild", values)
    assert np.all((scores >= 0) & (scores < 1))
    view = detector.channel_view("wild")
    assert view and np.isfinite(view["baseline"]) and np.isfinite(view["scale"])


def test_non_finite_readings_are_passed_over(model, core) -> None:
    detector = Detector(CFG, model, core=core)
    out = detector.process(
        [Reading("x", T0, float("nan"), "t"), Reading("y", float("inf"), 1.0, "t")]
    )
    assert out.scored == [] and detector.streams == []


def test_all_channel_views_at_once_match_one_by_one(model, core) -> None:
    detector = Detector(CFG, model, assets={"pump": ["flow", "temp"]}, core=core)
    rng = np.random.default_rng(8)
    for i in range(400):
        tick = [Reading(s, T0 + i, float(rng.normal(5, 1)), "t") for s in ("flow", "temp", "x")]
        detector.process(tick)
    views = detector.channel_views()
    assert list(views) == ["flow", "temp", "x"]
    assert views == {s: detector.channel_view(s) for s in ("flow", "temp", "x")}
    assert views["x"]["interval_s"] == pytest.approx(1.0)


def test_a_row_is_scored_as_the_tick_of_its_readings(model: StepModel, core: str) -> None:
    """``process_row`` (replay) and ``process_ticks`` of the same readings: the same state,
    alerts and events, and per value the expected value and the asset's score and alert
    the scored reading carries; a value or time that is not finite is skipped, a stream
    named twice starts the next tick."""
    import math

    rng = np.random.default_rng(8)
    names = ["a", "b", "c", "d"]
    by_row = Detector(DetectorSection(), model, assets={"m": names}, core=core)
    by_tick = Detector(DetectorSection(), model, assets={"m": names}, core=core)
    raised = 0
    for i in range(1500):
        values = [float(v) for v in rng.normal(0, 1, 4) + (5.0 if 900 < i < 1000 else 0.0)]
        streams = list(names)
        if i % 37 == 0:
            values[1] = math.nan
        if i % 101 == 0:
            streams[3] = "a"  # twice in a row: the second starts the next tick
        ts = math.inf if i == 700 else float(i)
        row = by_row.process_row(streams, ts, values)
        kept = [Reading(s, ts, v, "t") for s, v in zip(streams, values, strict=True)
                if math.isfinite(v) and math.isfinite(ts)]  # fmt: skip
        tick = by_tick.process_ticks([kept])
        assert row.scored == [] and row.scored_values == len(tick.scored)
        scored = iter(tick.scored)
        for s, v, e in zip(streams, values, row.expected, strict=True):
            if not (math.isfinite(v) and math.isfinite(ts)):
                assert math.isnan(e)
                continue
            r = next(scored)
            assert r.stream == s and (e == r.expected or (math.isnan(e) and r.expected is None))
        if tick.scored:
            assert (row.score, row.alert) == (tick.scored[-1].score, tick.scored[-1].alert)
        assert [(a.state, a.ts, a.score) for a in row.alerts] == [
            (a.state, a.ts, a.score) for a in tick.alerts
        ]
        assert [(e.kind, e.subject, e.ts) for e in row.events] == [
            (e.kind, e.subject, e.ts) for e in tick.events
        ]
        raised += sum(a.state == "raised" for a in row.alerts)
    assert raised >= 1  # the shift at 900 was judged on both paths
    assert by_row.snapshot() == by_tick.snapshot()
    with pytest.raises(ValueError, match="2 streams but 1 values"):
        by_row.process_row(["a", "b"], 1.0, [1.0])
