"""Synthetic univariate sensor signals for training and testing the default CfC model.

The shipped model has to work zero-config on any univariate stream, so it is trained on a broad
mix of "normal" behaviour rather than on one site's data: slowly drifting baselines, periodic
signals with harmonics (periods of 6 to 1,000 samples), square, sawtooth and pulse waves, duty
cycles (a motor that runs and stops, its running level creeping), regime switches (a process
that jumps between operating states with their own level, spread and dynamics), random walks,
AR(1)/Ornstein-Uhlenbeck processes, heavy-tailed noise and mixtures of these, at arbitrary
offset and scale, optionally quantised like an ADC, and sampled irregularly (jitter plus
occasional gaps). Processes are defined in continuous time and evaluated at the sample times,
so a gap really lets a random walk wander further.

What the model is trained on is what the gateway feeds it, computed by the gateway itself:
``model_arrays`` runs the detector's own engine over the series (``gateway.detector``; its
baseline, cycle and elapsed-time rules exist once, there) and records the model's inputs. numpy
only besides the gateway, deterministic given the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

FAMILIES: tuple[str, ...] = (
    "drift", "periodic", "random_walk", "ar1", "noise", "mixture", "wave", "duty", "regime",
)  # fmt: skip
WARMUP = 50  # samples at the start of a series that the loss ignores (the baseline settles)


@dataclass(frozen=True)
class Batch:
    """``b`` series of ``n`` samples: timestamps ``t`` (nominal sample units) and values ``x``."""

    t: np.ndarray  # [b, n] float64, strictly increasing, t[:, 0] == 0
    x: np.ndarray  # [b, n] float64
    families: tuple[str, ...]


def sample_times(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """Irregular timestamps: per-series jitter level, and rare gaps of 2x to ~200x the period."""
    jitter = rng.uniform(0.0, 0.4, size=(b, 1)) * (rng.random((b, 1)) < 0.7)
    dt = 1.0 + jitter * rng.uniform(-1.0, 1.0, size=(b, n))
    gap_rate = rng.choice([0.0, 0.002, 0.01, 0.03], size=(b, 1))
    gaps = rng.random((b, n)) < gap_rate
    dt = np.where(gaps, dt * np.exp(rng.uniform(np.log(2.0), np.log(200.0), size=(b, n))), dt)
    dt[:, 0] = 0.0
    return np.cumsum(dt, axis=1)


def _ou(rng: np.random.Generator, t: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Unit-variance Ornstein-Uhlenbeck process (continuous AR(1)), exact for any dt."""
    b, n = t.shape
    dt = np.diff(t, axis=1)
    a = np.exp(-dt / tau)
    eps = rng.standard_normal((b, n)) * np.concatenate(
        [np.ones((b, 1)), np.sqrt(1.0 - a * a)], axis=1
    )
    out = np.empty((b, n))
    out[:, 0] = eps[:, 0]
    for k in range(1, n):
        out[:, k] = a[:, k - 1] * out[:, k - 1] + eps[:, k]
    return out


def _components(rng: np.random.Generator, t: np.ndarray) -> dict[str, np.ndarray]:
    """Every component for every series, each roughly unit-scale; families pick the mix."""
    b, n = t.shape
    span = np.maximum(t[:, -1:], 1.0)
    u = t / span
    slope = rng.uniform(-1.0, 1.0, (b, 1)) * rng.uniform(0.5, 6.0, (b, 1))
    curve = rng.uniform(-1.0, 1.0, (b, 1)) * rng.uniform(0.0, 4.0, (b, 1))
    slow_period = span * rng.uniform(0.8, 4.0, (b, 1))
    slow = rng.uniform(0.0, 3.0, (b, 1)) * np.sin(
        2 * np.pi * t / slow_period + rng.uniform(0, 2 * np.pi, (b, 1))
    )
    drift = slope * u + curve * (u - 0.5) ** 2 + slow

    period = np.exp(rng.uniform(np.log(6.0), np.log(400.0), (b, 1)))
    periodic = np.zeros((b, n))
    for k in range(1, 4):
        amp = rng.uniform(0.0, 1.0, (b, 1)) / k * (1.0 if k == 1 else rng.random((b, 1)) < 0.6)
        phase = rng.uniform(0, 2 * np.pi, (b, 1))
        periodic += (2.0 if k == 1 else 1.0) * amp * np.sin(2 * np.pi * k * t / period + phase)

    dt = np.diff(t, axis=1, prepend=t[:, :1])
    walk = np.cumsum(np.sqrt(dt) * rng.standard_normal((b, n)), axis=1) * 0.2
    tau = np.exp(rng.uniform(np.log(2.0), np.log(200.0), (b, 1)))
    ar1 = _ou(rng, t, tau)

    dof = rng.choice([3.0, 5.0, np.inf], size=(b, 1), p=[0.15, 0.15, 0.7])
    noise = np.where(
        np.isinf(dof),
        rng.standard_normal((b, n)),
        rng.standard_t(np.where(np.isinf(dof), 30.0, dof), size=(b, n)) / np.sqrt(2.0),
    )
    return {
        "drift": drift, "periodic": periodic, "random_walk": walk, "ar1": ar1, "noise": noise,
        "wave": _waves(rng, t), "duty": _duty(rng, t), "regime": _regimes(rng, t),
    }  # fmt: skip


def _waves(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Square (any duty), sawtooth and pulse waves, periods of 6 to 1,000 samples."""
    b, _ = t.shape
    period = np.exp(rng.uniform(np.log(6.0), np.log(1000.0), (b, 1)))
    phase = (t / period + rng.random((b, 1))) % 1.0
    duty = rng.uniform(0.1, 0.9, (b, 1))
    shape = rng.integers(0, 3, (b, 1))
    square = np.where(phase < duty, 1.0, -1.0)
    saw = 2.0 * phase - 1.0
    pulse = np.where(phase < 0.5 * duty, 2.0, 0.0) - 0.5
    return np.where(shape == 0, square, np.where(shape == 1, saw, pulse))


def _duty(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A machine that runs and stops: on/off cycles of random length (10 to 500 samples),
    a start-up overshoot decaying, and a running level that creeps over the series."""
    b, n = t.shape
    mean_on = np.exp(rng.uniform(np.log(10.0), np.log(500.0), (b, 1)))
    mean_off = mean_on * np.exp(rng.uniform(np.log(0.2), np.log(5.0), (b, 1)))
    on = np.zeros((b, n), bool)
    since = np.zeros((b, n))
    for i in range(b):
        state, next_switch, last = bool(rng.random() < 0.5), 0.0, 0.0
        for k in range(n):
            if t[i, k] >= next_switch:
                state = not state
                last = t[i, k]
                length = mean_on[i, 0] if state else mean_off[i, 0]
                next_switch = t[i, k] + rng.exponential(length) + 1.0
            on[i, k] = state
            since[i, k] = t[i, k] - last
    span = np.maximum(t[:, -1:], 1.0)
    creep = 1.0 + rng.uniform(-0.3, 0.3, (b, 1)) * t / span
    overshoot = rng.uniform(0.0, 0.6, (b, 1)) * np.exp(-since / rng.uniform(2.0, 30.0, (b, 1)))
    return np.where(on, creep * (2.0 + overshoot), 0.0) - 1.0


def _regimes(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A process that switches between two or three operating states (each with its own
    level, spread and time constant), staying 50 to 2,000 samples in each."""
    b, n = t.shape
    out = np.zeros((b, n))
    for i in range(b):
        states = int(rng.integers(2, 4))
        level = rng.normal(0.0, 1.5, states)
        spread = np.exp(rng.uniform(np.log(0.1), np.log(1.0), states))
        tau = np.exp(rng.uniform(np.log(1.0), np.log(50.0), states))
        stay = np.exp(rng.uniform(np.log(50.0), np.log(2000.0), states))
        state, until, value = 0, rng.exponential(stay[0]), level[0]
        for k in range(n):
            if t[i, k] >= until:
                state = int((state + rng.integers(1, states)) % states)
                until = t[i, k] + rng.exponential(stay[state]) + 1.0
            gap = t[i, k] - t[i, k - 1] if k else 1.0
            a = np.exp(-gap / tau[state])
            noise = rng.standard_normal() * spread[state] * np.sqrt(1.0 - a * a)
            value = level[state] + a * (value - level[state]) + noise
            out[i, k] = value
    return out


# Weight ranges per family for each component, in the order of _COMPONENTS.
_COMPONENTS = ("drift", "periodic", "random_walk", "ar1", "noise", "wave", "duty", "regime")
_NONE = (0.0, 0.0)
_MIX: dict[str, tuple[tuple[float, float], ...]] = {
    "drift": ((1.0, 1.0), _NONE, _NONE, (0.0, 0.3), (0.05, 0.5), _NONE, _NONE, _NONE),
    "periodic": ((0.0, 0.3), (1.0, 1.0), _NONE, (0.0, 0.2), (0.02, 0.4), _NONE, _NONE, _NONE),
    "random_walk": (_NONE, _NONE, (1.0, 1.0), _NONE, (0.0, 0.3), _NONE, _NONE, _NONE),
    "ar1": ((0.0, 0.2), _NONE, _NONE, (1.0, 1.0), (0.0, 0.3), _NONE, _NONE, _NONE),
    "noise": (_NONE, _NONE, _NONE, _NONE, (1.0, 1.0), _NONE, _NONE, _NONE),
    "mixture": ((0.0, 1.0), (0.0, 1.0), (0.0, 0.5), (0.0, 1.0), (0.05, 0.6), _NONE, _NONE, _NONE),
    "wave": ((0.0, 0.3), _NONE, _NONE, (0.0, 0.2), (0.0, 0.3), (1.0, 1.0), _NONE, _NONE),
    "duty": ((0.0, 0.3), _NONE, _NONE, (0.0, 0.1), (0.02, 0.2), _NONE, (1.0, 1.0), _NONE),
    "regime": ((0.0, 0.3), _NONE, _NONE, _NONE, (0.0, 0.2), _NONE, _NONE, (1.0, 1.0)),
}


def make_batch(
    rng: np.random.Generator,
    b: int,
    n: int,
    families: tuple[str, ...] | None = None,
    t: np.ndarray | None = None,
) -> Batch:
    """``b`` independent series of ``n`` samples; families drawn uniformly unless given.

    ``t`` (``[b, n]``) reuses existing timestamps, e.g. for channels of one asset.
    """
    if families is None:
        families = tuple(rng.choice(FAMILIES, size=b))
    elif len(families) != b:
        raise ValueError("need one family per series")
    if t is None:
        t = sample_times(rng, b, n)
    elif t.shape != (b, n):
        raise ValueError(f"timestamps have shape {t.shape}, expected {(b, n)}")
    comps = _components(rng, t)
    x = np.zeros((b, n))
    for i, name in enumerate(_COMPONENTS):
        lo = np.array([_MIX[f][i][0] for f in families])[:, None]
        hi = np.array([_MIX[f][i][1] for f in families])[:, None]
        x += rng.uniform(lo, hi) * comps[name]
    scale = np.exp(rng.uniform(np.log(0.1), np.log(1000.0), (b, 1)))
    offset = rng.normal(0.0, 1.0, (b, 1)) * scale * rng.uniform(0.0, 100.0, (b, 1))
    x = offset + scale * x
    quantise = rng.random((b, 1)) < 0.2
    step = scale * rng.uniform(0.01, 0.2, (b, 1))
    x = np.where(quantise, np.round(x / step) * step, x)
    return Batch(t=t, x=x, families=tuple(str(f) for f in families))


def make_series(
    rng: np.random.Generator, n: int, family: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One series: timestamps (nominal sample units, starting at 0) and values."""
    batch = make_batch(rng, 1, n, None if family is None else (family,))
    return batch.t[0], batch.x[0]


class _Recorder:
    """The StepModel interface, recording what the engine feeds the model; it predicts the
    current input ("next = current"), which the recording never depends on."""

    runtime = "record"
    name = "record"
    sha256 = "0" * 64
    model_id = "record@00000000"
    hidden_size = 1
    features = 1
    card = None
    path = None

    def __init__(self) -> None:
        self.x: list[np.ndarray] = []
        self.dt: list[np.ndarray] = []

    def step(self, x: np.ndarray, h: np.ndarray, dt: np.ndarray) -> tuple[np.ndarray, ...]:
        self.x.append(x[:, 0].copy())
        self.dt.append(dt[:, 0].copy())
        return x.copy(), np.zeros_like(x), h


def model_arrays(t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training triples along the last axis, ``[b, n-1]`` float32: the model's input ``z_k``
    and ``dt_k`` (typical intervals) as the gateway's detector computes them for ``x`` sampled
    at ``t``, and the target ``z_{k+1}``, the input it is given next. Alerts are switched off
    (a fault would freeze the baseline), so this is the normal behaviour of each series."""
    from gateway.config import DetectorSection
    from gateway.detector import Detector
    from gateway.records import Reading

    t = np.atleast_2d(np.asarray(t, np.float64))
    x = np.atleast_2d(np.asarray(x, np.float64))
    b, n = x.shape
    recorder = _Recorder()
    quiet = DetectorSection(threshold=0.99, clear_threshold=0.99)
    detector = Detector(quiet, recorder)  # type: ignore[arg-type]
    names = [f"s{i}" for i in range(b)]
    for k in range(n):
        detector.process_ticks(
            [[Reading(names[i], float(t[i, k]), float(x[i, k]), "train") for i in range(b)]]
        )
    z = np.stack(recorder.x, axis=1)
    dt = np.stack(recorder.dt, axis=1)
    return z[:, :-1].astype(np.float32), dt[:, :-1].astype(np.float32), z[:, 1:].astype(np.float32)


def training_batches(seed: int, b: int, n: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Endless ``(z_in, dt, z_target)`` batches of shape ``[b, n-1]``, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    while True:
        batch = make_batch(rng, b, n)
        yield model_arrays(batch.t, batch.x)
