"""Alert hysteresis, tested directly: it is pure logic."""

from gateway.detector.latch import AlertLatch


def latch(**kw: float) -> AlertLatch:
    params = {"threshold": 0.9, "clear_threshold": 0.5, "min_duration": 3, "cooldown": 10.0}
    params.update(kw)
    return AlertLatch(**params)  # type: ignore[arg-type]


def feed(lt: AlertLatch, scores: list[float], t0: float = 0.0, armed: bool = True) -> list:
    return [lt.update(s, t0 + i, armed) for i, s in enumerate(scores)]


def test_raise_needs_min_duration_consecutive() -> None:
    lt = latch()
    assert feed(lt, [0.95, 0.95, 0.1, 0.95, 0.95]) == [None] * 5
    assert lt.update(0.95, 5) == "raised"
    assert lt.active


def test_clear_needs_min_duration_below_clear_threshold() -> None:
    lt = latch(min_duration=1)
    assert lt.update(0.95, 0) == "raised"
    # Between clear and raise thresholds: still active (hysteresis).
    assert feed(lt, [0.7, 0.6, 0.8], t0=1) == [None, None, None]
    assert lt.update(0.4, 4) == "cleared"
    assert not lt.active


def test_cooldown_blocks_a_new_raise() -> None:
    lt = latch(min_duration=1, cooldown=10.0)
    lt.update(0.95, 0)
    assert lt.update(0.1, 1) == "cleared"
    assert lt.update(0.99, 5) is None  # within cooldown
    assert lt.update(0.99, 12) == "raised"


def test_a_sustained_fault_is_raised_during_cooldown_a_flapping_one_is_not() -> None:
    lt = latch(min_duration=2, cooldown=100.0, cooldown_min_duration=5)
    assert feed(lt, [0.95, 0.95]) == [None, "raised"]
    assert feed(lt, [0.1, 0.1], t0=2) == [None, "cleared"]
    # Flapping within the cooldown: runs of 4 over threshold never make a new alert...
    flaps = ([0.95] * 4 + [0.1]) * 5
    assert feed(lt, flaps, t0=4) == [None] * len(flaps)
    # ...a run of 5 does, long before the cooldown ends (at t=103).
    assert feed(lt, [0.95] * 5, t0=40) == [None] * 4 + ["raised"]
    # After the cooldown, min_duration is enough again.
    assert feed(lt, [0.1, 0.1], t0=45) == [None, "cleared"]
    assert feed(lt, [0.95] * 2, t0=150) == [None, "raised"]


def test_cooldown_min_duration_never_below_min_duration() -> None:
    lt = latch(min_duration=4, cooldown=100.0, cooldown_min_duration=1)
    feed(lt, [0.95] * 4 + [0.1] * 4)
    assert not lt.active
    assert feed(lt, [0.95] * 4, t0=10) == [None] * 3 + ["raised"]


def test_not_armed_during_warmup() -> None:
    lt = latch(min_duration=1)
    assert feed(lt, [0.99] * 5, armed=False) == [None] * 5
    assert lt.update(0.99, 6, armed=True) == "raised"


def test_state_round_trip() -> None:
    lt = latch(min_duration=1)
    lt.update(0.99, 0)
    lt.update(0.1, 1)
    copy = latch(min_duration=1)
    copy.restore(lt.state())
    assert copy.state() == lt.state()
    fresh = latch()
    fresh.restore(latch().state())
    assert fresh.state() == latch().state()
