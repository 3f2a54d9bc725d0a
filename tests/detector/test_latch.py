"""Alert hysteresis, tested directly: it is pure logic. Durations count the asset's readings;
the cooldown counts typical intervals (``elapsed`` per reading)."""

from gateway.detector import AlertLatch

RAISED, CLEARED = 1, 2


def latch(min_duration: int = 3, cooldown_min_duration: int = 0) -> AlertLatch:
    return AlertLatch(0.9, 0.5, min_duration, cooldown_min_duration)


def feed(lt: AlertLatch, scores: list[float], cooldown: float = 10.0, armed: bool = True) -> list:
    return [lt.update(s, 1.0, cooldown, armed) for s in scores]


def test_raise_needs_min_duration_consecutive() -> None:
    lt = latch()
    assert feed(lt, [0.95, 0.95, 0.1, 0.95, 0.95]) == [0] * 5
    assert lt.update(0.95, 1.0, 10.0, True) == RAISED
    assert lt.active


def test_clear_needs_min_duration_below_clear_threshold() -> None:
    lt = latch(min_duration=1)
    assert lt.update(0.95, 1.0, 10.0, True) == RAISED
    assert feed(lt, [0.7, 0.6, 0.8]) == [0, 0, 0]  # between the thresholds: still active
    assert lt.update(0.4, 1.0, 10.0, True) == CLEARED
    assert not lt.active


def test_cooldown_blocks_a_new_raise_for_its_length() -> None:
    lt = latch(min_duration=1)
    lt.update(0.95, 1.0, 10.0, True)
    assert lt.update(0.1, 1.0, 10.0, True) == CLEARED
    assert feed(lt, [0.99] * 9) == [0] * 9  # nine intervals into a ten-interval cooldown
    assert lt.update(0.99, 1.0, 10.0, True) == RAISED


def test_a_sustained_fault_is_raised_during_cooldown_a_flapping_one_is_not() -> None:
    lt = latch(min_duration=2, cooldown_min_duration=5)
    assert feed(lt, [0.95, 0.95], cooldown=100.0) == [0, RAISED]
    assert feed(lt, [0.1, 0.1], cooldown=100.0) == [0, CLEARED]
    flaps = ([0.95] * 4 + [0.1]) * 5
    assert feed(lt, flaps, cooldown=100.0) == [0] * len(flaps)
    assert feed(lt, [0.95] * 5, cooldown=100.0) == [0] * 4 + [RAISED]


def test_cooldown_min_duration_never_below_min_duration() -> None:
    lt = latch(min_duration=4, cooldown_min_duration=1)
    feed(lt, [0.95] * 4 + [0.1] * 4, cooldown=100.0)
    assert not lt.active
    assert feed(lt, [0.95] * 4, cooldown=100.0) == [0] * 3 + [RAISED]


def test_not_armed_during_warmup() -> None:
    lt = latch(min_duration=1)
    assert feed(lt, [0.99] * 5, armed=False) == [0] * 5
    assert lt.update(0.99, 1.0, 10.0, True) == RAISED


def test_state_round_trip() -> None:
    lt = latch(min_duration=1)
    lt.update(0.99, 1.0, 10.0, True)
    lt.update(0.1, 1.0, 10.0, True)
    copy = latch(min_duration=1)
    copy.load(lt.state())
    assert copy.state() == lt.state()
