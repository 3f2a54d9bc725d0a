"""The multi-corpus benchmark's metrics on hand-made cases whose right answer is known.

Event matching with a grace period and drift windows, average precision (checked against a
brute-force computation), VUS-PR and its range-PR slices (checked by hand), pooling of the
threshold-free curves over series, and the bootstrap helpers. No detector runs here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tools.metrics import (
    average_precision,
    bootstrap_weights,
    curve_average_precision,
    curve_range_pr,
    curve_vus_pr,
    f1_score,
    interval,
    label_ranges,
    match_fault_events,
    range_pr_auc,
    resample_sums,
    score_curve,
    soft_labels,
    threshold_grid,
    vus_pr,
    weighted_median,
)

T = np.arange(100.0)  # one row per second
FAULTS = [(30.0, 40.0), (70.0, 75.0)]


def _alert(*spans: tuple[int, int]) -> np.ndarray:
    a = np.zeros(len(T), np.int8)
    for lo, hi in spans:
        a[lo:hi] = 1
    return a


# --- events ----------------------------------------------------------------------------------


def test_perfect_detector_detects_every_fault_at_once() -> None:
    e = match_fault_events(T, _alert((30, 40), (70, 75)), FAULTS, grace=10.0, first_scored=20)
    assert (e.faults, e.detected, e.false_alarms, e.re_alerts, e.onsets) == (2, 2, 0, 0, 2)
    assert e.delays_s == [0.0, 0.0] and e.delays_rows == [0, 0]
    assert e.precision == 1.0 and e.recall == 1.0 and e.f1 == 1.0


def test_silent_detector_has_no_precision_and_zero_recall() -> None:
    e = match_fault_events(T, np.zeros(len(T)), FAULTS, grace=10.0, first_scored=20)
    assert (e.detected, e.false_alarms, e.onsets) == (0, 0, 0)
    assert math.isnan(e.precision) and e.recall == 0.0 and e.f1 == 0.0


def test_grace_is_half_open_and_later_onsets_are_re_alerts() -> None:
    # fault 1 [30, 40) + grace 10: an onset at 49 is late but in time, one at 50 is not.
    e = match_fault_events(T, _alert((49, 51)), FAULTS[:1], grace=10.0)
    assert (e.detected, e.false_alarms) == (1, 0) and e.delays_s == [19.0]
    e = match_fault_events(T, _alert((50, 52)), FAULTS[:1], grace=10.0)
    assert (e.detected, e.false_alarms) == (0, 1)
    e = match_fault_events(T, _alert((32, 34), (36, 38), (45, 46)), FAULTS[:1], grace=10.0)
    assert (e.detected, e.re_alerts, e.false_alarms, e.onsets) == (1, 2, 0, 3)
    assert e.delays_s == [2.0] and e.delays_rows == [2]


def test_false_alarm_in_an_expect_drift_window_is_counted_twice() -> None:
    e = match_fault_events(
        T, _alert((10, 12), (55, 58)), [], grace=5.0, first_scored=0, expect_drift=[(50.0, 60.0)]
    )
    assert (e.false_alarms, e.drift_false_alarms) == (2, 1)
    assert math.isnan(e.recall) and e.precision == 0.0


def test_an_alert_open_when_scoring_starts_is_an_onset_there() -> None:
    e = match_fault_events(T, _alert((5, 25)), FAULTS, grace=10.0, first_scored=20)
    assert (e.onsets, e.false_alarms) == (1, 1)


def test_a_fault_that_began_before_scoring_is_not_scored_but_owns_its_onsets() -> None:
    e = match_fault_events(T, _alert((22, 24)), [(15.0, 30.0)], grace=0.0, first_scored=20)
    assert (e.faults, e.detected, e.false_alarms, e.re_alerts) == (0, 0, 0, 1)


def test_events_pool_by_adding_counts() -> None:
    a = match_fault_events(T, _alert((30, 31)), FAULTS, grace=10.0)
    b = match_fault_events(T, _alert((5, 6)), FAULTS, grace=10.0)
    pooled = a + b
    assert (pooled.faults, pooled.detected, pooled.false_alarms) == (4, 1, 1)
    assert pooled.precision == 0.5 and pooled.recall == 0.25


def test_f1_score_edges() -> None:
    assert f1_score(0.5, 0.5) == pytest.approx(0.5)
    assert f1_score(0.0, 0.0) == 0.0
    assert f1_score(float("nan"), 0.0) == 0.0  # never alarmed, faults missed
    assert math.isnan(f1_score(1.0, float("nan")))  # no faults to find
    assert math.isnan(f1_score(float("nan"), float("nan")))
    assert f1_score(np.array([1.0, 0.0]), np.array([0.5, 0.0])).tolist() == pytest.approx(
        [2 / 3, 0.0]
    )


# --- average precision -----------------------------------------------------------------------


def _brute_force_ap(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean over the positive rows of the precision at that row's own score (tied rows enter
    together): a different computation of the same definition."""
    positives = np.flatnonzero(labels > 0)
    precisions = []
    for i in positives:
        flagged = scores >= scores[i]
        precisions.append(float(np.sum(labels[flagged])) / float(np.sum(flagged)))
    return float(np.mean(precisions))


def test_average_precision_matches_brute_force_with_ties() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        labels = (rng.random(n) < 0.3).astype(float)
        labels[0] = 1.0
        scores = np.round(rng.random(n) + 0.5 * labels, 1)  # coarse: many ties
        assert average_precision(labels, scores) == pytest.approx(_brute_force_ap(labels, scores))


def test_average_precision_known_values() -> None:
    y = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    assert average_precision(y, y.astype(float)) == 1.0  # perfect
    assert average_precision(y, np.zeros(10)) == pytest.approx(0.3)  # constant: base rate
    assert average_precision(y, 1.0 - y) == pytest.approx(0.3)  # inverted: only at the end
    assert math.isnan(average_precision(np.zeros(5), np.arange(5.0)))  # no positive row


# --- VUS-PR ----------------------------------------------------------------------------------


def test_label_ranges_and_soft_labels() -> None:
    y = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    starts, ends = label_ranges(y)
    assert starts.tolist() == [3] and ends.tolist() == [5]
    a, b = math.sqrt(1 - 1 / 4), math.sqrt(1 - 2 / 4)
    assert soft_labels(y, 4) == pytest.approx([0, b, a, 1, 1, a, b, 0])
    assert soft_labels(y, 0).tolist() == y.tolist() and soft_labels(y, 1).tolist() == y.tolist()
    # Buffers of neighbouring ranges add up, capped at 1.
    y2 = np.array([1, 0, 0, 1])
    assert soft_labels(y2, 4) == pytest.approx([1, min(1, a + b), min(1, a + b), 1])


def test_range_pr_at_buffer_zero_by_hand() -> None:
    # Thresholds .9 .8 .7 .6 0: range recall = row recall x existence.
    #   .9: recall 1/3, 1 of 2 ranges -> 1/6, precision 1
    #   .8: recall 2/3, 1 of 2        -> 1/3, precision 1
    #   .7: unchanged recall          -> 1/3, precision 2/3
    #   .6: recall 1, both ranges     -> 1,   precision 3/4
    # area = 1/6 + 1/6 + 0 + 2/3 * 3/4 = 5/6 (row AP: 1/3 + 1/3 + 1/3 * 3/4 = 11/12)
    y = np.array([0, 1, 1, 0, 0, 1, 0, 0])
    s = np.array([0, 0.9, 0.8, 0.7, 0, 0.6, 0, 0])
    assert range_pr_auc(y, s, 0) == pytest.approx(5 / 6)
    assert average_precision(y, s) == pytest.approx(11 / 12)


def test_vus_pr_at_buffer_zero_is_range_pr_and_is_the_mean_over_buffers() -> None:
    rng = np.random.default_rng(3)
    y = np.zeros(200)
    y[50:60] = 1
    y[120:140] = 1
    s = rng.random(200) + 0.7 * y
    assert vus_pr(y, s, max_buffer=0) == pytest.approx(range_pr_auc(y, s, 0))
    per_buffer = [range_pr_auc(y, s, b) for b in range(9)]
    assert vus_pr(y, s, max_buffer=8) == pytest.approx(np.mean(per_buffer))


def test_vus_pr_perfect_and_constant_scores() -> None:
    y = np.zeros(100)
    y[40:50] = 1
    assert vus_pr(y, y.astype(float), max_buffer=0) == 1.0
    # A constant score flags every row: range recall 1, precision = sum(soft labels) / n.
    expected = np.mean([soft_labels(y, b).sum() / 100 for b in range(11)])
    assert vus_pr(y, np.full(100, 0.3), max_buffer=10) == pytest.approx(expected)
    assert math.isnan(vus_pr(np.zeros(10), np.arange(10.0)))


def test_buffers_give_credit_to_an_alarm_just_before_the_fault() -> None:
    y = np.zeros(100)
    y[40:50] = 1
    early = np.zeros(100)
    early[37:39] = 1.0  # two rows before the fault, nothing inside it
    assert range_pr_auc(y, early, 0) < 0.2
    assert vus_pr(y, early, max_buffer=20) > range_pr_auc(y, early, 0) + 0.1


def test_pooled_curves_equal_the_concatenation() -> None:
    rng = np.random.default_rng(11)
    labels, scores = [], []
    for k in range(4):
        y = np.zeros(300)
        y[100 + 20 * k : 130 + 20 * k] = 1
        labels.append(y)
        scores.append(np.round(rng.random(300) + 0.6 * y, 2))
    all_y, all_s = np.concatenate(labels), np.concatenate(scores)
    grid = threshold_grid(all_y, all_s, grid=10_000)  # every distinct value: exact
    curves = [score_curve(y, s, grid) for y, s in zip(labels, scores, strict=True)]

    def total(field: str) -> np.ndarray:
        return np.sum([getattr(c, field) for c in curves], axis=0)

    fields = [total(f) for f in ("positives", "predicted", "tp", "soft", "ranges", "existing")]
    positives, predicted, tp = fields[:3]
    assert curve_average_precision(positives, predicted, tp[0]) == pytest.approx(
        average_precision(all_y, all_s)
    )
    assert curve_vus_pr(*fields) == pytest.approx(vus_pr(all_y, all_s))
    # Weighted pooling (a bootstrap draw) = the concatenation with repeats.
    w = np.array([[2.0, 0.0, 1.0, 1.0]])
    drawn = [0, 0, 2, 3]
    pooled = [np.tensordot(w, np.stack([getattr(c, f) for c in curves]), axes=(1, 0))[0]
              for f in ("positives", "predicted", "tp", "soft", "ranges", "existing")]  # fmt: skip
    rep_y = np.concatenate([labels[i] for i in drawn])
    rep_s = np.concatenate([scores[i] for i in drawn])
    assert float(curve_range_pr(*pooled)[0]) == pytest.approx(range_pr_auc(rep_y, rep_s, 0))
    assert curve_vus_pr(*pooled) == pytest.approx(vus_pr(rep_y, rep_s))


def test_threshold_grid_is_descending_and_bounded() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(5000) < 0.05).astype(float)
    s = rng.random(5000)
    grid = threshold_grid(y, s, grid=64)
    assert len(grid) <= 64 and np.all(np.diff(grid) < 0)
    assert grid[0] == s.max() and grid[-1] == s.min()
    assert threshold_grid(y, np.round(s, 1), grid=64).tolist() == sorted(
        set(np.round(s, 1).tolist()), reverse=True
    )


# --- bootstrap helpers -----------------------------------------------------------------------


def test_bootstrap_weights_are_the_draws_of_resample_sums() -> None:
    table = np.arange(21.0).reshape(7, 3)
    w = bootstrap_weights(7, 50, seed=4)
    assert w.shape == (50, 7) and np.all(w.sum(axis=1) == 7)
    assert np.allclose(w @ table, resample_sums({"a": table}, draws=50, seed=4)["a"])


def test_weighted_median_is_the_median_of_the_expanded_list() -> None:
    rng = np.random.default_rng(2)
    values = rng.random(9)
    weights = rng.integers(0, 4, size=(30, 9)).astype(float)
    weights[0] = 0.0
    got = weighted_median(values, weights)
    assert math.isnan(got[0])
    for row, m in zip(weights[1:], got[1:], strict=True):
        expanded = np.repeat(values, row.astype(int))
        assert m == pytest.approx(np.median(expanded)) if expanded.size else math.isnan(m)
    assert math.isnan(weighted_median([], np.ones((1, 0)))[0])


def test_interval_skips_undefined_draws_without_warnings() -> None:
    assert interval([1.0, float("nan"), 3.0], (0.0, 100.0)) == [1.0, 3.0]
    lo, hi = interval([float("nan")] * 3)
    assert math.isnan(lo) and math.isnan(hi)
