"""The stall counters behind `status` -> pipeline and the metrics (#16 item 3): the longest
of each phase and of whole iterations, and how many went over the 100 ms budget."""

from __future__ import annotations

import gc

from gateway.pipeline.timing import PHASES, PhaseTimes


def test_longest_and_over_budget_per_phase_and_per_iteration() -> None:
    times = PhaseTimes()
    for seconds in (0.02, 0.15, 0.05):
        times.add("score", seconds)
    times.add("commit", 0.101)
    for seconds in (0.03, 0.2, 0.099):
        times.iteration(seconds)
    status = times.status()
    assert status["phase_max_ms"]["score"] == 150.0 and status["phase_over"]["score"] == 1
    assert status["phase_over"]["commit"] == 1 and status["phase_over"]["take"] == 0
    assert (status["iterations"], status["iterations_over"]) == (3, 1)
    assert status["iteration_max_ms"] == 200.0
    assert set(status["phase_max_ms"]) == set(PHASES)


def test_garbage_collections_are_timed_while_watched() -> None:
    times = PhaseTimes()
    times.watch_gc()
    try:
        gc.collect()
    finally:
        times.unwatch_gc()
    assert times.max_s["gc"] > 0.0
    gc.collect()  # no longer watched: nothing changes
    assert times._on_gc not in gc.callbacks


def test_cyclic_garbage_frozen_alive_is_reclaimed_by_the_hourly_full_collection() -> None:
    import math
    import types
    import weakref

    from gateway.pipeline.runner import Pipeline

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    alive = weakref.ref(a)
    owner = types.SimpleNamespace(_full_collect_at=math.inf)  # the hour is not up
    try:
        Pipeline._freeze_survivors(owner)  # type: ignore[arg-type]
        del a, b
        Pipeline._freeze_survivors(owner)  # type: ignore[arg-type]
        assert alive() is not None  # frozen: the young collections do not see it
        owner._full_collect_at = -math.inf  # an hour later
        Pipeline._freeze_survivors(owner)  # type: ignore[arg-type]
        assert alive() is None
    finally:
        gc.unfreeze()
