"""The multi-corpus benchmark's behaviour: its baselines, its pairing of bootstrap draws, its
failure modes, and one small end-to-end run through ``main(argv)``.

The end-to-end run uses the synthetic corpus (always available) and SKAB when the dataset is
there; never gutentag (its package is not installed in the development venv).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tools import bench_detect
from tools.bench_detect import (
    BenchError,
    SeriesResult,
    Task,
    against,
    analyse_corpus,
    init_worker,
    load_corpus_module,
    main,
    pca_t2q,
    retimed_series,
    rolling_z_score,
    run_task,
    score_series,
    static_band_score,
)
from tools.corpora import skab
from tools.corpora.base import T0, Series, labels_from_faults
from tools.detectors import rolling_z_alert, static_band_alert

TRAIN = 400


def _pair(n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two channels that follow one shared signal, as two sensors on one process do."""
    rng = np.random.default_rng(seed)
    common = np.sin(np.arange(n) * 2 * np.pi / 97.0)
    noise = 0.05 * rng.standard_normal((n, 2))
    return common, np.column_stack([common, common]) + noise


def test_pca_alerts_on_a_relation_break() -> None:
    common, x = _pair()
    x[700:800, 1] = -common[700:800] + 0.05  # each channel still inside its own range
    alert, score, fit = pca_t2q(x, TRAIN)
    assert fit.components == 1 and fit.explained >= 0.9
    assert alert[700:800].sum() > 50
    assert alert[TRAIN:700].sum() == 0 and alert[810:].sum() == 0
    assert score[700:800].max() > 1.0


def test_pca_stays_quiet_on_a_common_mode_move_inside_the_training_range() -> None:
    _, x = _pair()
    x[700:800] = 0.8 + 0.05 * np.random.default_rng(1).standard_normal((100, 2))
    alert, score, _ = pca_t2q(x, TRAIN)
    assert alert.sum() == 0
    assert score[TRAIN:].max() < 1.0


def test_pca_survives_missing_cells_and_refuses_one_channel() -> None:
    _, x = _pair()
    x[500:505, 0] = np.nan
    alert, score, _ = pca_t2q(x, TRAIN)
    assert not np.isnan(score).any() and alert.sum() == 0
    with pytest.raises(ValueError):
        pca_t2q(x[:, :1], TRAIN)


def test_baseline_scores_agree_with_their_alerts() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((800, 3))
    x[500:520, 1] += 6.0
    x[100:110, 2] = np.nan
    score = rolling_z_score(x, 60)
    over = score > 3.0
    run = np.zeros(len(over), int)
    for i in range(len(over)):
        run[i] = run[i - 1] + 1 if over[i] and i > 0 else int(over[i])
    assert np.array_equal((run >= 3).astype(np.int8), rolling_z_alert(x, 60, 3.0, 3))
    band = static_band_score(x, TRAIN, 4.0)
    expected = static_band_alert(x, TRAIN, 4.0)
    assert np.array_equal((band > 1.0)[TRAIN:], expected[TRAIN:].astype(bool))


def _series(name: str, faults: list[tuple[float, float]], rows: int = 1000) -> Series:
    t = T0 + np.arange(float(rows))
    return Series(
        name=name,
        corpus="hand",
        t=t,
        x=np.zeros((rows, 1)),
        channels=["value"],
        labels=labels_from_faults(t, faults),
        faults=faults,
        train_rows=200,
        tags={"kind": name[:1]},
    )


def _result(series: Series, alert: np.ndarray, score: np.ndarray | None = None) -> SeriesResult:
    s = alert.astype(float) if score is None else score
    return score_series(series, alert, s, [], 1.0, 0.0)


def test_paired_draws_are_the_same_for_every_detector() -> None:
    fault = [(T0 + 500.0, T0 + 520.0)]
    series = [_series(f"s{i}", fault) for i in range(3)]
    hit = np.zeros(1000, np.int8)
    hit[505:520] = 1
    miss = np.zeros(1000, np.int8)
    results = {
        "default": [_result(s, hit) for s in series],
        "naive": [_result(s, hit) for s in series],  # identical to the default
        "rolling-z": [_result(series[0], miss)] + [_result(s, hit) for s in series[1:]],
    }
    report = analyse_corpus("hand", "main", series, results, 400, 0, {}, [0])
    same = report.comparisons["naive"]
    assert same["event_f1_difference"] == [0.0, 0.0]
    assert same["default_better_event_f1_share"] == 0.0 and same["tie_event_f1_share"] == 1.0
    # rolling-z misses series 0 only: the default is better exactly in the draws holding it.
    drawn0 = float(np.mean(report.weights[:, 0] > 0))
    assert report.comparisons["rolling-z"]["default_better_event_f1_share"] == drawn0
    assert report.point["default"]["event_f1"] == 1.0
    assert report.point["rolling-z"]["event_recall"] == pytest.approx(2 / 3)
    lo, hi = report.intervals()["rolling-z"]["event_recall"]
    assert lo <= 2 / 3 <= hi


def test_against_flags_a_corpus_outside_the_old_interval() -> None:
    fault = [(T0 + 500.0, T0 + 520.0)]
    series = [_series(f"s{i}", fault) for i in range(2)]
    hit = np.zeros(1000, np.int8)
    hit[505:520] = 1
    hit[800:805] = 1  # one false alarm per series
    report = analyse_corpus(
        "hand", "main", series, {"default": [_result(s, hit) for s in series]}, 50, 0, {}, [0]
    )
    fine = {"event_f1": [0.5, 0.9], "false_alarms_per_1000h": [0.0, 1e6]}
    lines, worse = against({"corpora": {"hand": {"intervals": {"default": fine}}}}, [report])
    assert not worse and lines == ["hand         not worse"]
    strict = {"event_f1": [0.9, 1.0], "false_alarms_per_1000h": [0.0, 10.0]}
    lines, worse = against({"corpora": {"hand": {"intervals": {"default": strict}}}}, [report])
    assert worse and "event_f1 0.667 < 0.900" in lines[0] and "false_alarms_per_1000h" in lines[0]


def test_a_saturated_score_is_reported() -> None:
    s = _series("flat", [(T0 + 500.0, T0 + 520.0)])
    r = score_series(s, np.zeros(1000, np.int8), np.ones(1000), [], 1.0, 0.0)
    assert r.top_count == r.scored_rows == 800 and r.at_max == 800
    ramp = score_series(s, np.zeros(1000, np.int8), np.linspace(0, 0.9, 1000), [], 1.0, 0.0)
    assert ramp.top_count == 1 and ramp.at_max == 0


def test_drift_events_count_per_window_with_the_corpus_report_window() -> None:
    s = _series("drift", [])
    s.expect_drift = [(T0 + 300.0, T0 + 400.0), (T0 + 600.0, T0 + 700.0)]
    alert = np.zeros(1000, np.int8)
    r = score_series(s, alert, np.zeros(1000), [T0 + 350.0, T0 + 750.0, T0 + 900.0], 1.0, 0.0)
    assert (r.drift_windows, r.drift_hit, r.drift_elsewhere) == (2, 1, 2)  # grace is 10 s
    s.tags["drift_report_s"] = "100"
    r = score_series(s, alert, np.zeros(1000), [T0 + 350.0, T0 + 750.0, T0 + 900.0], 1.0, 0.0)
    assert (r.drift_hit, r.drift_elsewhere) == (2, 1)
    base = score_series(s, alert, np.zeros(1000), None, None, 0.0)  # a baseline: no events
    assert base.drift_windows == 0


def test_retimed_series_keep_their_rows_and_say_their_interval() -> None:
    series = [_series("a", [(T0 + 500.0, T0 + 520.0)])]
    out = retimed_series({"synthetic": series})
    assert [s.tags["interval"] for s in out] == ["1s", "1min", "5min", "1h"]
    assert len({s.name for s in out}) == 4 and all(s.tags["source"] == "synthetic" for s in out)
    hourly = out[-1]
    assert np.median(np.diff(hourly.t)) == 3600.0 and hourly.labels.sum() == 20


def test_a_missing_or_broken_corpus_module_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BenchError, match="'no_such_corpus'.*no module"):
        load_corpus_module("no_such_corpus")

    def boom(name: str) -> object:
        raise ImportError("timeeval-gutentag is not installed")

    monkeypatch.setattr(bench_detect.importlib, "import_module", boom)
    with pytest.raises(BenchError, match="'gutentag'.*not installed"):
        load_corpus_module("gutentag")


def test_a_detector_crash_names_the_series(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    init_worker("auto", str(tmp_path))

    def crash(*args: object, **kwargs: object) -> np.ndarray:
        raise FloatingPointError("bad luck")

    monkeypatch.setattr(bench_detect, "rolling_z_alert", crash)
    task = Task("hand", 0, _series("victim", []), ("static-band", "rolling-z"))
    with pytest.raises(BenchError, match="'rolling-z' failed on series hand/victim"):
        run_task(task)


@pytest.mark.slow
def test_end_to_end_smoke_run_writes_the_documented_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the CSVs go
    corpora = ["synthetic"] + (["skab"] if skab.dataset_dir().is_dir() else [])
    out = tmp_path / "results.json"
    argv = ["--corpora", ",".join(corpora), "--size", "smoke", "--draws", "200"]
    assert main([*argv, "--jobs", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "event F1" in printed and "targets" in printed and "synthetic by fault" in printed
    assert list(scratch.iterdir()) == []  # no CSV or folder left behind

    def no_nan(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    result = json.loads(out.read_text(), parse_constant=no_nan)
    for key in (
        "benchmark", "argv", "size", "seed", "draws", "corpora_requested", "protocol",
        "detectors", "config", "model", "git", "machine", "corpora", "pooled_over_corpora",
        "targets", "seconds_total",
    ):  # fmt: skip
        assert key in result, key
    assert result["size"] == "smoke" and result["model"]["id"]
    syn = result["corpora"]["synthetic"]
    for key in ("role", "seeds", "series", "rows", "seconds", "pooled", "intervals"):
        assert key in syn, key
    assert syn["role"] == "main" and syn["series"] == len(syn["per_series"])
    assert set(syn["pooled"]) == {"default", "naive", "no-prediction", "rolling-z", "static-band"}
    for metric in ("event_f1", "false_alarms_per_1000h", "row_f1", "pr_auc", "vus_pr"):
        assert metric in syn["pooled"]["default"] and len(syn["intervals"]["default"][metric]) == 2
    one = next(iter(syn["per_series"].values()))
    assert {"events", "rows", "pr_auc", "vus_pr", "top_count"} <= set(one["default"])
    assert "detect_wall" in syn["seconds"]
    assert {t["target"] for t in result["targets"]} >= {
        "default >= best baseline",
        "score does not saturate",
        "default beats naive overall",
    }
    if "skab" in corpora:
        sk = result["corpora"]["skab"]
        assert "pca-t2q" in sk["pooled"] and any(t["corpus"] == "skab" for t in result["targets"])

    # In process (--jobs 1) the same numbers come out: the workers change nothing; and a run
    # is never worse than itself.
    again = tmp_path / "again.json"
    rerun = [*argv, "--corpora", "synthetic", "--jobs", "1", "--out", str(again)]
    assert main([*rerun, "--against", str(out)]) == 0
    second = json.loads(again.read_text())["corpora"]["synthetic"]
    assert second["pooled"] == syn["pooled"] and second["intervals"] == syn["intervals"]
    assert "synthetic    not worse" in capsys.readouterr().out


def test_unknown_names_are_usage_errors() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--corpora", "skab,nonsense"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["--detectors", "oracle"])


def test_more_seeds_pool_new_draws_and_take_real_data_once() -> None:
    synthetic = load_corpus_module("synthetic")
    one = bench_detect.generate_seeds(synthetic, "synthetic", [0], "smoke")
    two = bench_detect.generate_seeds(synthetic, "synthetic", [0, 1], "smoke")
    assert [s.name for s in one] == [
        s.name for s in bench_detect.generate(synthetic, "x", 0, "smoke")
    ]
    assert len(two) == 2 * len(one)
    assert len({s.name for s in two}) == len(two)  # names stay unique: name@s0, name@s1
    assert not np.array_equal(two[0].x, two[len(one)].x)  # the second seed drew new series

    class Fixed:  # real data: every seed gives the same series
        @staticmethod
        def generate(seed: int, size: str) -> list[Series]:
            return [_series("only", [])]

    fixed = bench_detect.generate_seeds(Fixed, "fixed", [0, 1, 2], "smoke")  # type: ignore[arg-type]
    assert [s.name for s in fixed] == ["only@s0"]
