"""Synthetic univariate sensor signals for training and testing the default CfC model.

The shipped model has to work zero-config on any univariate stream, so it is trained on a broad
mix of "normal" behaviour rather than on one site's data: slowly drifting baselines, periodic
signals with harmonics, random walks, AR(1)/Ornstein-Uhlenbeck processes, plain noise and
mixtures of these, at arbitrary offset and scale, optionally quantised like an ADC, and sampled
irregularly (jitter plus occasional gaps). Processes are defined in continuous time and evaluated
at the sample times, so a gap really lets a random walk wander further.

The module also holds the causal normaliser the training uses (``causal_normalise``); it is the
reference for what the gateway feeds the model at run time. numpy only, deterministic given the
``numpy.random.Generator`` passed in, importable by the gateway's tests and by ``tools/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

FAMILIES: tuple[str, ...] = ("drift", "periodic", "random_walk", "ar1", "noise", "mixture")

# Normalisation recipe (shared with the model card and the gateway's detector).
HALFLIFE = 300.0  # samples (nominal units); alpha = 1 - 2**(-dt / HALFLIFE)
WARMUP = 50  # samples normalised with the cumulative mean/std before the EW phase
SCALE_FLOOR = 1e-3
Z_CLIP = 8.0


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
    return {"drift": drift, "periodic": periodic, "random_walk": walk, "ar1": ar1, "noise": noise}


# Weight ranges per family for (drift, periodic, random_walk, ar1, noise).
_MIX: dict[str, tuple[tuple[float, float], ...]] = {
    "drift": ((1.0, 1.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.3), (0.05, 0.5)),
    "periodic": ((0.0, 0.3), (1.0, 1.0), (0.0, 0.0), (0.0, 0.2), (0.02, 0.4)),
    "random_walk": ((0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (0.0, 0.0), (0.0, 0.3)),
    "ar1": ((0.0, 0.2), (0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (0.0, 0.3)),
    "noise": ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (1.0, 1.0)),
    "mixture": ((0.0, 1.0), (0.0, 1.0), (0.0, 0.5), (0.0, 1.0), (0.05, 0.6)),
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
    for i, name in enumerate(("drift", "periodic", "random_walk", "ar1", "noise")):
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


def causal_normalise(
    t: np.ndarray,
    x: np.ndarray,
    halflife: float = HALFLIFE,
    warmup: int = WARMUP,
    floor: float = SCALE_FLOOR,
    clip: float = Z_CLIP,
) -> np.ndarray:
    """``z_k = (x_k - m_{k-1}) / s_{k-1}`` along the last axis, ``z_0 = 0``.

    ``m``/``s`` are the cumulative mean/std for the first ``warmup`` samples, then an
    exponentially weighted mean/std with a time-based ``alpha = 1 - 2**(-dt/halflife)``, seeded
    by the cumulative values. ``s`` is floored at ``floor`` and ``z`` clipped to ``[-clip, clip]``.
    """
    t = np.asarray(t, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    z = np.zeros_like(x)
    m = x[..., 0].copy()
    v = np.zeros_like(m)
    for k in range(1, n):
        s = np.maximum(np.sqrt(v), floor)
        z[..., k] = (x[..., k] - m) / s
        if k < warmup:
            alpha = np.full_like(m, 1.0 / (k + 1))
        else:
            alpha = 1.0 - np.exp2(-(t[..., k] - t[..., k - 1]) / halflife)
        d = x[..., k] - m
        m = m + alpha * d
        v = (1.0 - alpha) * (v + alpha * d * d)
    return np.clip(z, -clip, clip)


def model_arrays(t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training triples along the last axis: input ``z_k``, ``dt_k`` and target ``z_{k+1}``.

    ``dt_k = t_k - t_{k-1}`` in nominal sample units (``dt_0 = 1``). Float32, length ``n - 1``.
    """
    z = causal_normalise(t, x)
    dt = np.diff(t, axis=-1, prepend=t[..., :1] - 1.0)
    return (
        z[..., :-1].astype(np.float32),
        dt[..., :-1].astype(np.float32),
        z[..., 1:].astype(np.float32),
    )


def training_batches(seed: int, b: int, n: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Endless ``(z_in, dt, z_target)`` batches of shape ``[b, n-1]``, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    while True:
        batch = make_batch(rng, b, n)
        yield model_arrays(batch.t, batch.x)
