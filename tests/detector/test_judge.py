"""The judge of one statistic: what it learns from brief and lasting elevations."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("which", ["python", "compiled"])
def test_judges_keep_their_maxima_once_and_in_the_order_they_came(which: str) -> None:
    """Sorted, with the ring slot of each (#16 item 4): the oldest goes first, the ring is
    saved in slot order, and judges that learned nothing share one empty pair."""
    from gateway.detector import engine

    core = engine.core_module(which)
    rng = np.random.default_rng(5)
    judge, idle = core.Judge(0.0), core.Judge(0.0)
    learned = [float(np.float32(v)) for v in rng.uniform(0.0, 10.0, BLOCKS + 20)]
    for v in learned:
        judge.learn(v)
    ring = learned[-BLOCKS:]
    ring = ring[-(BLOCKS + 20) % BLOCKS :] + ring[: -(BLOCKS + 20) % BLOCKS]
    assert list(judge.ring()) == ring  # slot i holds the maximum learned at i mod BLOCKS
    assert list(judge.ordered) == sorted(learned[-BLOCKS:])
    assert len(idle.ordered) == 0 and idle.ordered is core.Judge(1.0).ordered
    assert judge.ordered is not idle.ordered and judge.slots is not idle.slots
    again = core.Judge(0.0)
    again.load(judge.state())
    assert list(again.ordered) == list(judge.ordered) and list(again.ring()) == ring
    empty = core.Judge(0.0)
    empty.load(idle.state())
    assert empty.ordered is idle.ordered  # restored empty: still the shared pair
    empty.learn(1.5)
    assert list(empty.ordered) == [1.5] and len(idle.ordered) == 0
