"""The detector's one source, ``core.py``, and its mypyc build: the build is used only when
current, and both give exactly the same results on anything."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Config, DetectorSection, Span
from gateway.detector import Detector, engine
from gateway.model.naive import NaiveModel
from gateway.model.runtime import StepModel
from gateway.records import Reading

SKAB = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "skab" / "data"


def test_the_compiled_build_is_current_and_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(engine.PURE_ENV, raising=False)
    assert engine.compiled_core_available(), engine.COMPILED_PROBLEM
    assert engine.default_core() == "compiled"
    assert Detector(DetectorSection(), NaiveModel()).core == "compiled"


def test_the_env_var_forces_the_interpreted_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(engine.PURE_ENV, "1")
    assert Detector(DetectorSection(), NaiveModel()).core == "python"
    monkeypatch.setenv(engine.PURE_ENV, "0")
    assert Detector(DetectorSection(), NaiveModel()).core == "compiled"
    with pytest.raises(ValueError, match="unknown detector core"):
        Detector(DetectorSection(), NaiveModel(), core="fast")


@pytest.mark.slow
def test_the_wheel_carries_the_compiled_core(tmp_path: Path) -> None:
    """``pip install .`` builds in an isolated environment with only the build requirements:
    there the project's mypy settings (the pydantic plugin) once made mypyc fail, and every
    wheel silently shipped the interpreted core. Build one as pip does and look inside."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[2]
    in_place = {p: p.stat().st_ino for p in engine_build_files() if p.is_file()}
    assert len(in_place) == 2, "python -m gateway.detector.build first"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(root), "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "was not built" not in result.stderr, result.stderr[-3000:]
    [wheel] = tmp_path.glob("liquid_gateway-*.whl")
    assert not wheel.name.endswith("-none-any.whl"), wheel.name  # a platform wheel
    names = zipfile.ZipFile(wheel).namelist()
    compiled = [n for n in names if n.startswith("gateway/detector/_core_compiled")]
    assert len(compiled) == 2 and all(n.endswith(".so") for n in compiled), compiled
    assert "gateway/detector/core.py" in names  # the source ships too: it is the fallback
    # pip builds a local folder in place: the checkout's own build is left as it was.
    assert {p: p.stat().st_ino for p in engine_build_files() if p.is_file()} == in_place


def engine_build_files() -> list[Path]:
    from gateway.detector.build import HERE, built_files

    return built_files(HERE)


def test_a_build_of_another_source_is_not_used(tmp_path: Path, monkeypatch) -> None:
    edited = tmp_path / "core.py"
    shutil.copy(engine.SOURCE, edited)
    with edited.open("a") as handle:
        handle.write("\n# an edit after the build\n")
    monkeypatch.setattr(engine, "SOURCE", edited)
    module, problem = engine._load_compiled()
    assert module is None and problem == "built from another version of core.py"


# --- the same results -----------------------------------------------------------------------


def flatten(out) -> dict[str, list]:  # noqa: ANN001
    alerts = [
        (a.stream, a.state, a.ts, a.score, a.observed, a.expected, a.band, a.unit, a.model,
         [(c.stream, c.observed, c.expected, c.band, c.share, c.unit, c.reason)
          for c in a.contributors])
        for a in out.alerts
    ]  # fmt: skip
    events = [
        (e.kind, e.subject, e.ts, {k: v for k, v in e.detail.items() if k != "alert_id"})
        for e in out.events
    ]
    return {"scored": [tuple(s) for s in out.scored], "alerts": alerts, "events": events}


def same(a: object, b: object) -> bool:
    """Equal, NaN equal to NaN (the builds compute the same bits)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):  # alert ids are random (uuid4)
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a if k != "alert_id")
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def run_both(model: StepModel, batches, cfg: DetectorSection, assets=None) -> None:  # noqa: ANN001
    py = Detector(cfg, model, assets=assets, core="python")
    cc = Detector(cfg, model, assets=assets, core="compiled")
    for i, batch in enumerate(batches()):
        a, b = flatten(py.process(batch)), flatten(cc.process(batch))
        assert same(a, b), f"batch {i} differs"
    assert same(json.loads(json.dumps({k: json.loads(v) for k, v in py.snapshot().items()})),
                {k: json.loads(v) for k, v in cc.snapshot().items()})  # fmt: skip
    assert same(py.channel_views(), cc.channel_views())


def univariate(kind: str, n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    v = 20.0 + rng.normal(0.0, 0.5, n)
    if kind == "periodic":
        v = 5.0 * np.sin(2 * np.pi * t / 50.0) + rng.normal(0.0, 0.2, n)
        v[2400:2460] += 4.0
    elif kind == "square":
        v = np.where(t % 90 < 45, 10.0, 0.0)
        v[2000:] = np.where(t[2000:] % 60 < 30, 10.0, 0.0)
    elif kind == "spiky":
        for k in (900, 1300, 1301, 1305, 2100, 2103):
            v[k] += 12.0
    elif kind == "stuck":
        v = np.round(v, 2)
        v[1800:2100] = v[1799]
    elif kind == "shift":
        v[1600:] += 4.0
    elif kind == "drift":
        v += np.concatenate([np.zeros(300), np.linspace(0.0, 25.0, n - 300)])
    elif kind == "gaps":
        t = t + np.where(t >= 1000, 500.0, 0.0) + np.where(t >= 2000, 400.0, 0.0)
        v[1000:] += 10.0
    elif kind == "irregular":
        dt = rng.exponential(1.0, n)
        dt[::37] = 0.0
        t = np.cumsum(dt)
        t[400::101] -= 5.0  # out of order: no time has passed
        v[2000:2050] -= 5.0
    elif kind == "nonfinite":
        v[::53] = np.nan
        v[7::89] = np.inf
        t[5::71] = np.nan
        v[2200:] += 6.0
    elif kind == "huge":
        v[200] = 1e300
        v[400] = -1e300
        v[600:610] = 1e-300
        v[700] = 5e-324
    return t, v


KINDS = ("noisy", "periodic", "square", "spiky", "stuck", "shift", "drift", "gaps", "irregular",
         "nonfinite", "huge")  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_univariate_streams_give_the_same_results(model: StepModel, kind: str) -> None:
    t, v = univariate(kind)

    def batches() -> Iterator[list[Reading]]:
        for i in range(0, len(t), 7):  # batches of a few readings, as the pipeline makes
            yield [
                Reading("s", float(t[k]), float(v[k]), "t") for k in range(i, min(i + 7, len(t)))
            ]

    run_both(model, batches, DetectorSection())


def test_assets_give_the_same_results(model: StepModel) -> None:
    rng = np.random.default_rng(4)
    load = np.cumsum(rng.normal(0, 0.05, 2500))
    names = [f"c{k}" for k in range(6)]

    def batches() -> Iterator[list[Reading]]:
        for i in range(2500):
            row = load[i] * (1 + np.arange(6) / 3) + rng.normal(0, 0.1, 6)
            if i >= 1800:
                row[2] -= 2 * load[i]
            yield [Reading(n, float(i), float(row[k]), "t") for k, n in enumerate(names)]

    run_both(model, batches, DetectorSection(), assets={"m": names})


values = st.one_of(
    st.floats(-5.0, 5.0),
    st.sampled_from([0.0, 1.0, 1.0, 1.0, 2.5, -0.0]),  # exact repeats: the stuck test
    st.floats(allow_nan=True, allow_infinity=True),
)
rows = st.lists(
    st.tuples(st.integers(0, 4), st.floats(-2.0, 80.0), values), min_size=1, max_size=400
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows, st.integers(0, 60), st.integers(1, 3))
def test_any_input_gives_the_same_results_and_never_crashes(rows, warmup, min_duration) -> None:
    """Any mix of streams, time steps (backwards, gaps), values and batches."""
    cfg = DetectorSection(
        warmup=warmup, baseline_halflife=Span(30.0, True), cooldown=Span(5.0, True),
        max_gap=Span(40.0, True), min_duration=min_duration, accept_after=Span(20.0, True),
        drift_halflife=Span(60.0, True), drift_threshold=1.0,
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

    run_both(NaiveModel(), batches, cfg, assets={"ab": ["a", "b"], "cde": ["c", "d", "e"]})


def test_many_streams_grow_the_state(model: StepModel) -> None:
    rng = np.random.default_rng(1)

    def batches() -> Iterator[list[Reading]]:
        for i in range(60):
            yield [Reading(f"s{k}", float(i), float(rng.normal(k, 1)), "t") for k in range(300)]

    run_both(model, batches, DetectorSection())


@pytest.mark.parametrize("name", ["valve1/1.csv", "other/13.csv"])
def test_skab_replay_output_is_byte_identical(model: StepModel, name: str) -> None:
    from gateway.pipeline.replay import replay_to_string

    if not SKAB.is_dir():
        pytest.fail(f"the SKAB data is expected at {SKAB} (../shared beside the checkout)")
    texts = [
        replay_to_string(
            SKAB / name,
            Config(),
            model,
            sep=";",
            time_column="datetime",
            ignore=("anomaly", "changepoint"),
            core=core,
        )  # fmt: skip
        for core in ("python", "compiled")
    ]
    assert texts[0] == texts[1] and texts[0].count("\n") > 700


def test_bad_input_gives_clear_errors_not_crashes(model: StepModel, core: str) -> None:
    d = Detector(DetectorSection(), model, core=core)
    assert d.process_ticks([[], []]).scored == []
    with pytest.raises(TypeError):
        d.process_ticks([[Reading("s", 1.0, "high", "t")]])  # type: ignore[arg-type]
    with pytest.raises((AttributeError, TypeError)):  # the compiled build checks the type
        d.process_ticks([[object()]])  # type: ignore[list-item]
    out = d.process_ticks([[Reading("s", math.nan, 1.0, "t"), Reading("s", 1.0, math.inf, "t")]])
    assert out.scored == []
    out = d.process([Reading("s", float(i), 1.0 + (i % 3), "t") for i in range(3)])
    assert len(out.scored) == 3  # still usable after the errors


def test_a_tick_may_be_any_iterable(model: StepModel, core: str) -> None:
    d = Detector(DetectorSection(), model, core=core)
    for i in range(50):
        readings = [Reading(f"s{k}", float(i), float(k + i % 7), "t") for k in range(3)]
        assert len(d.process_ticks([iter(readings)]).scored) == 3
