"""The judge of one statistic: what it learns from brief and lasting elevations."""

from __future__ import annotations

import numpy as np

from gateway.detector.core import BLOCK, BLOCKS, BRIEF_BLOCKS, Judge

PEAK = 6.0  # far beyond the healthy values, which stay below 1


def healthy(judge: Judge, blocks: int, rng: np.random.Generator) -> None:
    for value in rng.uniform(0.0, 1.0, blocks * BLOCK):
        judge.observe(float(value), learn=True)


def elevated(judge: Judge, blocks: int) -> None:
    """An elevation the asset judged surprising: its readings are not to be learned."""
    for _ in range(blocks * BLOCK):
        judge.observe(PEAK, learn=False)


def warm_judge() -> tuple[Judge, np.random.Generator]:
    rng = np.random.default_rng(3)
    judge = Judge(floor=0.0)
    healthy(judge, 16, rng)
    assert judge.ready
    return judge, rng


def test_a_single_brief_elevation_teaches_nothing() -> None:
    judge, rng = warm_judge()
    before = judge.surprise(PEAK)
    assert before > 5.0
    elevated(judge, 1)
    healthy(judge, 4, rng)
    assert judge.surprise(PEAK) > 0.8 * before


def test_a_brief_elevation_that_recurs_is_learned() -> None:
    judge, rng = warm_judge()
    before = judge.surprise(PEAK)
    for _ in range(2):
        elevated(judge, 1)
        healthy(judge, 4, rng)
    assert judge.surprise(PEAK) < 0.5 * before


def test_a_lasting_elevation_is_never_learned_however_often() -> None:
    judge, rng = warm_judge()
    before = judge.surprise(PEAK)
    for _ in range(3):
        elevated(judge, BRIEF_BLOCKS + 1)
        healthy(judge, 4, rng)
    assert judge.surprise(PEAK) > 0.8 * before


def test_brief_elevations_too_far_apart_teach_nothing() -> None:
    judge, rng = warm_judge()
    before = judge.surprise(PEAK)
    for _ in range(2):
        elevated(judge, 1)
        healthy(judge, BLOCKS + 2, rng)
    assert judge.surprise(PEAK) > 0.8 * before


def test_a_pending_brief_elevation_survives_a_checkpoint() -> None:
    judge, rng = warm_judge()
    elevated(judge, 1)
    healthy(judge, 2, rng)
    restored = Judge(floor=0.0)
    restored.load(judge.state())
    for j in (judge, restored):
        elevated(j, 1)
        j.observe(0.5, learn=True)
    healthy(judge, 1, np.random.default_rng(9))
    healthy(restored, 1, np.random.default_rng(9))
    assert restored.surprise(PEAK) == judge.surprise(PEAK)


def test_state_saved_before_brief_learning_loads() -> None:
    judge, _ = warm_judge()
    old = judge.state()[:5]
    restored = Judge(floor=0.0)
    restored.load(old)
    assert restored.surprise(PEAK) == judge.surprise(PEAK)
    assert (restored.held, restored.brief) == (0, 0.0)
