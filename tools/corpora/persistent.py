"""Multichannel assets whose faults persist to the end of the file, among load changes that are
not faults: does the detector tell a plant that changes its load from a sensor or a process
that has gone wrong, and does it keep saying so while the fault lasts?

In a real asset (a pump skid, a compressor train, a boiler) most channels move together
because they follow a few shared causes: the throughput, the ambient temperature, the fuel
quality. When the operator raises the load, temperatures, pressures, flows and currents all
move at once: that is normal. A fault is different: one sensor steps or creeps away from the
others, or a few channels stop following the shared causes at all while each still looks
normal on its own. Such faults rarely heal by themselves, so here they last to the end.

What is generated, per file (one asset):
- 4-60 channels (several files with 52, like a Tennessee Eastman plant), 3,000-10,000 rows at
  1 s; ``train_rows`` = 1,000 (25 % of files shorter than 4,000 rows);
- 1-4 latent "load" factors: slow Ornstein-Uhlenbeck processes (time constants 300-3,000 s),
  plus 1-4 load changes (steps or ramps over 1-15 min, 2.5-4 latent sd) that move the first
  latent, the asset's throughput, and sometimes others; every channel follows the throughput;
- channels = mixing matrix x latents, through a first-order lag (1-60 s), in engineering units
  (temperatures ~60, pressures ~3, flows ~100, currents ~20, speeds ~1,500, vibration ~2),
  with white noise of 5-30 % of the channel's scale; about a fifth of the channels are
  quantised like a coarse transmitter (a step of 0.2-1 channel sd);
- a fault (``tags["fault"]``), starting after ``train_rows`` + 500 rows and lasting to the end:
  ``step``: 1-3 channels offset by 2-5 of their own sd (the sd of their normal fluctuation,
  load changes excluded);
  ``drift_rate``: 1-3 channels ramp linearly from the start, reaching 3-8 sd at the end;
  ``relation``: 2-4 channels stop following the latents: each answers the throughput the
  wrong way round (its mixing changes) or follows a quicker process of its own (20-120 s), rescaled to its own pre-fault mean and sd and kept inside its pre-fault range,
  so each looks normal on its own;
  ``none``: no fault (load changes only), about a fifth of the files;
- about half of the faulty files also get a load change after the fault began
  (``tags["load_after_fault"]``); ``tags["load_rows"]`` lists the rows where load changes start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.corpora.base import SIZES, T0, Series, labels_from_faults

CORPUS = "persistent"
FAULTS = ("none", "step", "drift_rate", "relation")
# unit family: (typical level, typical scale = 1 latent sd of movement)
UNITS = {
    "temp": (60.0, 4.0),
    "pressure": (3.0, 0.25),
    "flow": (100.0, 8.0),
    "current": (20.0, 1.5),
    "speed": (1500.0, 40.0),
    "vibration": (2.0, 0.3),
}
CHANNEL_COUNTS = (4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 52, 60)
FILES_PER_SIZE = {"smoke": 4, "quick": 12, "full": 50}


@dataclass(frozen=True)
class Asset:
    """The normal behaviour of one asset, before any fault."""

    latents: np.ndarray  # (rows, k), standardised
    clean: np.ndarray  # (rows, channels) in engineering units, quantised where applicable
    channels: list[str]
    mixing: np.ndarray  # (channels, k)
    lags: np.ndarray  # (channels,) seconds
    noise: np.ndarray  # (channels,) sd in engineering units
    scale: np.ndarray  # (channels,)
    step: np.ndarray  # (channels,) quantisation step, 0 = continuous
    sd: np.ndarray  # (channels,) sd of the normal fluctuation, load changes excluded
    load_rows: list[int]
    latent_tau: np.ndarray  # (k,) seconds


def generate(seed: int = 0, size: str = "full") -> list[Series]:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    rng = np.random.default_rng([seed, 0x9E72])
    return [_file(rng, i, size) for i in range(FILES_PER_SIZE[size])]


def _file(rng: np.random.Generator, index: int, size: str) -> Series:
    fault = FAULTS[1 + index % 3] if index % 5 else "none"  # a fifth of the files: no fault
    if size == "smoke":
        fault = FAULTS[index % len(FAULTS)]
        rows, width = 3000, (5, 8, 52, 6)[index % 4]
    else:
        rows = int(rng.integers(3000, 10001))
        width = 52 if index % 6 == 2 else int(rng.choice(CHANNEL_COUNTS))
    train_rows = 1000 if rows >= 4000 else rows // 4
    start = int(rng.integers(train_rows + 500, int(rows * 0.7)))
    want_load_after = fault != "none" and (size == "smoke" or rng.random() < 0.5)
    asset = _asset(rng, rows, width, train_rows, start if want_load_after else None)
    load_after = fault != "none" and any(r >= start for r in asset.load_rows)
    x = asset.clean.copy()
    affected: list[int] = []
    if fault == "step":
        affected = _apply_step(rng, asset, x, train_rows, start)
    elif fault == "drift_rate":
        affected = _apply_drift(rng, asset, x, train_rows, start)
    elif fault == "relation":
        affected = _apply_relation(rng, asset, x, start)

    t = T0 + np.arange(rows, dtype=np.float64)
    faults = [] if fault == "none" else [(float(t[start]), float(t[-1]) + 1.0)]
    return Series(
        name=f"asset{index:02d}-{fault.replace('_', '-')}-{width}ch",
        corpus=CORPUS,
        t=t,
        x=x,
        channels=asset.channels,
        labels=labels_from_faults(t, faults),
        faults=faults,
        train_rows=train_rows,
        tags={
            "kind": f"{asset.latents.shape[1]}_latents",
            "fault": fault,
            "channels": ",".join(asset.channels[c] for c in affected) or "none",
            "width": str(width),
            "load_rows": ",".join(str(r) for r in asset.load_rows),
            "load_after_fault": "yes" if load_after else "no",
        },
    )


def _asset(
    rng: np.random.Generator, rows: int, width: int, train_rows: int, load_after: int | None
) -> Asset:
    k = int(rng.integers(1, 5))
    tau = np.exp(rng.uniform(np.log(300.0), np.log(3000.0), k))
    load, load_rows = _load_path(rng, rows, k, train_rows, load_after)
    latents = ou(rng, rows, tau) + load

    # Every channel follows the throughput (latent 0); some follow a secondary cause as well.
    mixing = np.zeros((width, k))
    mixing[:, 0] = rng.uniform(0.5, 1.0, width) * rng.choice([-1.0, 1.0], width)
    if k > 1:
        secondary = rng.integers(1, k, width)
        mixing[np.arange(width), secondary] += rng.uniform(0.4, 1.0, width)
    families = rng.choice(list(UNITS), width)
    level = np.array([UNITS[f][0] for f in families]) * rng.uniform(0.8, 1.2, width)
    scale = np.array([UNITS[f][1] for f in families]) * rng.uniform(0.5, 1.5, width)
    lags = np.exp(rng.uniform(np.log(1.0), np.log(60.0), width))
    noise = scale * rng.uniform(0.05, 0.3, width)
    process = first_order_lag(latents @ mixing.T, lags)
    clean = level + scale * process + rng.normal(0.0, 1.0, (rows, width)) * noise

    # The sd a fault is measured in: what the channel does from minute to minute, not the
    # size of an operator's load change (unit-variance latents; the lags barely smooth them).
    sd = np.hypot(scale * np.linalg.norm(mixing, axis=1), noise)
    coarse = rng.random(width) < 0.2
    step = np.zeros(width)
    step[coarse] = _round_step(sd[coarse] * rng.uniform(0.2, 1.0, int(coarse.sum())))
    clean = quantise(clean, step)
    names = [f"{family}_{c:02d}" for c, family in enumerate(families)]
    return Asset(latents, clean, names, mixing, lags, noise, scale, step, sd, load_rows, tau)


def ou(rng: np.random.Generator, rows: int, tau: np.ndarray, dt: float = 1.0) -> np.ndarray:
    """Unit-variance Ornstein-Uhlenbeck processes with time constants ``tau`` (seconds)."""
    a = np.exp(-dt / tau)
    shocks = rng.normal(0.0, 1.0, (rows, len(tau))) * np.sqrt(1.0 - a**2)
    z = np.empty((rows, len(tau)))
    z[0] = rng.normal(0.0, 1.0, len(tau))
    for i in range(1, rows):
        z[i] = a * z[i - 1] + shocks[i]
    return z


def first_order_lag(u: np.ndarray, tau: np.ndarray, dt: float = 1.0) -> np.ndarray:
    """A first-order lag per column (a sensor or a vessel smoothing what drives it)."""
    alpha = 1.0 - np.exp(-dt / tau)
    y = np.empty_like(u)
    y[0] = u[0]
    for i in range(1, len(u)):
        y[i] = y[i - 1] + alpha * (u[i] - y[i - 1])
    return y


def quantise(x: np.ndarray, step: np.ndarray) -> np.ndarray:
    safe = np.where(step > 0, step, 1.0)
    return np.where(step > 0, np.round(x / safe) * safe, x)


def _round_step(step: np.ndarray) -> np.ndarray:
    """Transmitter resolutions are round numbers: 0.01, 0.02, 0.05, 0.1, ..."""
    exponent = np.floor(np.log10(step))
    mantissa = step / 10.0**exponent
    nice = np.where(mantissa < 1.5, 1.0, np.where(mantissa < 3.5, 2.0, 5.0))
    return nice * 10.0**exponent


def _load_path(
    rng: np.random.Generator, rows: int, k: int, train_rows: int, after: int | None
) -> tuple[np.ndarray, list[int]]:
    """Operator load changes: steps or ramps, always in the throughput, sometimes in others."""
    count = int(rng.integers(1, 5))
    candidates = sorted(int(s) for s in rng.integers(200, rows - 600, count))
    if after is not None and not any(s > after + 200 for s in candidates):
        candidates.append(int(rng.integers(after + 200, max(after + 201, rows - 600))))
    starts: list[int] = []
    for start in candidates:  # a load change settles (ramp <= 900 s) before the next one
        if not starts or start - starts[-1] >= 1200:
            starts.append(start)
        elif start > (after or rows):
            starts[-1] = start  # keep the change that comes after the fault began
    path = np.zeros((rows, k))
    level = np.zeros(k)
    for start in starts:
        moved = np.r_[True, rng.random(k - 1) < 0.4]
        target = level.copy()
        # A new load moves away from the current one, not further out without bound.
        direction = -np.sign(level) + (level == 0) * rng.choice([-1.0, 1.0], k)
        target[moved] = level[moved] + direction[moved] * rng.uniform(2.5, 4.0, int(moved.sum()))
        ramp = 1 if rng.random() < 0.5 else int(rng.integers(60, 900))
        weights = np.clip((np.arange(rows - start) + 1) / ramp, 0.0, 1.0)[:, None]
        path[start:] = level + (target - level) * weights
        level = target
    return path, starts


def _pick(rng: np.random.Generator, width: int, low: int, high: int) -> list[int]:
    count = min(int(rng.integers(low, high + 1)), width - 1)
    return sorted(int(c) for c in rng.choice(width, count, replace=False))


def _apply_step(
    rng: np.random.Generator, asset: Asset, x: np.ndarray, train_rows: int, start: int
) -> list[int]:
    chosen = _pick(rng, x.shape[1], 1, 3)
    sd = asset.sd
    for c in chosen:
        offset = rng.uniform(2.0, 5.0) * rng.choice([-1.0, 1.0]) * sd[c]
        x[start:, c] = quantise(asset.clean[start:, c] + offset, asset.step[c : c + 1])
    return chosen


def _apply_drift(
    rng: np.random.Generator, asset: Asset, x: np.ndarray, train_rows: int, start: int
) -> list[int]:
    chosen = _pick(rng, x.shape[1], 1, 3)
    sd = asset.sd
    rows = len(x)
    ramp = np.arange(rows - start) / (rows - start)
    for c in chosen:
        final = rng.uniform(3.0, 8.0) * rng.choice([-1.0, 1.0]) * sd[c]
        x[start:, c] = quantise(asset.clean[start:, c] + final * ramp, asset.step[c : c + 1])
    return chosen


def _apply_relation(rng: np.random.Generator, asset: Asset, x: np.ndarray, start: int) -> list[int]:
    """Channels that stop following the latents but keep their own mean, sd and range."""
    chosen = _pick(rng, x.shape[1], 2, 4)
    rows, k = asset.latents.shape
    for c in chosen:
        mixing = asset.mixing[c].copy()
        # Not "another latent": load changes move the latents together, so a channel that
        # switched latents would still move with the others at every load change.
        if rng.random() < 0.5:  # it answers the throughput the wrong way round
            mixing[0] = -mixing[0]
            mixing[1:] = 0.0
            driver = asset.latents @ mixing
        else:  # a process of its own, quick enough not to look like the slow latents
            driver = ou(rng, rows, np.array([rng.uniform(20.0, 120.0)]))[:, 0]
        lagged = first_order_lag(driver[:, None], asset.lags[c : c + 1])[:, 0]
        signal = lagged + rng.normal(0.0, 1.0, rows) * asset.noise[c] / asset.scale[c]
        x[start:, c] = _like_before(signal[start:], asset.clean[:start, c], asset.step[c])
    return chosen


def _like_before(signal: np.ndarray, before: np.ndarray, step: float) -> np.ndarray:
    """``signal`` rescaled to the mean and sd of ``before``, softly kept inside its range."""
    z = (signal - signal.mean()) / max(float(signal.std()), 1e-12)
    value = before.mean() + before.std() * z
    low, high = float(before.min()), float(before.max())
    margin = 0.05 * (high - low) + step
    mid, half = (low + high) / 2.0, (high - low) / 2.0 - margin
    inside = mid + half * np.tanh((value - mid) / half)
    return quantise(inside, np.array([step]))
