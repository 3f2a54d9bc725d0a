"""Periodic signals, clean and noisy, each with at most one change: does the detector learn a
cycle, stay quiet while it repeats, and notice when the cycle itself changes?

Many field signals repeat: a compressor loads and unloads (a square wave with some duty cycle),
a press strokes (a pulse train), a conveyor's current rises and falls with each batch (a
sawtooth), a building's load follows the day (a plateau with ramps). An online detector that
alarms on every edge of such a signal is useless; one that never learns the cycle cannot tell
when a cycle goes missing or runs at the wrong speed. This corpus asks both questions.

What is generated, per series (one channel, ``value``):
- a shape: ``square`` (duty 0.1-0.7), ``sine``, ``sawtooth``, ``harmonic`` (2-4 harmonics of
  random weight and phase), ``pulse`` (a pulse 3-10 % of the period wide) or ``daily`` (night
  level, morning ramp, a day-long plateau, evening ramp);
- a period of 10-1,000 readings, log-uniform; half of them a whole number of readings (so the
  samples repeat exactly), half not (so the samples slide along the cycle, as in the field);
- a level (-50..150) and amplitude (0.5..50), in arbitrary units;
- noise: ``none`` (exactly noiseless, no rounding), ``low`` (1 % of the amplitude), ``mid``
  (3 %) or ``high`` (10 %);
- sampling every 1 s, regular, or (a quarter of the series) with up to +-0.3 s of jitter; the
  signal is defined in continuous time and evaluated at the sample times;
- at least 30 periods and at least 3,000 readings; ``train_rows`` = 3 periods or 1,000 rows,
  whichever is more, but at most 30 % of the file.

One third of the series have no change at all (any alert on them is a false alarm). The others
have exactly one change, starting at least 5 full periods after ``train_rows`` and lasting
either 2-6 periods or to the end of the file (``tags["duration"]``):
- ``period``: the period becomes x0.5-0.7 or x1.4-2 (the phase stays continuous);
- ``shape``: another shape of the same period and range (square -> sine, a new duty cycle...);
- ``amplitude``: the amplitude becomes x0.5 or x1.8 around the same centre line;
- ``level``: the whole signal moves by 0.3-1 amplitude;
- ``missing_cycle``: one whole period stays at the signal's resting (lowest) level;
- ``phase``: the cycle jumps by 0.2-0.8 of a period;
- ``noise``: noise of 10-30 % of the amplitude is added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tools.corpora.base import SIZES, T0, Series, labels_from_faults

CORPUS = "periodic"
SHAPES = ("square", "sine", "sawtooth", "harmonic", "pulse", "daily")
CHANGES = ("period", "shape", "amplitude", "level", "missing_cycle", "phase", "noise")
NOISE = {"none": 0.0, "low": 0.01, "mid": 0.03, "high": 0.1}  # sd as a fraction of amplitude
MIN_ROWS, MIN_PERIODS = 3000, 30
SERIES_PER_SIZE = {"smoke": 5, "quick": 24, "full": 90}

Shape = Callable[[np.ndarray], np.ndarray]  # phase in cycles -> value in [-1, 1]


@dataclass(frozen=True)
class Plan:
    """Everything random about one series, drawn before any sample is computed."""

    shape: str
    shape_args: tuple[float, ...]
    period: float  # readings (= seconds before re-timing)
    level: float
    amplitude: float
    noise: str
    jitter: float  # seconds, 0 = regular sampling
    change: str  # "none" or one of CHANGES
    rows: int


def generate(seed: int = 0, size: str = "full") -> list[Series]:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    rng = np.random.default_rng([seed, 0x9E71])
    plans = _smoke_plans(rng) if size == "smoke" else _plans(rng, SERIES_PER_SIZE[size])
    return [_render(rng, plan, i) for i, plan in enumerate(plans)]


def _plans(rng: np.random.Generator, count: int) -> list[Plan]:
    # Shape j % 6 with change j % 7 walks through all 42 (shape, change) cells, and any 24
    # consecutive series cover every shape and every change: each table cell is filled.
    quiet = count // 3
    kinds = [(SHAPES[j % len(SHAPES)], "none") for j in range(quiet)]
    kinds += [(SHAPES[j % len(SHAPES)], CHANGES[j % len(CHANGES)]) for j in range(count - quiet)]
    plans = []
    for shape, change in kinds:
        period = float(np.exp(rng.uniform(np.log(10.0), np.log(1000.0))))
        if rng.random() < 0.5:
            period = float(round(period))
        noise = str(rng.choice(list(NOISE)))
        jitter = float(rng.uniform(0.05, 0.3)) if rng.random() < 0.25 else 0.0
        plans.append(_plan(rng, shape, period, noise, jitter, change))
    return plans


def _smoke_plans(rng: np.random.Generator) -> list[Plan]:
    # Short files, but each kind of promise the tests check is represented.
    return [
        _plan(rng, "square", 20.0, "none", 0.0, "none"),
        _plan(rng, "sine", 37.0, "low", 0.0, "period"),
        _plan(rng, "pulse", 25.0, "none", 0.0, "missing_cycle"),
        _plan(rng, "daily", 50.5, "mid", 0.2, "level"),
        _plan(rng, "sawtooth", 16.0, "none", 0.0, "shape"),
    ]


def _plan(
    rng: np.random.Generator, shape: str, period: float, noise: str, jitter: float, change: str
) -> Plan:
    periods = rng.uniform(MIN_PERIODS, MIN_PERIODS * 1.5)
    return Plan(
        shape=shape,
        shape_args=_shape_args(rng, shape),
        period=period,
        level=float(rng.uniform(-50.0, 150.0)),
        amplitude=float(np.exp(rng.uniform(np.log(0.5), np.log(50.0)))),
        noise=noise,
        jitter=jitter,
        change=change,
        rows=int(max(MIN_ROWS, np.ceil(periods * period))),
    )


def _shape_args(rng: np.random.Generator, shape: str) -> tuple[float, ...]:
    if shape == "square":
        return (float(rng.choice([0.1, 0.25, 0.5, 0.7])),)
    if shape == "pulse":
        return (float(rng.uniform(0.03, 0.1)),)
    if shape == "sawtooth":
        return (float(rng.choice([1.0, -1.0])),)  # rising or falling ramp
    if shape == "harmonic":
        k = int(rng.integers(2, 5))
        weights = rng.uniform(0.2, 1.0, k) / np.arange(1, k + 1)
        phases = rng.uniform(0.0, 1.0, k)
        return (*weights.tolist(), *phases.tolist())
    if shape == "daily":
        return (float(rng.uniform(0.2, 0.3)), float(rng.uniform(0.6, 0.75)))  # rise, fall
    return ()


def shape_function(shape: str, args: tuple[float, ...]) -> Shape:
    """The shape as a function of phase (in cycles), with values in [-1, 1]."""
    if shape == "sine":
        return lambda p: np.sin(2 * np.pi * p)
    if shape == "square":
        return lambda p: np.where(np.mod(p, 1.0) < args[0], 1.0, -1.0)
    if shape == "pulse":
        return lambda p: np.where(np.mod(p, 1.0) < args[0], 1.0, -1.0)
    if shape == "sawtooth":
        return lambda p: args[0] * (2.0 * np.mod(p, 1.0) - 1.0)
    if shape == "harmonic":
        k = len(args) // 2
        weights, phases = np.array(args[:k]), np.array(args[k:])
        scale = float(np.sum(weights))

        def harmonic(p: np.ndarray) -> np.ndarray:
            orders = np.arange(1, k + 1)
            waves = np.sin(2 * np.pi * (np.multiply.outer(p, orders) + phases))
            return waves @ weights / scale

        return harmonic
    if shape == "daily":
        rise, fall = args
        ramp = 0.08  # of a day, morning and evening
        knots = [0.0, rise, rise + ramp, fall, fall + ramp, 1.0]
        values = [-1.0, -1.0, 1.0, 1.0, -1.0, -1.0]
        return lambda p: np.interp(np.mod(p, 1.0), knots, values)
    raise ValueError(f"unknown shape {shape!r}")


def _changed_shape(rng: np.random.Generator, plan: Plan) -> tuple[str, tuple[float, ...]]:
    """A different shape over the same period and range: what a shape change turns into."""
    if plan.shape in ("square", "pulse") and rng.random() < 0.5:
        duty = plan.shape_args[0]
        new = duty + 0.25 if duty < 0.45 else duty - 0.25  # a clearly different duty cycle
        return plan.shape, (new,)
    if plan.shape == "sawtooth" and rng.random() < 0.5:
        return "sawtooth", (-plan.shape_args[0],)
    others = {"square": "sine", "sine": "square", "pulse": "sine", "daily": "sine"}
    other = others.get(plan.shape, "sine")
    return other, _shape_args(rng, other)


def _render(rng: np.random.Generator, plan: Plan, index: int) -> Series:
    n = plan.rows
    t = T0 + np.arange(n, dtype=np.float64)
    if plan.jitter:
        t = t + rng.uniform(-plan.jitter, plan.jitter, n)
    train_rows = int(min(max(1000, np.ceil(3 * plan.period)), 0.3 * n))
    start, end = _change_window(rng, plan, train_rows)

    rate = np.full(n, 1.0 / plan.period)  # cycles per second between consecutive samples
    level = np.full(n, plan.level)
    amplitude = np.full(n, plan.amplitude)
    noise_sd = np.full(n, NOISE[plan.noise] * plan.amplitude)
    phase_offset = np.zeros(n)
    window = slice(start, end)
    tags: dict[str, str] = {}

    if plan.change == "period":
        factor = float(rng.choice([rng.uniform(0.5, 0.7), rng.uniform(1.4, 2.0)]))
        rate[window] = 1.0 / (plan.period * factor)
        tags["factor"] = f"{factor:.2f}"
    elif plan.change == "amplitude":
        factor = float(rng.choice([0.5, 1.8]))
        amplitude[window] *= factor
        tags["factor"] = f"{factor:g}"
    elif plan.change == "level":
        shift = float(rng.uniform(0.3, 1.0) * rng.choice([-1.0, 1.0]))
        level[window] += shift * plan.amplitude
        tags["shift"] = f"{shift:.2f}"
    elif plan.change == "phase":
        jump = float(rng.uniform(0.2, 0.8))
        phase_offset[window] = jump
        tags["jump"] = f"{jump:.2f}"
    elif plan.change == "noise":
        extra = float(rng.uniform(0.1, 0.3))
        noise_sd[window] = np.hypot(noise_sd[window], extra * plan.amplitude)
        tags["added_noise"] = f"{extra:.2f}"

    # Phase advances by rate x elapsed time, so a period change bends the phase, never breaks it.
    elapsed = np.diff(t, prepend=t[0])
    phase = rng.uniform(0.0, 1.0) + np.cumsum(elapsed * np.roll(rate, 1)) + phase_offset
    base = shape_function(plan.shape, plan.shape_args)
    x = level + amplitude * base(phase)

    if plan.change == "missing_cycle":
        start, end = _one_cycle(t, phase, start, plan.period)
        window = slice(start, end)
        x[window] = plan.level + plan.amplitude * _resting_value(base)
    elif plan.change == "shape":
        other, args = _changed_shape(rng, plan)
        x[window] = (level + amplitude * shape_function(other, args)(phase))[window]
        tags["new_shape"] = other if other != plan.shape else f"{other}{args[0]:+.2f}"

    if noise_sd.any():
        x = x + rng.normal(0.0, 1.0, n) * noise_sd

    faults = [] if plan.change == "none" else [_interval(t, start, end)]
    duration = "none" if plan.change == "none" else _duration_tag(plan, start, end, n)
    return Series(
        name=f"{plan.shape}-{plan.change.replace('_', '-')}-{index:03d}",
        corpus=CORPUS,
        t=t,
        x=x[:, None],
        channels=["value"],
        labels=labels_from_faults(t, faults),
        faults=faults,
        train_rows=train_rows,
        tags={
            "kind": plan.shape,
            "fault": plan.change,
            "period": f"{plan.period:g}",
            "noise": plan.noise,
            "sampling": "jitter" if plan.jitter else "regular",
            "duration": duration,
            "channels": "1",
            **tags,
        },
    )


def _change_window(rng: np.random.Generator, plan: Plan, train_rows: int) -> tuple[int, int]:
    """Rows [start, end) of the change: 5+ periods after training, a few periods or to the end."""
    n, period = plan.rows, plan.period
    earliest = train_rows + int(np.ceil(5 * period))
    if plan.change == "missing_cycle" or rng.random() < 0.5:
        length = int(np.ceil(rng.uniform(2.0, 6.0) * period))
        latest = n - length - int(np.ceil(3 * period))  # leave normal cycles after it
        start = int(rng.integers(earliest, max(earliest, latest) + 1))
        return start, min(start + length, n)
    latest = n - max(int(np.ceil(5 * period)), n // 5)  # to the end: a fair share of the file
    return int(rng.integers(earliest, max(earliest, latest) + 1)), n


def _one_cycle(t: np.ndarray, phase: np.ndarray, start: int, period: float) -> tuple[int, int]:
    """Rows of the first whole cycle from ``start``: it begins where the phase wraps."""
    wraps = np.flatnonzero(np.diff(np.floor(phase[start:])) > 0)
    first = start + int(wraps[0]) + 1 if len(wraps) else start
    last = int(np.searchsorted(t, t[first] + period))
    return first, last


def _resting_value(base: Shape) -> float:
    """The value a machine shows between cycles: the shape's lowest point."""
    return float(np.min(base(np.linspace(0.0, 1.0, 1001))))


def _interval(t: np.ndarray, start: int, end: int) -> tuple[float, float]:
    stop = float(t[end]) if end < len(t) else float(t[-1]) + 1.0
    return float(t[start]), stop


def _duration_tag(plan: Plan, start: int, end: int, n: int) -> str:
    if end >= n:
        return "to_end"
    periods = round((end - start) / plan.period)
    return "1_period" if periods == 1 else f"{periods}_periods"
