"""The benchmarks' scoring code on hand-made cases whose right answer is known.

Benchmark numbers are only as good as the metric code behind them, and that code is easy to get
subtly wrong (off-by-one windows, counting every row of an alert as a detection, normalising
against the wrong reference). These tests pin it down without running any detector.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.bench_skab import SkabFile  # noqa: E402
from tools.detectors import rolling_z_alert, static_band_alert  # noqa: E402
from tools.metrics import (  # noqa: E402
    A_FP,
    confusion,
    match_events,
    nab_score,
    nab_windows,
    rising_edges,
    scaled_sigmoid,
)


def test_f1_far_mar_on_a_tiny_example() -> None:
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]
    preds = [0, 1, 0, 0, 1, 1, 0, 0, 0, 0]
    c = confusion(labels, preds)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 2, 5)
    assert c.f1 == pytest.approx(2 / (2 + (1 + 2) / 2))
    assert c.far == pytest.approx(100 * 1 / 6)
    assert c.mar == pytest.approx(100 * 2 / 4)


def test_flagging_every_row_gives_the_quoted_f1_and_full_far() -> None:
    labels = np.array([1] * 35 + [0] * 65)
    c = confusion(labels, np.ones(100, int))
    assert c.far == 100.0 and c.mar == 0.0
    assert c.f1 == pytest.approx(35 / (35 + 65 / 2))


def test_confusions_pool_by_adding_counts() -> None:
    pooled = confusion([1, 0], [1, 1]) + confusion([1, 1], [0, 1])
    assert (pooled.tp, pooled.fp, pooled.fn, pooled.tn) == (2, 1, 1, 0)


def test_rising_edges() -> None:
    assert rising_edges([1, 1, 0, 1, 0, 0, 1, 1]).tolist() == [0, 3, 6]
    assert rising_edges([]).tolist() == []


def test_scaled_sigmoid_shape() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(3.5) == -1.0


def test_windows_start_at_the_changepoint_merge_and_skip_training_rows() -> None:
    times = np.arange(1000.0)
    assert nab_windows(times, [500], 60.0) == [(500, 559)]
    assert nab_windows(times, [500, 530, 800], 60.0) == [(500, 589), (800, 859)]
    assert nab_windows(times, [100, 500], 60.0, first_scored=400) == [(500, 559)]
    assert nab_windows(times, [980], 60.0) == [(980, 999)]


def test_perfect_detector_scores_100_and_null_detector_0() -> None:
    windows = nab_windows(np.arange(1000.0), [200, 600], 60.0)
    perfect = nab_score(windows, [lo for lo, _ in windows])
    assert perfect.score == pytest.approx(100.0)
    assert perfect.detected == 2 and perfect.false_positives == 0
    null = nab_score(windows, [])
    assert null.score == pytest.approx(0.0)
    assert null.raw == pytest.approx(-2.0)
    pooled = perfect + null
    assert pooled.score == pytest.approx(50.0)


def test_late_detection_earns_less_and_repeats_in_a_window_count_once() -> None:
    windows = [(100, 159)]
    early = nab_score(windows, [100]).raw
    late = nab_score(windows, [150]).raw
    assert 0 < late < early
    assert nab_score(windows, [150, 151, 155]).raw == pytest.approx(late)


def test_false_positives_cost_a_fp_far_from_a_window_and_less_just_after_one() -> None:
    windows = [(100, 159)]
    before = nab_score(windows, [10, 100])
    assert before.false_positives == 1
    assert before.raw == pytest.approx(nab_score(windows, [100]).raw + A_FP)
    just_after = nab_score(windows, [100, 161]).raw - nab_score(windows, [100]).raw
    far_after = nab_score(windows, [100, 900]).raw - nab_score(windows, [100]).raw
    assert A_FP < just_after < 0
    assert far_after == pytest.approx(A_FP)


def test_event_matcher_counts_detections_in_window_and_false_alarms_outside() -> None:
    faults = [(100.0, 200.0), (1000.0, 1000.0)]
    m = match_events(faults, [50.0, 150.0, 180.0, 1030.0, 5000.0], grace=60.0)
    assert m.faults == 2 and m.detected == 2 and m.false_alarms == 2
    assert m.delays == [50.0, 30.0]
    assert m.precision == pytest.approx(0.5) and m.recall == pytest.approx(1.0)
    assert m.median_delay == pytest.approx(40.0)
    missed = match_events(faults, [1061.0], grace=60.0)
    assert missed.detected == 0 and missed.false_alarms == 1 and math.isnan(missed.median_delay)


def test_rolling_z_needs_three_rows_over_the_bar() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200)
    x[150] += 20.0
    assert rolling_z_alert(x)[150:160].sum() == 0  # one row over: no alert
    x[150:154] += 20.0
    alert = rolling_z_alert(x)
    assert alert[152] == 1 and alert[:150].sum() == 0


def test_static_band_is_fitted_on_the_training_rows_only() -> None:
    x = np.zeros((10, 2))
    x[:4] = [[0.0, 1.0], [2.0, 1.0], [0.0, 1.0], [2.0, 1.0]]  # channel 0: mean 1, std 1
    x[4:] = [1.0, 1.0]
    x[6, 0] = 4.9
    x[7, 0] = 5.1
    x[8, 1] = 1.001  # channel 1 was constant: floored std, relative deviation 1e-3 > 4e-4
    assert static_band_alert(x, train_rows=4, k=4.0).tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1, 0]


def test_hindsight_sweep_finds_a_perfect_threshold_and_none_for_a_useless_feature() -> None:
    from tools.skab_hindsight import sweep

    labels = np.zeros(1000, bool)
    labels[600:800] = True
    perfect = sweep(labels.astype(float) + 0.01 * np.arange(1000) / 1000, labels)
    assert perfect["best_f1"] == pytest.approx(1.0)
    assert perfect["mar_at_far_12"] == 0.0
    # A feature that ranks every healthy row above every faulty one: any threshold that keeps
    # FAR under 12 % alerts on no fault row at all.
    inverted = sweep(-labels.astype(float), labels)
    assert inverted["mar_at_far_12"] == 100.0


def test_hindsight_feature_uses_only_the_training_rows_for_its_scale() -> None:
    from tools.bench_skab import SkabFile
    from tools.skab_hindsight import feature

    rng = np.random.default_rng(3)
    values = rng.normal(0.0, 1.0, (1000, 2))
    values[700:, 1] += 10.0  # a shift after training, in channel 1 only
    data = SkabFile(
        Path("x.csv"), np.arange(1000.0), values, ["a", "b"], np.zeros(1000), np.zeros(1000)
    )
    score = feature(data, alpha=1.0, columns=[0, 1])
    assert score[700:].min() > 5.0  # 10 training sds away
    assert np.median(score[400:700]) < 2.0
    only_a = feature(data, alpha=1.0, columns=[0])
    assert np.median(only_a[700:]) < 2.0


def _coupled_pair(shift_both: float, shift_b: float) -> SkabFile:
    """Channels a and b move together (b = a + small noise) through training; after row 700
    both move by ``shift_both`` and b alone by ``shift_b``."""
    rng = np.random.default_rng(5)
    a = rng.normal(0.0, 1.0, 1000)
    b = a + rng.normal(0.0, 0.1, 1000)
    a[700:] += shift_both
    b[700:] += shift_both + shift_b
    values = np.column_stack([a, b])
    return SkabFile(
        Path("x.csv"), np.arange(1000.0), values, ["a", "b"], np.zeros(1000), np.zeros(1000)
    )


@pytest.mark.parametrize("name", ["relation", "mahalanobis", "pca t2+q"])
def test_hindsight_cross_channel_features_see_a_broken_relation_that_levels_miss(name: str) -> None:
    from tools.skab_hindsight import FEATURES

    # b leaves a by 1 training sd of a: small for a level test, but 10 sds of their relation.
    broken = _coupled_pair(shift_both=0.0, shift_b=1.0)
    score = FEATURES[name](broken, 0.1, [0, 1])
    level = FEATURES["level"](broken, 0.1, [0, 1])
    assert np.median(score[750:]) > 3.0 * np.percentile(score[400:700], 99)
    assert np.median(level[750:]) < 2.0 * np.percentile(level[400:700], 99)


def test_hindsight_relation_ignores_a_shift_the_channels_share() -> None:
    from tools.skab_hindsight import FEATURES

    shared = _coupled_pair(shift_both=5.0, shift_b=0.0)
    relation = FEATURES["relation"](shared, 0.1, [0, 1])
    level = FEATURES["level"](shared, 0.1, [0, 1])
    assert np.median(level[750:]) > 5.0 * np.percentile(level[400:700], 99)
    assert np.median(relation[750:]) < 2.0 * np.percentile(relation[400:700], 99)


def test_file_bootstrap_pairs_the_draws_across_detectors() -> None:
    from tools.metrics import Confusion, bootstrap_files

    rng = np.random.default_rng(11)
    files = [Confusion(*map(int, rng.integers(1, 300, 4))) for _ in range(30)]
    # "better" has fewer false alarms and fewer misses than "base" in every single file.
    better = [
        Confusion(c.tp + 5, c.fp - 1 if c.fp > 1 else 0, max(c.fn - 5, 0), c.tn + 1) for c in files
    ]
    boot = bootstrap_files({"base": files, "same": list(files), "better": better}, draws=500)
    for metric in ("f1", "far", "mar"):
        assert boot["base"][metric].shape == (500,)
        # Same files in every draw for every detector: an identical detector never differs.
        np.testing.assert_array_equal(boot["base"][metric], boot["same"][metric])
        assert boot["base"][metric].std() > 0  # the files differ, so the draws do
    assert np.all(boot["better"]["f1"] > boot["base"]["f1"])
    assert np.all(boot["better"]["far"] <= boot["base"]["far"])
    assert np.all(boot["better"]["mar"] < boot["base"]["mar"])
    pooled = sum(files, Confusion())
    assert boot["base"]["far"].min() < pooled.far < boot["base"]["far"].max()


def test_file_bootstrap_of_one_repeated_file_has_no_spread_and_counts_must_align() -> None:
    from tools.metrics import Confusion, bootstrap_files

    one = Confusion(tp=80, fp=10, fn=20, tn=90)
    boot = bootstrap_files({"x": [one] * 12}, draws=50)
    np.testing.assert_allclose(boot["x"]["far"], one.far)
    np.testing.assert_allclose(boot["x"]["mar"], one.mar)
    with pytest.raises(ValueError):
        bootstrap_files({"x": [one] * 3, "y": [one] * 4})


@pytest.mark.slow
def test_synthetic_suite_over_two_seeds_reports_every_stream_and_a_paired_bootstrap(
    tmp_path: Path,
) -> None:
    from tools import bench_synthetic

    out = tmp_path / "synthetic.json"
    assert (
        bench_synthetic.main(["--hours", "8", "--seeds", "2", "--draws", "200", "--out", str(out)])
        == 0
    )
    result = json.loads(out.read_text())
    names = set(result["per_stream"]["cfc (default)"])
    assert len(names) == 2 * 32
    assert {n.split("-")[0] for n in names} == {"s1", "s2"}
    assert result["by_fault"]["overall"]["cfc (default)"]["faults"] > 0
    boot = result["bootstrap"]
    assert boot["draws"] == 200
    for detector in ("cfc (default)", "naive (ablation)", "no prediction test"):
        low, high = boot[detector]["recall"]
        assert 0.0 <= low <= high <= 1.0
    for ablation in ("naive (ablation)", "no prediction test"):
        shares = boot["default_vs"][ablation]["default_better_share"]
        assert set(shares) == {"precision", "recall", "false_alarms_per_1000h"}


@pytest.mark.parametrize("core", ["python", "compiled"])
def test_no_prediction_ablation_leaves_only_the_level_and_stuck_tests(core: str) -> None:
    from gateway.config import DetectorSection
    from gateway.detector import Detector
    from gateway.records import Reading
    from tools.detectors import NoPredictionModel

    detector = Detector(DetectorSection(warmup=300), NoPredictionModel(), core=core)
    rng = np.random.default_rng(2)
    values = 20.0 + rng.normal(0.0, 0.5, 1500)
    values[1000:] += 3.0  # a 6-sigma level shift: the level test alone must catch it
    alerts, expected = [], []
    for i, value in enumerate(values):
        out = detector.process([Reading("temp", float(i), float(value), "test")])
        alerts.extend(out.alerts)
        expected.append(out.scored[0].expected)
    raised = [a for a in alerts if a.state == "raised"]
    assert raised and 1000 <= raised[0].ts <= 1010
    reasons = {c.reason for a in alerts for c in a.contributors}
    assert reasons == {"level"}  # the prediction test never decided
    # Nothing was predicted: "expected" is the slow baseline, not a forecast of each value.
    before = np.array(expected[300:1000], dtype=float)
    assert np.all(np.abs(before - 20.0) < 0.1)


def test_compare_draws_counts_the_right_direction_per_metric_and_skips_undefined_draws() -> None:
    from tools.metrics import compare_draws

    stats = {
        "d": {"far": np.array([1.0, 2.0, 3.0, 4.0]), "recall": np.array([0.5, np.nan, 0.7, 0.9])},
        "a": {"far": np.array([2.0, 1.0, 4.0, 5.0]), "recall": np.array([0.6, 0.5, 0.6, 0.8])},
    }
    report = compare_draws(stats, "d", ["a"], {"far": False, "recall": True}, (0.0, 100.0))
    better = report["default_vs"]["a"]["default_better_share"]
    assert better["far"] == 0.75  # lower is better: 3 of 4 draws
    assert better["recall"] == 0.5  # higher is better; the undefined draw is not a win
    assert report["d"]["recall"] == [0.5, 0.9]  # the NaN draw is left out of the interval
    assert report["default_vs"]["a"]["difference"]["far"] == [-1.0, 1.0]
