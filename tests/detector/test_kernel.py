"""The compiled detector core (``gateway/detector/_kernel.c``) against the Python core.

The Python core in ``engine.py`` is the reference: on the same readings both must give the
same scores, expected values, alerts (ids aside) and events, and the same checkpoints. Inputs
are varied on purpose (faults, gaps, irregular and backwards time, non-finite values, several
assets in one tick, restores mid-stream, operator actions), plus a few SKAB files end to end.

The compiled core must be built here (``python -m gateway.detector.build``): a missing build
fails, it is not skipped, unless ``LIQUID_GATEWAY_PURE`` says the Python core is deliberate.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Config, DetectorSection
from gateway.detector import Detector, DetectorOutput
from gateway.detector.engine import PURE_ENV, compiled_core_available, default_core
from gateway.model.naive import NaiveModel
from gateway.model.runtime import StepModel, load_model
from gateway.records import Reading

SKAB = Path("/work/shared/datasets/skab/data")
CFG = DetectorSection(
    warmup=100,
    baseline_halflife=120,
    threshold=0.999,
    clear_threshold=0.99,
    min_duration=2,
    cooldown=30,
    max_gap=60,
    drift_threshold=2.0,
    drift_halflife=600,
    accept_after=150,
)
REL = 1e-9

pytestmark = pytest.mark.skipif(
    os.environ.get(PURE_ENV, "").strip() not in ("", "0") and not compiled_core_available(),
    reason=f"{PURE_ENV} is set: the compiled core is deliberately absent",
)


def test_the_compiled_core_is_built_and_is_the_default() -> None:
    assert compiled_core_available(), "run: python -m gateway.detector.build"
    if os.environ.get(PURE_ENV, "").strip() in ("", "0"):
        assert default_core() == "compiled"


def test_the_env_var_forces_the_python_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PURE_ENV, "1")
    assert Detector(CFG, NaiveModel()).core == "python"
    monkeypatch.setenv(PURE_ENV, "0")
    assert Detector(CFG, NaiveModel()).core == "compiled"
    with pytest.raises(ValueError, match="unknown detector core"):
        Detector(CFG, NaiveModel(), core="fast")


@pytest.fixture(scope="module")
def model() -> StepModel:
    return load_model(None, "auto")


# --- comparing two runs ------------------------------------------------------------------


def close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= REL * max(abs(a), abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def flatten(out: DetectorOutput) -> dict[str, list[Any]]:
    alerts = []
    for a in out.alerts:
        contributors = [
            (c.stream, c.observed, c.expected, list(c.band), c.share, c.unit, c.reason)
            for c in a.contributors
        ]
        alerts.append(
            (a.stream, a.state, a.ts, a.score, a.observed, a.expected, list(a.band), a.unit,
             a.model, contributors)
        )  # fmt: skip
    events = [
        (e.kind, e.subject, e.ts, {k: v for k, v in e.detail.items() if k != "alert_id"})
        for e in out.events
    ]
    scored = [(s.stream, s.ts, s.value, s.expected, s.score, s.alert) for s in out.scored]
    return {"scored": scored, "alerts": alerts, "events": events}


def assert_same(a: DetectorOutput, b: DetectorOutput, where: str) -> None:
    fa, fb = flatten(a), flatten(b)
    for key in fa:
        if not close(fa[key], fb[key]):
            pairs = [(x, y) for x, y in zip(fa[key], fb[key], strict=False) if not close(x, y)]
            first = pairs[0] if pairs else (len(fa[key]), len(fb[key]))
            raise AssertionError(f"{where}: {key} differ, first: {first}")


def snapshot_values(detector: Detector) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in detector.snapshot().items()}


Batches = Callable[[], Iterator[list[Reading]]]


def run_both(
    model: StepModel,
    batches: Batches,
    cfg: DetectorSection = CFG,
    assets: dict[str, list[str]] | None = None,
    every: Callable[[int, Detector], None] | None = None,
) -> tuple[Detector, Detector, dict[str, int]]:
    """Feed the same batches to a detector of each core; compare every output."""
    py = Detector(cfg, model, assets=assets, core="python")
    cc = Detector(cfg, model, assets=assets, core="compiled")
    counts = {"scored": 0, "alerts": 0, "events": 0}
    for i, batch in enumerate(batches()):
        out_py, out_cc = py.process(batch), cc.process(batch)
        assert_same(out_py, out_cc, f"batch {i}")
        counts["scored"] += len(out_py.scored)
        counts["alerts"] += len(out_py.alerts)
        counts["events"] += len(out_py.events)
        if every is not None:
            every(i, py)
            every(i, cc)
    assert close(snapshot_values(py), snapshot_values(cc))
    for stream in py.streams:
        assert close(py.channel_view(stream), cc.channel_view(stream))
    return py, cc, counts


# --- signals ------------------------------------------------------------------------------


def univariate(kind: str, n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    v = 20.0 + rng.normal(0.0, 0.5, n)
    if kind == "periodic":
        v = 5.0 * np.sin(2 * np.pi * t / 50.0) + rng.normal(0.0, 0.2, n)
        v[900:960] += 4.0
    elif kind == "spiky":
        for k in (300, 700, 701, 705, 1100, 1103):
            v[k] += 12.0
    elif kind == "stuck":
        v = np.round(v, 2)
        v[800:1100] = v[799]
    elif kind == "shift":
        v[600:] += 4.0  # stays: accept_after turns it into a new normal
    elif kind == "drift":
        v += np.concatenate([np.zeros(300), np.linspace(0.0, 25.0, n - 300)])
    elif kind == "gaps":
        t = t + np.where(t >= 500, 100.0, 0.0) + np.where(t >= 1000, 400.0, 0.0)
        v[500:] += 10.0
    elif kind == "irregular":
        dt = rng.exponential(1.0, n)
        dt[::37] = 0.0
        t = np.cumsum(dt)
        t[400::101] -= 5.0  # out of order: dt < 0 is taken as 0
        v[1000:1050] -= 5.0
    elif kind == "nonfinite":
        v[::53] = np.nan
        v[7::89] = np.inf
        v[11::97] = -np.inf
        t[5::71] = np.nan
        v[1200:] += 6.0
    elif kind == "huge":
        v[200] = 1e300
        v[400] = -1e300
        v[600:610] = 1e-300
        v[700] = 5e-324
    return t, v


KINDS = ("noisy", "periodic", "spiky", "stuck", "shift", "drift", "gaps", "irregular",
         "nonfinite", "huge")  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_univariate_streams_match(model: StepModel, kind: str) -> None:
    t, v = univariate(kind, seed=KINDS.index(kind))

    def batches() -> Iterator[list[Reading]]:
        for ts, value in zip(t.tolist(), v.tolist(), strict=True):
            yield [Reading("s", ts, value, "t")]

    _, _, counts = run_both(model, batches)
    assert counts["scored"] > 1000


def test_faults_produce_alerts_and_events_in_both(model: StepModel) -> None:
    """The scenarios above really exercise alerts, gaps, drift and new normals."""
    kinds: dict[str, set[str]] = {}
    for kind in ("shift", "drift", "gaps", "spiky"):
        t, v = univariate(kind, seed=KINDS.index(kind))
        d = Detector(CFG, model, core="compiled")
        out = d.process_ticks([[Reading("s", a, b, "t")] for a, b in zip(t, v, strict=True)])
        kinds[kind] = {e.kind for e in out.events} | {a.state for a in out.alerts}
    assert "raised" in kinds["shift"] and "new_normal" in kinds["shift"]
    assert "drift" in kinds["drift"]
    assert "gap_reset" in kinds["gaps"]
    assert "raised" in kinds["spiky"]


def fleet(n: int = 1500, seed: int = 7) -> Batches:
    """A 4-channel asset with faults in one channel and missing readings, a 2-channel asset,
    and a lone stream, all in the same ticks; batches hold several rounds."""

    def batches() -> Iterator[list[Reading]]:
        rng = np.random.default_rng(seed)
        batch: list[Reading] = []
        for i in range(n):
            ts = float(i) + (0.0 if i < 900 else 90.0)  # one gap for everyone
            pump = {
                "flow": 10 + rng.normal(0, 0.2) + (3.0 if 600 <= i < 700 else 0.0),
                "temp": 50 + 0.01 * i + rng.normal(0, 1),
                "vib": 0.02 + rng.normal(0, 0.001) * (5 if 1100 <= i < 1200 else 1),
                "rpm": 1500.0 if i % 97 else 1501.0,  # nearly constant
            }
            for name, value in pump.items():
                if rng.random() < 0.1:
                    continue  # a missing reading
                batch.append(Reading(name, ts, float(value), "t"))
            batch.append(Reading("in", ts, float(rng.normal(3, 0.1)), "t"))
            out_v = rng.normal(2, 0.1) + (1.5 if 1300 <= i < 1340 else 0.0)
            batch.append(Reading("out", ts, float(out_v), "t"))
            batch.append(Reading("lone", ts + 0.5, float(np.sin(i / 9.0)), "t"))
            if i % 3 == 2:
                yield batch
                batch = []
        if batch:
            yield batch

    return batches


ASSETS = {"pump": ["flow", "temp", "vib", "rpm"], "valve": ["in", "out"]}


def test_multichannel_assets_match(model: StepModel) -> None:
    _, _, counts = run_both(model, fleet(), assets=ASSETS)
    assert counts["alerts"] >= 2 and counts["events"] >= 1


def test_naive_model_and_default_config_match() -> None:
    run_both(NaiveModel(), fleet(n=900, seed=3), cfg=DetectorSection(warmup=50), assets=ASSETS)


@pytest.mark.parametrize("direction", ["compiled->python", "python->compiled"])
def test_restore_mid_stream_matches_an_uninterrupted_run(model: StepModel, direction: str) -> None:
    rounds = list(fleet(n=1200, seed=11)())
    src_core, dst_core = direction.split("->")
    whole = Detector(CFG, model, assets=ASSETS, core=dst_core)
    expected = [flatten(whole.process(b)) for b in rounds]
    first = Detector(CFG, model, assets=ASSETS, core=src_core)
    for b in rounds[:250]:
        first.process(b)
    second = Detector(CFG, model, assets=ASSETS, core=dst_core)
    assert second.restore(first.snapshot()) == 7
    got = [flatten(second.process(b)) for b in rounds[250:]]
    for i, (want, have) in enumerate(zip(expected[250:], got, strict=True)):
        assert close(want, have), f"round {250 + i}"


def test_restore_of_damaged_states_matches(model: StepModel) -> None:
    source = Detector(CFG, model, assets=ASSETS, core="python")
    for b in fleet(n=400, seed=5)():
        source.process(b)
    states = source.snapshot()
    damaged = dict(states)
    damaged["flow"] = "{not json"
    data = json.loads(states["temp"])
    data["tail"] = {"ring": "AAAA", "pos": 0, "count": 5}  # does not fit: skipped
    damaged["temp"] = json.dumps(data)
    data = json.loads(states["asset/pump"])
    data["latch"] = {"active": True, "above": "x"}  # fails half-way, as in Python
    damaged["asset/pump"] = json.dumps(data)
    data = json.loads(states["vib"])
    data["n"], data["n_raw"], data["run"] = 10**30, -(10**30), -7  # absurd but parseable
    damaged["vib"] = json.dumps(data)
    py = Detector(CFG, model, assets=ASSETS, core="python")
    cc = Detector(CFG, model, assets=ASSETS, core="compiled")
    assert py.restore(damaged) == cc.restore(damaged) == 5
    view = {"n", "n_raw", "run"}
    snap_py, snap_cc = snapshot_values(py), snapshot_values(cc)
    for key in snap_py:
        a = {k: v for k, v in snap_py[key].items() if k not in view}
        b = {k: v for k, v in snap_cc[key].items() if k not in view}
        assert close(a, b), key
    for b in fleet(n=300, seed=6)():
        assert_same(py.process(b), cc.process(b), "after a damaged restore")


def test_operator_new_normal_matches(model: StepModel) -> None:
    cfg = DetectorSection(warmup=100, baseline_halflife=120, cooldown=30, accept_after=None)
    t, v = univariate("shift", seed=2)
    acked: dict[str, bool] = {}

    def batches() -> Iterator[list[Reading]]:
        for ts, value in zip(t.tolist(), v.tolist(), strict=True):
            yield [Reading("s", ts, value, "t")]

    def every(i: int, detector: Detector) -> None:
        if i == 700:
            view = detector.channel_view("s")
            assert view is not None and view["alert"]
            alert_id = detector._assets["s"].alert_id
            assert alert_id is not None
            assert not detector.accept_new_normal("s", "not-this-one")
            acked[detector.core] = detector.accept_new_normal("s", alert_id)

    run_both(model, batches, cfg=cfg, every=every)
    assert acked == {"python": True, "compiled": True}


@pytest.mark.skipif(not SKAB.is_dir(), reason="SKAB data not on this machine")
@pytest.mark.parametrize("name", ["valve1/1.csv", "valve2/3.csv", "other/13.csv"])
def test_skab_replay_output_is_identical(model: StepModel, name: str, monkeypatch) -> None:
    from gateway.pipeline import replay as replay_module

    outputs = {}
    for core in ("python", "compiled"):
        monkeypatch.setenv(PURE_ENV, "1" if core == "python" else "0")
        text = replay_module.replay_to_string(
            SKAB / name, Config(), model, sep=";", time_column="datetime",
            ignore=("anomaly", "changepoint"),
        )  # fmt: skip
        outputs[core] = text
    assert outputs["python"] == outputs["compiled"]
    assert outputs["python"].count("\n") > 700


# --- robustness: clear errors, never a crash ------------------------------------------------


def test_bad_input_gives_clear_errors_not_crashes(model: StepModel) -> None:
    d = Detector(CFG, model, core="compiled")
    assert d.process_ticks([[], []]).scored == []
    with pytest.raises(TypeError):
        d.process_ticks([[Reading("s", 1.0, "high", "t")]])  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        d.process_ticks([[object()]])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        d.process_ticks([5])  # type: ignore[list-item]
    out = d.process_ticks([[Reading("s", math.nan, 1.0, "t"), Reading("s", 1.0, math.inf, "t")]])
    assert out.scored == []
    # The detector is still usable after the errors.
    out = d.process([Reading("s", float(i), 1.0 + (i % 3), "t") for i in range(3)])
    assert len(out.scored) == 3
    bad_h = np.zeros((1, model.hidden_size), np.float64)
    with pytest.raises(ValueError):
        d._kernel.bind(d._slot_of, d._x, d._dt, d._hbuf, bad_h)
    with pytest.raises(ValueError):
        d._kernel.bind(d._slot_of, d._x, d._dt, d._hbuf[:, :3].copy(), d._h)
    with pytest.raises(ValueError):
        d._kernel.store(np.zeros((5, 1), np.float32), d._x, d._hbuf)
    with pytest.raises(IndexError):
        d._kernel.get_channel(99)
    d._kernel.bind({"s": 7}, d._x, d._dt, d._hbuf, d._h)
    with pytest.raises(ValueError):
        d._kernel.tick([Reading("s", 10.0, 1.0, "t")])
    d._bind()
    assert len(d.process([Reading("s", 10.0, 1.0, "t")]).scored) == 1


def test_many_streams_grow_the_state(model: StepModel) -> None:
    py = Detector(CFG, model, core="python")
    cc = Detector(CFG, model, core="compiled")
    rng = np.random.default_rng(1)
    for i in range(60):
        tick = [Reading(f"s{k}", float(i), float(rng.normal(k, 1)), "t") for k in range(300)]
        assert_same(py.process(tick), cc.process(tick), f"tick {i}")
    assert len(cc.streams) == 300


def test_record_constructor_builds_the_same_objects() -> None:
    import dataclasses

    from gateway.detector.engine import record_constructor
    from gateway.records import ScoredReading

    make = record_constructor(Reading)
    assert make is not Reading
    a, b = make("s", 1.5, 2.0, "replay"), Reading("s", 1.5, 2.0, "replay")
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b) and a.unit is None
    assert make("s", 1.5, 2.0, "replay", "bar") == Reading("s", 1.5, 2.0, "replay", "bar")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.value = 3.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        make("s", 1.5)
    with pytest.raises(TypeError):
        make("s", 1.5, 2.0, "replay", None, "extra")
    assert record_constructor(ScoredReading)("s", 1.0, 2.0, None, 0.5, True) == ScoredReading(
        "s", 1.0, 2.0, None, 0.5, True
    )

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        value: float

        def __post_init__(self) -> None:
            raise ValueError("checked")

    assert record_constructor(Checked) is Checked  # its __init__ does more: not replaced


def test_a_tick_may_be_any_iterable(model: StepModel) -> None:
    py = Detector(CFG, model, core="python")
    cc = Detector(CFG, model, core="compiled")
    for i in range(50):
        readings = [Reading(f"s{k}", float(i), float(k + i % 7), "t") for k in range(3)]
        assert_same(py.process_ticks([iter(readings)]), cc.process_ticks([iter(readings)]), "")


values = st.one_of(
    st.floats(-5.0, 5.0),
    st.sampled_from([0.0, 1.0, 1.0, 1.0, 2.5, -0.0]),  # exact repeats: the stuck test
    # Up to 1e100: beyond ~1e154 a baseline's squared floor overflows and the Python core
    # raises OverflowError (in _stuck), where the compiled one carries on; see below.
    st.floats(-1e100, 1e100),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)
readings = st.lists(
    st.tuples(st.integers(0, 4), st.floats(-2.0, 80.0), values), min_size=1, max_size=400
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(readings, st.integers(0, 60), st.integers(1, 3))
def test_random_input_matches_and_never_crashes(rows, warmup: int, min_duration: int) -> None:
    """Any mix of streams, time steps (backwards, gaps) and values, in random batches."""
    cfg = DetectorSection(
        warmup=warmup, baseline_halflife=30, cooldown=5, max_gap=40, min_duration=min_duration,
        accept_after=20, drift_halflife=60, drift_threshold=1.0,
    )  # fmt: skip
    names = ["a", "b", "c", "d", "e"]

    def batches() -> Iterator[list[Reading]]:
        ts, batch = 0.0, []
        for stream, step, value in rows:
            ts += step
            batch.append(Reading(names[stream], ts, value, "t"))
            if step > 40 or len(batch) > 6:
                yield batch
                batch = []
        yield batch

    run_both(NaiveModel(), batches, cfg=cfg, assets={"ab": ["a", "b"], "cde": ["c", "d", "e"]})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2), st.floats(allow_nan=True), st.floats()), max_size=300))
def test_compiled_core_takes_any_float_without_error(rows) -> None:
    d = Detector(
        DetectorSection(warmup=5), NaiveModel(), assets={"ab": ["a", "b"]}, core="compiled"
    )
    for stream, ts, value in rows:
        out = d.process([Reading("abc"[stream], ts, value, "t")])
        assert all(math.isfinite(s.score) or math.isnan(s.score) for s in out.scored)
    d.restore(d.snapshot())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))))
def test_replay_expected_columns_format_like_the_f_string(expected) -> None:
    from gateway.detector.engine import _kernel
    from gateway.pipeline.replay import _format_expected
    from gateway.records import ScoredReading

    scored = [ScoredReading("s", 0.0, 0.0, e, 0.0, False) for e in expected]
    assert _kernel.format_expected(scored) == _format_expected(scored)
