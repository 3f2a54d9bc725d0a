"""The benchmark corpora keep their promises: valid, deterministic series whose labels match
their faults, and generators that really produce what their docstrings say (smoke size)."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from tools.corpora import heldout, periodic, persistent
from tools.corpora.base import T0, Series, labels_from_faults, retime, write_csv

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def _gutentag(seed: int, size: str) -> list[Series]:
    try:
        from tools.corpora import gutentag

        return gutentag.generate(seed, size)
    except ImportError as exc:  # the CI installs it: a missing package is a failure, not a skip
        pytest.fail(f"timeeval-gutentag is not installed: {exc}")


GENERATORS: dict[str, Callable[[int, str], list[Series]]] = {
    "periodic": periodic.generate,
    "persistent": persistent.generate,
    "heldout": heldout.generate,
    "gutentag": _gutentag,
}


@cache
def smoke(corpus: str, seed: int = 0) -> list[Series]:
    return GENERATORS[corpus](seed, "smoke")


def by_corpus(corpus: str) -> list[Series]:
    return [s for s in smoke("heldout") if s.corpus == corpus]


def fault_rows(series: Series) -> tuple[int, int]:
    """Row range [first, last + 1) of the first fault."""
    start, end = series.faults[0]
    return int(np.searchsorted(series.t, start)), int(np.searchsorted(series.t, end))


# ------------------------------------------------------------------ every corpus


@pytest.mark.parametrize("corpus", list(GENERATORS))
def test_smoke_series_are_valid(corpus: str) -> None:
    series = smoke(corpus)
    assert len(series) >= 3
    names = [s.name for s in series]
    assert len(set(names)) == len(names)
    for s in series:
        assert NAME.match(s.name), s.name
        assert all(NAME.match(c) for c in s.channels), s.channels
        assert len(set(s.channels)) == len(s.channels)
        assert s.x.dtype == np.float64 and s.t.dtype == np.float64 and s.labels.dtype == np.uint8
        assert s.t[0] == pytest.approx(T0, abs=1.0)
        assert np.isfinite(s.x).all()
        assert np.array_equal(s.labels, labels_from_faults(s.t, s.faults)), s.name
        assert 0 < s.train_rows < s.rows
        assert not s.labels[: s.train_rows].any(), f"{s.name}: a fault row in the training rows"
        for start, end in s.faults:
            assert s.t[s.train_rows] <= start < end
        assert all(isinstance(v, str) for v in s.tags.values())
        assert {"kind", "fault", "channels"} <= set(s.tags)


@pytest.mark.parametrize("corpus", list(GENERATORS))
def test_generation_is_deterministic_and_seeded(corpus: str) -> None:
    again = GENERATORS[corpus](0, "smoke")
    for a, b in zip(smoke(corpus), again, strict=True):
        assert a.name == b.name and a.faults == b.faults and a.tags == b.tags
        assert np.array_equal(a.t, b.t) and np.array_equal(a.x, b.x)
    other = smoke(corpus, seed=1)
    assert any(
        a.x.shape != b.x.shape or not np.array_equal(a.x, b.x)
        for a, b in zip(smoke(corpus), other, strict=False)
    )


@pytest.mark.parametrize("corpus", list(GENERATORS))
def test_unknown_size_is_refused(corpus: str) -> None:
    with pytest.raises(ValueError, match="size"):
        GENERATORS[corpus](0, "huge")


def test_retime_keeps_values_and_labels_and_scales_faults() -> None:
    series = next(s for s in smoke("periodic") if s.faults)
    slower = retime(series, 60.0)
    assert np.array_equal(slower.x, series.x) and np.array_equal(slower.labels, series.labels)
    factor = 60.0 / float(np.median(np.diff(series.t)))
    (start, end), (new_start, new_end) = series.faults[0], slower.faults[0]
    assert new_start - T0 == pytest.approx((start - series.t[0]) * factor)
    assert new_end - new_start == pytest.approx((end - start) * factor)
    assert np.array_equal(labels_from_faults(slower.t, slower.faults), series.labels)
    assert slower.name.endswith("@1min") and slower.tags["interval"] == "1min"


def test_write_csv_round_trips(tmp_path: Path) -> None:
    series = by_corpus("drift_like")[2]  # two channels
    series.x[5, 0] = np.nan  # a missing cell is written empty
    path = write_csv(series, tmp_path)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["timestamp", *series.channels, "label"]
    body = rows[1:]
    assert len(body) == series.rows
    t = np.array([float(r[0]) for r in body])
    x = np.array([[float(v) if v else np.nan for v in r[1:-1]] for r in body])
    assert np.allclose(t, series.t, atol=5e-4)
    assert np.array_equal(x, series.x, equal_nan=True)
    assert [int(r[-1]) for r in body] == series.labels.tolist()
    assert body[5][1] == ""


# ------------------------------------------------------------------ periodic


def test_periodic_quiet_series_repeat_with_their_period() -> None:
    quiet = [
        s
        for s in smoke("periodic")
        if s.tags["fault"] == "none"
        and s.tags["noise"] == "none"
        and s.tags["sampling"] == "regular"
    ]
    assert quiet
    for s in quiet:
        period = int(s.tags["period"])
        assert np.array_equal(s.x[period:, 0], s.x[:-period, 0]), s.name
        assert not np.array_equal(s.x[1:, 0], s.x[:-1, 0])  # it is not flat


def test_periodic_changes_start_late_and_files_are_long() -> None:
    for s in smoke("periodic") + periodic.generate(0, "quick"):
        period = float(s.tags["period"])
        assert s.rows >= max(3000, 30 * period)
        if s.faults:
            assert fault_rows(s)[0] >= s.train_rows + 5 * period
    quick = periodic.generate(0, "quick")
    assert sum(not s.faults for s in quick) == len(quick) // 3
    assert {s.tags["fault"] for s in quick} == {"none", *periodic.CHANGES}
    assert {s.tags["kind"] for s in quick} == set(periodic.SHAPES)


def test_periodic_missing_cycle_is_flat_for_one_period() -> None:
    s = next(s for s in smoke("periodic") if s.tags["fault"] == "missing_cycle")
    first, last = fault_rows(s)
    assert last - first == int(s.tags["period"])
    assert np.ptp(s.x[first:last, 0]) == 0.0  # noiseless: exactly flat
    assert s.x[first, 0] == s.x[: s.train_rows, 0].min()  # at the resting level


# ------------------------------------------------------------------ persistent


def test_persistent_faults_last_to_the_end() -> None:
    for s in smoke("persistent"):
        if s.tags["fault"] == "none":
            assert not s.faults
            continue
        assert len(s.faults) == 1 and s.faults[0][1] > s.t[-1] and s.labels[-1] == 1
        if s.tags["load_after_fault"] == "yes":
            rows = [int(r) for r in s.tags["load_rows"].split(",")]
            assert any(r >= fault_rows(s)[0] for r in rows)


def test_persistent_step_moves_only_its_channels() -> None:
    s = next(s for s in smoke("persistent") if s.tags["fault"] == "step")
    start = fault_rows(s)[0]
    chosen = [s.channels.index(c) for c in s.tags["channels"].split(",")]
    # compare with the rows just before: a step of 2-5 sd stands out of the noise
    before, after = s.x[start - 100 : start], s.x[start : start + 100]
    shift = np.abs(after.mean(axis=0) - before.mean(axis=0)) / s.x[: s.train_rows].std(axis=0)
    assert all(shift[c] > 1.0 for c in chosen)


def test_persistent_relation_stays_in_range_but_breaks_correlation() -> None:
    s = next(s for s in smoke("persistent") if s.tags["fault"] == "relation")
    start = fault_rows(s)[0]
    affected = [s.channels.index(c) for c in s.tags["channels"].split(",")]
    others = [c for c in range(len(s.channels)) if c not in affected]
    before, after = np.corrcoef(s.x[:start].T), np.corrcoef(s.x[start:].T)
    for c in affected:
        assert s.x[:start, c].min() <= s.x[start:, c].min()
        assert s.x[start:, c].max() <= s.x[:start, c].max()
        # how much of the old correlation pattern with the healthy channels is left
        kept = before[c, others] @ after[c, others] / (before[c, others] @ before[c, others])
        assert kept < 0.7, (s.channels[c], kept)


def test_persistent_load_changes_move_many_channels_together() -> None:
    s = next(s for s in smoke("persistent") if s.tags["fault"] == "none")
    sd = s.x[: s.train_rows].std(axis=0)
    moved = []
    for row in (int(r) for r in s.tags["load_rows"].split(",")):
        if 60 <= row < s.rows - 1100:  # settled: ramps last up to 900 s
            shift = s.x[row + 960 : row + 1080].mean(axis=0) - s.x[row - 60 : row].mean(axis=0)
            moved.append(float(np.mean(np.abs(shift) > sd)))
    assert moved and max(moved) >= 0.5


def test_persistent_has_wide_assets() -> None:
    assert any(len(s.channels) == 52 for s in smoke("persistent"))


# ------------------------------------------------------------------ held-out


def test_heldout_has_three_corpora() -> None:
    assert {s.corpus for s in smoke("heldout")} == {"nab_like", "drift_like", "plant_like"}
    assert [s.name for s in heldout.nab_like(0, "smoke")] == [s.name for s in by_corpus("nab_like")]


def test_nab_like_sampling_and_windows() -> None:
    series = by_corpus("nab_like")
    gaps = {s.name: np.diff(s.t) for s in series}
    assert any(np.median(g) >= 1800 for g in gaps.values())  # slow-sampled
    irregular = [s for s in series if s.tags["sampling"] == "irregular"]
    assert irregular and all(gaps[s.name].max() > 600 for s in irregular)
    for s in series:
        if s.tags["kind"].startswith("art_"):
            assert not s.faults
        for start, end in s.faults:  # NAB windows: 10 % of the file over the anomaly count
            duration = s.t[-1] - s.t[0] + np.median(gaps[s.name])
            assert end - start == pytest.approx(0.1 * duration / len(s.faults), rel=1e-6)
    square = next(s for s in series if s.tags["kind"] == "art_daily_square")
    assert len(np.unique(square.x)) == 2  # noiseless


def test_drift_like_marks_drifts_and_freezes_stuck_sensors() -> None:
    series = by_corpus("drift_like")
    assert sum(not s.faults for s in series) >= len(series) // 2
    assert all(s.expect_drift for s in series if s.tags["drift"] == "yes")
    assert any(s.expect_drift and not s.faults for s in series)
    for s in series:
        assert 10 <= np.median(np.diff(s.t)) <= 600
        if s.tags["fault"] == "stuck":
            first, last = fault_rows(s)
            assert np.ptp(s.x[first:last], axis=0).min() == 0.0
    full = heldout.drift_like(0, "quick")
    assert sum(not s.faults for s in full) == 7


def test_plant_like_looks_like_tennessee_eastman() -> None:
    series = by_corpus("plant_like")
    assert any(not s.faults for s in series)
    for s in series:
        assert len(s.channels) == 52 and s.rows == 960
        assert np.all(np.diff(s.t) == 180.0)
        analysers = s.x[:, 22:41]
        assert np.array_equal(analysers[0::2], analysers[1::2])  # held between 6-min samples
        if s.faults:
            assert s.faults[0][0] >= s.t[0] + 10 * 3600 and s.labels[-1] == 1
    quick = heldout.plant_like(0, "quick")
    assert {s.tags["fault"] for s in quick} >= {f"idv{i:02d}" for i in range(1, 22)}


# ------------------------------------------------------------------ gutentag


def test_gutentag_labels_are_its_anomalies() -> None:
    series = smoke("gutentag")
    assert any(s.tags["fault"] == "none" and not s.faults for s in series)
    for s in series:
        kinds = [] if s.tags["anomalies"] == "none" else s.tags["anomalies"].split(",")
        assert len(s.faults) == len(kinds), s.name  # one labelled run per anomaly
        assert np.all(np.diff(s.t) == 1.0)
    assert any(len(s.channels) > 1 for s in series)


def test_gutentag_mode_correlation_flips_one_channel() -> None:
    s = next(s for s in smoke("gutentag") if s.tags["fault"] == "mode-correlation")
    channel = s.channels.index(s.tags["anomaly_channels"])
    other = (channel + 1) % len(s.channels)
    first, last = fault_rows(s)
    inside = np.corrcoef(s.x[first:last, channel], s.x[first:last, other])[0, 1]
    outside = np.corrcoef(s.x[:first, channel], s.x[:first, other])[0, 1]
    assert outside > 0.5 and inside < -0.5
