"""Three held-out corpora, unlike anything the detector was tuned on: a check that it works on
data nobody here has looked at, not only on the corpora we iterate with.

``nab_like`` mimics the Numenta Anomaly Benchmark (NAB): 2-4 weeks of univariate metrics,
mostly every 5 minutes (some every 30 or 60 minutes, some irregular with gaps of 15 min to
4 h), with daily and weekly seasonality:
- ``cpu`` (percent, bounded), ``requests`` (Poisson counts), ``latency`` (ms, heavy-tailed:
  rare slow requests are normal), ``machine_temp`` (a slowly wandering temperature), ``taxi``
  (half-hour passenger counts with a morning and an evening peak, quieter weekends);
- artificial series with no anomaly at all: a noiseless daily square wave, a daily pattern with
  1 % noise, a flat line, pure noise (any alert on them is a false alarm);
- 0-4 anomalies per real-like series: ``spike`` (1-3 readings), ``level_shift`` (2-5 sd, for
  1-3 days or to the end), ``daily_shape`` (one day flat or shifted by 6-12 h), ``failure``
  (a slow ramp over hours, then a drop to a low value for a few hours, like a machine failing);
- labelled like NAB: a window around each anomaly of 10 % of the file's duration divided by the
  number of anomalies, centred on the anomaly's start (the window, not the anomaly, is the fault).

``drift_like``: drifting industrial streams, 3-20 days at 10 s-10 min, 3,000-15,000 rows; about
70 % of the files have no fault, and their slow drifts are marked in ``expect_drift``:
- ``motor``: a duty-cycled motor current (on/off cycles of 20-120 min, 10-40 A running) whose
  running level rises 0.5-2 % a day (wear);
- ``outdoor``: outdoor temperature: a seasonal trend of 0.1-0.4 degC a day, a daily cycle of
  3-8 degC, weather fronts (an AR(1) of 0.5-2 days); no drift window when the trend is small;
- ``fouling``: a heat exchanger (outlet temperature, pressure drop) slowly losing efficiency;
- ``tank``: a tank level filling quickly and draining with the demand (no drift);
- faults, from 2-24 h to the end of the file: ``stuck`` (the reading freezes), ``step`` (an
  offset of 3-6 sd), ``variance`` (noise x3-6, like a failing bearing), ``duty_period`` (the
  on/off or fill/drain cycle period changes by x0.5 or x2; motor and tank only).

``plant_like``: a simulated chemical plant in the spirit of the Tennessee Eastman process
(TEP): one asset of 52 channels every 180 s for 48 h (960 rows): 22 continuous measurements
(``xmeas_01``-``xmeas_22``), 19 analyser compositions (``xmeas_23``-``xmeas_41``), sampled every
6 min and held between samples, and 11 manipulated variables (``xmv_01``-``xmv_11``), the
outputs of PI controllers that hold 11 of the measurements at their set points, so a
disturbance shows in the valves and in the uncontrolled measurements more than in the controlled
ones. Levels are TEP's nominal values. 21 fault types (TEP's IDV 1-21: steps in feed
composition and temperatures, random variation, a slow drift in reaction kinetics, sticking
valves, "unknown" combinations, a valve fixed in place), one per run, introduced between 10 h and
13 h and lasting to the end; ``train_rows`` = 192 (the first 9.6 h, 20 %). Each repetition is
the 21 faulty runs plus 1-2 fault-free runs; "full" has 10 repetitions with different magnitudes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tools.corpora.base import SIZES, T0, Series, labels_from_faults

DAY, HOUR, MINUTE = 86400.0, 3600.0, 60.0


def generate(seed: int = 0, size: str = "full") -> list[Series]:
    return nab_like(seed, size) + drift_like(seed, size) + plant_like(seed, size)


def _check(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")


def _train_rows(rows: int) -> int:
    return 1000 if rows >= 4000 else rows // 4


def _end(t: np.ndarray) -> float:
    """The end of the last row's interval: where a fault "to the end" stops."""
    return float(t[-1] + (np.median(np.diff(t)) if len(t) > 1 else 1.0))


# ---------------------------------------------------------------- nab_like

NAB_REAL = ("cpu", "requests", "latency", "machine_temp", "taxi")
NAB_ART = ("art_daily_square", "art_daily_noise", "art_flat", "art_noise")
NAB_ANOMALIES = ("spike", "level_shift", "daily_shape", "failure")
NAB_COUNTS = {"smoke": (1, 1), "quick": (2, 1), "full": (9, 3)}  # per real kind, per art kind


def nab_like(seed: int = 0, size: str = "full") -> list[Series]:
    _check(size)
    rng = np.random.default_rng([seed, 0x4AB])
    per_real, per_art = NAB_COUNTS[size]
    kinds = [k for k in NAB_REAL for _ in range(per_real)] + [
        k for k in NAB_ART for _ in range(per_art)
    ]
    if size == "smoke":
        kinds = ["cpu", "taxi", "latency", "art_daily_square"]
    return [_nab_series(rng, kind, i, size) for i, kind in enumerate(kinds)]


def _nab_times(
    rng: np.random.Generator, kind: str, index: int, size: str
) -> tuple[np.ndarray, str]:
    days = rng.uniform(3.0, 4.0) if size == "smoke" else rng.uniform(14.0, 28.0)
    if size == "smoke" and kind == "taxi":
        days = 17.0
    sampling = (
        "taxi"
        if kind == "taxi"
        else ("5min", "5min", "5min", "60min", "30min", "irregular")[index % 6]
    )
    if size == "smoke":  # short files: the cases the tests need, each at least ~800 rows
        sampling = {"latency": "irregular", "taxi": "30min"}.get(kind, "5min")
    if sampling == "taxi":
        sampling = "30min"
    step = {"5min": 5, "30min": 30, "60min": 60, "irregular": 5}[sampling] * MINUTE
    rows = int(days * DAY / step)
    if sampling != "irregular":
        return T0 + step * np.arange(rows, dtype=np.float64), sampling
    gaps = step * (1.0 + rng.uniform(-0.3, 0.3, rows))  # a poller that is never quite on time
    outages = rng.choice(rows, int(rng.integers(3, 9)), replace=False)
    gaps[outages] = rng.uniform(15.0, 240.0, len(outages)) * MINUTE
    gaps[0] = 0.0
    return T0 + np.cumsum(gaps), sampling


def _daily(t: np.ndarray, peak_hour: float = 14.0) -> np.ndarray:
    """A smooth working-day profile in [0, 1], highest at ``peak_hour``."""
    hours = np.mod((t - T0) / HOUR, 24.0)
    return 0.5 + 0.5 * np.cos(2 * np.pi * (hours - peak_hour) / 24.0)


def _weekly(t: np.ndarray, weekend: float) -> np.ndarray:
    day = np.floor((t - T0) / DAY).astype(int) % 7
    return np.where(day >= 5, weekend, 1.0)


def _ar1(rng: np.random.Generator, t: np.ndarray, tau: float, sd: float) -> np.ndarray:
    """A stationary AR(1) in continuous time: it wanders further across a gap."""
    a = np.exp(-np.diff(t, prepend=t[0]) / tau)
    shocks = rng.normal(0.0, sd, len(t)) * np.sqrt(1.0 - a**2)
    x = np.empty(len(t))
    x[0] = rng.normal(0.0, sd)
    for i in range(1, len(t)):
        x[i] = a[i] * x[i - 1] + shocks[i]
    return x


def _nab_base(
    rng: np.random.Generator, kind: str, t: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """The normal signal as a function of a "seasonal clock" (times, possibly shifted), so an
    anomaly can replay the same day with another shape; random parts are drawn once."""
    n = len(t)
    if kind == "cpu":
        base, amp, weekend = rng.uniform(15, 35), rng.uniform(10, 25), rng.uniform(0.5, 0.8)
        wander = _ar1(rng, t, 2 * HOUR, rng.uniform(2, 5)) + rng.normal(0, 1.5, n)
        return lambda c: np.clip(base + amp * _daily(c) * _weekly(c, weekend) + wander, 0, 100)
    if kind == "requests":
        rate, amp, weekend = rng.uniform(40, 400), rng.uniform(0.5, 1.5), rng.uniform(0.4, 0.8)
        draws = rng.normal(0, 1, n)
        return lambda c: _counts(rate * (1 + amp * _daily(c)) * _weekly(c, weekend), draws)
    if kind == "latency":
        base, load = rng.uniform(40, 200), rng.uniform(0.2, 0.6)
        tail = np.exp(rng.normal(0, 0.25, n)) * np.where(
            rng.random(n) < 0.01, rng.pareto(2.5, n) + 1, 1.0
        )  # rare slow requests are part of normal life
        return lambda c: base * (1 + load * _daily(c)) * tail
    if kind == "machine_temp":
        base = rng.uniform(75, 90)
        wander = _ar1(rng, t, 8 * HOUR, rng.uniform(1.5, 3)) + rng.normal(0, 0.4, n)
        return lambda c: base + 1.5 * _daily(c, 16.0) + wander
    if kind == "taxi":
        rate, weekend = rng.uniform(300, 900), rng.uniform(0.7, 0.9)
        draws = rng.normal(0, 1, n)
        return lambda c: _counts(rate * _taxi_profile(c) * _weekly(c, weekend), draws)
    if kind == "art_daily_square":
        low, high = rng.uniform(10, 30), rng.uniform(60, 90)
        return lambda c: np.where(np.mod((c - T0) / HOUR, 24.0) < 12.0, low, high)
    if kind == "art_daily_noise":
        low, amp = rng.uniform(10, 30), rng.uniform(20, 60)
        noise = rng.normal(0, 0.01 * amp, n)
        return lambda c: low + amp * _daily(c) + noise
    if kind == "art_flat":
        level = float(np.round(rng.uniform(10, 90)))
        return lambda c: np.full(len(c), level)
    level, sd = rng.uniform(10, 90), rng.uniform(1, 10)
    noise = rng.normal(level, sd, n)
    return lambda c: noise.copy()


def _counts(rate: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Poisson-like counts (the normal approximation, fine at these rates of 15 and more),
    from fixed draws, so a day replayed under another clock gets that clock's counts."""
    return np.maximum(np.round(rate + np.sqrt(rate) * draws), 0.0)


def _taxi_profile(t: np.ndarray) -> np.ndarray:
    hours = np.mod((t - T0) / HOUR, 24.0)
    morning = np.exp(-0.5 * ((hours - 8.5) / 1.5) ** 2)
    evening = np.exp(-0.5 * ((hours - 19.0) / 2.5) ** 2)
    return 0.15 + 0.6 * morning + 0.9 * evening


def _nab_series(rng: np.random.Generator, kind: str, index: int, size: str) -> Series:
    t, sampling = _nab_times(rng, kind, index, size)
    signal = _nab_base(rng, kind, t)
    x = signal(t)
    train_rows = _train_rows(len(t))
    count = 0 if kind.startswith("art_") else int(rng.choice([0, 1, 1, 2, 2, 3, 4]))
    if size == "smoke" and not kind.startswith("art_"):
        count = 2
    duration = _end(t) - t[0]
    window = 0.1 * duration / max(count, 1)
    earliest, latest = t[train_rows] + window / 2, _end(t) - window / 2
    slot = (latest - earliest) / max(count, 1)
    faults, kinds = [], []
    for k in range(count):
        start = earliest + slot * (k + rng.uniform(0.1, 0.6))
        anomaly = NAB_ANOMALIES[(index + k) % len(NAB_ANOMALIES)]
        x = _nab_anomaly(rng, anomaly, signal, t, x, start, window, kind)
        faults.append((float(start - window / 2), float(start + window / 2)))
        kinds.append(anomaly)
    return Series(
        name=f"nab-{kind.replace('_', '-')}-{index:02d}",
        corpus="nab_like",
        t=t,
        x=x[:, None],
        channels=["value"],
        labels=labels_from_faults(t, faults),
        faults=faults,
        train_rows=train_rows,
        tags={
            "kind": kind,
            "fault": ",".join(kinds) or "none",
            "anomalies": str(count),
            "sampling": sampling,
            "period": "1d",
            "channels": "1",
        },
    )


def _nab_anomaly(
    rng: np.random.Generator,
    anomaly: str,
    signal: Callable[[np.ndarray], np.ndarray],
    t: np.ndarray,
    x: np.ndarray,
    start: float,
    window: float,
    kind: str,
) -> np.ndarray:
    x = x.copy()
    first = int(np.searchsorted(t, start))
    sd = float(np.std(np.diff(x[: max(first, 10)]))) / np.sqrt(2) + 1e-3 * np.ptp(x) + 1e-9
    spread = float(np.std(x[:first])) + 1e-9
    if anomaly == "spike":
        width = int(rng.integers(1, 4))
        x[first : first + width] += rng.choice([-1, 1]) * rng.uniform(4, 8) * max(spread, sd)
    elif anomaly == "level_shift":
        lasting = rng.uniform(1, 3) * DAY if rng.random() < 0.5 else np.inf
        rows = (t >= start) & (t < start + lasting)
        x[rows] += rng.choice([-1, 1]) * rng.uniform(2, 5) * spread
    elif anomaly == "daily_shape":
        rows = (t >= start) & (t < start + DAY)
        if rng.random() < 0.5:  # the day runs at another hour: the same shape, shifted
            x[rows] = signal(t + rng.uniform(6, 12) * HOUR)[rows]
        else:  # the day never starts: it stays at its night level
            x[rows] = np.quantile(x[:first], 0.1)
    else:  # failure: a slow ramp, then the machine stops for a few hours, inside the window
        ramp = rng.uniform(0.3, 0.6) * window / 2
        stop = min(rng.uniform(2, 6) * HOUR, 0.9 * window / 2 - ramp)
        rising = (t >= start) & (t < start + ramp)
        x[rising] += 3 * spread * (t[rising] - start) / ramp
        down = (t >= start + ramp) & (t < start + ramp + stop)
        x[down] = np.quantile(x[:first], 0.01) - 2 * spread + rng.normal(0, sd, int(down.sum()))
    if kind in ("requests", "taxi"):
        x = np.maximum(np.round(x), 0.0)  # still counts
    elif kind == "cpu":
        x = np.clip(x, 0.0, 100.0)
    elif kind == "latency":
        x = np.maximum(x, 0.0)
    return x


# ---------------------------------------------------------------- drift_like

DRIFT_KINDS = ("motor", "outdoor", "fouling", "tank")
DRIFT_FAULTS = {
    "motor": ("stuck", "step", "variance", "duty_period"),
    "outdoor": ("stuck", "step", "variance"),
    "fouling": ("stuck", "step", "variance"),
    "tank": ("stuck", "step", "variance", "duty_period"),
}
DRIFT_FILES = {"smoke": 4, "quick": 10, "full": 40}
INTERVALS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def drift_like(seed: int = 0, size: str = "full") -> list[Series]:
    _check(size)
    rng = np.random.default_rng([seed, 0xD81F])
    files = []
    for i in range(DRIFT_FILES[size]):
        kind = DRIFT_KINDS[i % len(DRIFT_KINDS)]
        faulty = i % 10 in (3, 6, 9) if size != "smoke" else i in (0, 3)
        fault = str(rng.choice(DRIFT_FAULTS[kind])) if faulty else "none"
        if size == "smoke" and i == 0:
            fault = "duty_period"
        files.append(_drift_series(rng, kind, fault, i, size))
    return files


def _drift_times(rng: np.random.Generator, size: str) -> np.ndarray:
    if size == "smoke":
        return T0 + 120.0 * np.arange(3000, dtype=np.float64)  # ~4 days at 2 min
    days = rng.uniform(3.0, 20.0)
    fitting = [s for s in INTERVALS if 3000 <= days * DAY / s <= 15000]
    interval = float(rng.choice(fitting)) if fitting else 600.0
    rows = int(np.clip(days * DAY / interval, 3000, 15000))
    return T0 + interval * np.arange(rows, dtype=np.float64)


def _drift_series(rng: np.random.Generator, kind: str, fault: str, index: int, size: str) -> Series:
    t = _drift_times(rng, size)
    rows, train_rows = len(t), _train_rows(len(t))
    start = int(rng.integers(train_rows + rows // 10, int(rows * 0.75)))
    if fault == "none":
        start = rows
    lasting = rng.uniform(2, 24) * HOUR if rng.random() < 0.5 else np.inf
    stop = min(rows, int(np.searchsorted(t, t[min(start, rows - 1)] + lasting)))
    builder = {"motor": _motor, "outdoor": _outdoor, "fouling": _fouling, "tank": _tank}[kind]
    x, channels, drifts = builder(rng, t, start if fault == "duty_period" else rows)
    if fault in ("stuck", "step", "variance"):
        _sensor_fault(rng, fault, x, train_rows, start, stop)
    if fault == "duty_period":
        stop = rows  # the machine keeps its new rhythm
    faults = (
        [] if fault == "none" else [(float(t[start]), _end(t) if stop >= rows else float(t[stop]))]
    )
    return Series(
        name=f"drift-{kind}-{fault.replace('_', '-')}-{index:02d}",
        corpus="drift_like",
        t=t,
        x=x,
        channels=channels,
        labels=labels_from_faults(t, faults),
        faults=faults,
        train_rows=train_rows,
        expect_drift=[(float(t[0]), _end(t))] if drifts else [],
        tags={
            "kind": kind,
            "fault": fault,
            "interval": f"{int(t[1] - t[0])}s",
            "days": f"{(t[-1] - t[0]) / DAY:.0f}",
            "drift": "yes" if drifts else "no",
            "channels": str(len(channels)),
        },
    )


def _cycles(
    rng: np.random.Generator, t: np.ndarray, period: float, duty: float, change_at: int
) -> np.ndarray:
    """1 while a duty-cycled machine runs, 0 while it rests; cycles vary +-10 %, and from row
    ``change_at`` the period is x0.5 or x2 (a duty-period fault)."""
    factor = float(rng.choice([0.5, 2.0]))
    edges, now = [], float(t[0]) - rng.uniform(0, period)
    while now < t[-1]:
        length = period * (factor if change_at < len(t) and now >= t[change_at] else 1.0)
        length *= rng.uniform(0.9, 1.1)
        edges.append((now, now + duty * length))
        now += length
    starts, stops = np.array(edges).T
    cycle = np.searchsorted(starts, t, side="right") - 1
    return (t < stops[cycle]).astype(np.float64)


def _motor(
    rng: np.random.Generator, t: np.ndarray, change_at: int
) -> tuple[np.ndarray, list[str], bool]:
    period, duty = rng.uniform(20, 120) * MINUTE, rng.uniform(0.3, 0.7)
    running = rng.uniform(10, 40) * (1 + rng.uniform(0.005, 0.02) * (t - t[0]) / DAY)
    on = _cycles(rng, t, period, duty, change_at)
    x = on * running * (1 + rng.normal(0, 0.015, len(t))) + (1 - on) * rng.uniform(0.1, 0.5)
    return x[:, None], ["current"], True


def _outdoor(
    rng: np.random.Generator, t: np.ndarray, change_at: int
) -> tuple[np.ndarray, list[str], bool]:
    trend = rng.uniform(0.1, 0.4) * rng.choice([-1, 1])
    days = (t - t[0]) / DAY
    weather = _ar1(rng, t, rng.uniform(0.5, 2) * DAY, rng.uniform(2, 4))
    daily = rng.uniform(3, 8) * np.cos(2 * np.pi * (np.mod((t - T0) / HOUR, 24) - 15) / 24)
    x = rng.uniform(-5, 25) + trend * days + daily + weather + rng.normal(0, 0.1, len(t))
    return np.round(x, 1)[:, None], ["outdoor_temp"], abs(trend) * days[-1] > 1.0


def _fouling(
    rng: np.random.Generator, t: np.ndarray, change_at: int
) -> tuple[np.ndarray, list[str], bool]:
    days = (t - t[0]) / DAY
    loss = rng.uniform(0.1, 0.3) * (1 - np.exp(-days / rng.uniform(5, 30)))  # efficiency lost
    load = 0.5 + 0.3 * _daily(t) + _ar1(rng, t, 3 * HOUR, 0.05)
    inlet, cold = rng.uniform(70, 90), rng.uniform(15, 25)
    outlet = inlet - (inlet - cold) * (0.7 - loss) * (1 - 0.2 * load) + rng.normal(0, 0.15, len(t))
    dp = rng.uniform(20, 40) * load**1.8 * (1 + 2 * loss) + rng.normal(0, 0.3, len(t))
    return np.column_stack([outlet, dp]), ["outlet_temp", "dp_kpa"], True


def _tank(
    rng: np.random.Generator, t: np.ndarray, change_at: int
) -> tuple[np.ndarray, list[str], bool]:
    low, high = rng.uniform(20, 30), rng.uniform(75, 90)
    fill = rng.uniform(2, 6) / HOUR * 100 / 3  # % per second while the pump runs
    # Demand stays below half the pump's rate, so even a pump at half speed keeps up.
    demand = rng.uniform(0.15, 0.3) * fill * (0.6 + 0.8 * _daily(t, 10.0))
    slow = float(rng.choice([0.5, 2.0]))  # a duty-period fault: the pump's rate changes
    level, filling = rng.uniform(low, high), False
    x = np.empty(len(t))
    dt = np.diff(t, prepend=t[0])
    for i in range(len(t)):
        rate = fill * (slow if i >= change_at else 1.0)
        filling = level < low or (filling and level < high)
        level = min(max(level + dt[i] * ((rate if filling else 0.0) - demand[i]), 0.0), 100.0)
        x[i] = level
    return (x + rng.normal(0, 0.2, len(t)))[:, None], ["level_pct"], False


def _sensor_fault(
    rng: np.random.Generator, fault: str, x: np.ndarray, train_rows: int, start: int, stop: int
) -> None:
    channel = int(rng.integers(x.shape[1]))
    column = x[:, channel]
    rows = slice(start, stop)
    if fault == "stuck":
        column[rows] = column[start - 1]
        return
    # The noise sd from the median quick change, so a cycling signal's edges do not count.
    changes = np.abs(np.diff(column[:train_rows]))
    sd = max(float(np.median(changes)) * 1.4826 / np.sqrt(2), 0.002 * float(np.ptp(column)))
    if fault == "step":
        column[rows] += rng.choice([-1, 1]) * rng.uniform(3, 6) * sd
    else:  # a bearing wears on: the noise grows from x1 to x3-6 of what it was
        grow = np.linspace(1.0, rng.uniform(3, 6), stop - start)
        column[rows] += rng.normal(0, 1, stop - start) * sd * np.sqrt(grow**2 - 1)


# ---------------------------------------------------------------- plant_like

PLANT_STEP, PLANT_ROWS, PLANT_TRAIN = 180.0, 960, 192
XMEAS_NOMINAL = (
    0.25052, 3664.0, 4509.3, 9.3477, 26.902, 42.339, 2705.0, 75.0, 120.40, 0.33712, 80.109,
    50.0, 2633.7, 25.160, 50.0, 3102.2, 22.949, 65.731, 230.31, 341.43, 94.599, 77.297,
    32.188, 8.8933, 26.383, 6.8820, 18.776, 1.6567, 32.958, 13.823, 23.978, 1.2565, 18.579,
    2.2633, 4.8436, 2.2986, 0.01787, 0.83570, 0.09858, 53.724, 43.828,
)  # fmt: skip
XMV_NOMINAL = (
    63.053,
    53.980,
    24.644,
    61.302,
    22.210,
    40.064,
    38.100,
    46.534,
    47.446,
    41.106,
    18.114,
)
# xmv_i holds this xmeas (0-based) at its set point, as in TEP's base control structure
LOOPS = (1, 2, 0, 3, 4, 9, 11, 14, 18, 8, 10)
# disturbances: 0 A/C ratio, 1 B composition, 2 D feed temp, 3 reactor cooling water inlet temp,
# 4 condenser cooling water inlet temp, 5 A feed availability, 6 C header pressure,
# 7 C feed temp, 8 reaction kinetics, 9 an unmeasured factor
DISTURBANCES = 10
PLANT_FAULTS = {
    1: ("step", (0,)), 2: ("step", (1,)), 3: ("step", (2,)), 4: ("step", (3,)),
    5: ("step", (4,)), 6: ("step", (5,)), 7: ("step", (6,)), 8: ("random", (0, 1, 5)),
    9: ("random", (2,)), 10: ("random", (7,)), 11: ("random", (3,)), 12: ("random", (4,)),
    13: ("drift", (8,)), 14: ("sticky", (9,)), 15: ("sticky", (10,)), 16: ("random", (9, 7)),
    17: ("step", (9, 3)), 18: ("drift", (9,)), 19: ("sticky", (4, 6, 9)), 20: ("random", (9, 8)),
    21: ("fixed", (3,)),
}  # fmt: skip  # IDV number: (what changes, disturbances or valves it changes)
PLANT_REPEATS = {"smoke": 1, "quick": 2, "full": 10}


def plant_like(seed: int = 0, size: str = "full") -> list[Series]:
    _check(size)
    rng = np.random.default_rng([seed, 0x7E9])
    structure = _plant_structure(np.random.default_rng([seed, 0x7E9, 1]))
    runs: list[tuple[int, int]] = []
    for rep in range(PLANT_REPEATS[size]):
        faults = (1, 14) if size == "smoke" else tuple(PLANT_FAULTS)
        normal = 1 if size == "smoke" or rep % 2 else 2
        runs += [(idv, rep) for idv in faults] + [(0, rep * 10 + j) for j in range(normal)]
    return [_plant_run(rng, structure, idv, rep) for idv, rep in runs]


def _plant_structure(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One plant: how disturbances, loops and valves feed the 52 channels (fixed per seed)."""
    loop_gain = rng.uniform(0.5, 1.5, 11)
    loop_a = np.exp(-PLANT_STEP / (rng.uniform(6, 40, 11) * MINUTE))
    d_to_loop = rng.normal(0, 0.6, (11, DISTURBANCES)) * (rng.random((11, DISTURBANCES)) < 0.35)
    free = [i for i in range(22) if i not in LOOPS]
    p_mix = rng.normal(0, 0.5, (len(free), 11))
    v_mix = rng.normal(0, 0.6, (len(free), 11)) * (rng.random((len(free), 11)) < 0.4)
    d_mix = rng.normal(0, 0.6, (len(free), DISTURBANCES)) * (rng.random((len(free), 10)) < 0.4)
    free_a = np.exp(-PLANT_STEP / (rng.uniform(5, 60, len(free)) * MINUTE))
    c_mix = rng.normal(0, 0.7, (19, DISTURBANCES)) * (rng.random((19, DISTURBANCES)) < 0.5)
    c_mix[:, :2] += rng.normal(0, 0.8, (19, 2))  # compositions follow the feed composition
    cv_mix = rng.normal(0, 0.4, (19, 11)) * (rng.random((19, 11)) < 0.3)
    c_a = np.exp(-PLANT_STEP / (rng.uniform(30, 120, 19) * MINUTE))
    rel_sd = np.r_[rng.uniform(0.005, 0.02, 22), rng.uniform(0.01, 0.03, 19)]
    noise = np.r_[rng.uniform(0.1, 0.3, 22), rng.uniform(0.1, 0.3, 19), np.full(11, 0.02)]
    return {
        "loop_gain": loop_gain, "loop_a": loop_a, "d_to_loop": d_to_loop, "free": np.array(free),
        "p_mix": p_mix, "v_mix": v_mix, "d_mix": d_mix, "free_a": free_a, "c_mix": c_mix,
        "cv_mix": cv_mix, "c_a": c_a, "rel_sd": rel_sd, "noise": noise,
    }  # fmt: skip


def _disturbances(rng: np.random.Generator, idv: int, start: int, magnitude: float) -> np.ndarray:
    """Slow random disturbances (unit sd, 1-4 h), with the fault's change from ``start``."""
    tau = rng.uniform(1, 4, DISTURBANCES) * HOUR
    a = np.exp(-PLANT_STEP / tau)
    d = np.zeros((PLANT_ROWS, DISTURBANCES))
    shocks = rng.normal(0, 1, (PLANT_ROWS, DISTURBANCES)) * np.sqrt(1 - a**2) * 0.5
    wild = np.ones(DISTURBANCES)  # random-variation faults: larger shocks after the start
    kind, targets = PLANT_FAULTS.get(idv, ("none", ()))
    for i in range(1, PLANT_ROWS):
        if i == start and kind == "random":
            wild[list(targets)] = 2 + 2 * magnitude
        d[i] = a * d[i - 1] + shocks[i] * wild
    after = np.arange(PLANT_ROWS) >= start
    for target in targets:
        sign = rng.choice([-1, 1])
        if kind == "step":
            d[after, target] += sign * (1.5 + 1.5 * magnitude)
        elif kind == "drift":  # reaction kinetics creep away: a ramp plus a slow walk
            hours = np.maximum(np.arange(PLANT_ROWS) - start, 0) * PLANT_STEP / HOUR
            d[:, target] += sign * (0.08 + 0.08 * magnitude) * hours
    return d


def _plant_run(rng: np.random.Generator, s: dict[str, np.ndarray], idv: int, rep: int) -> Series:
    magnitude = rng.uniform(0.5, 1.5)
    start = int(rng.integers(200, 261)) if idv else PLANT_ROWS
    d = _disturbances(rng, idv, start, magnitude)
    kind, targets = PLANT_FAULTS.get(idv, ("none", ()))
    loops, valves, free, comps = _simulate(rng, s, d, kind, targets, start, magnitude)

    deviation = np.zeros((PLANT_ROWS, 41))
    deviation[:, list(LOOPS)] = loops
    deviation[:, s["free"]] = free
    deviation[:, 22:] = comps
    nominal = np.array(XMEAS_NOMINAL)
    scale = nominal * s["rel_sd"]
    meas = nominal + scale * (deviation + rng.normal(0, 1, deviation.shape) * s["noise"][:41])
    analysers = meas[:, 22:]
    held = np.arange(PLANT_ROWS) - np.arange(PLANT_ROWS) % 2  # a sample every 6 min, held
    meas[:, 22:] = analysers[held]
    xmv = np.array(XMV_NOMINAL) * (1 + 0.02 * valves) + rng.normal(0, 0.02, valves.shape)
    x = np.column_stack([meas, np.clip(xmv, 0.0, 100.0)])
    t = T0 + PLANT_STEP * np.arange(PLANT_ROWS, dtype=np.float64)
    faults = [(float(t[start]), _end(t))] if idv else []
    channels = [f"xmeas_{i + 1:02d}" for i in range(41)] + [f"xmv_{i + 1:02d}" for i in range(11)]
    name = f"tep-idv{idv:02d}-r{rep:02d}" if idv else f"tep-normal-r{rep:02d}"
    return Series(
        name=name,
        corpus="plant_like",
        t=t,
        x=x,
        channels=channels,
        labels=labels_from_faults(t, faults),
        faults=faults,
        train_rows=PLANT_TRAIN,
        tags={
            "kind": kind,
            "fault": f"idv{idv:02d}" if idv else "none",
            "magnitude": f"{magnitude:.2f}" if idv else "0",
            "channels": "52",
        },
    )


def _simulate(
    rng: np.random.Generator,
    s: dict[str, np.ndarray],
    d: np.ndarray,
    kind: str,
    targets: tuple[int, ...],
    start: int,
    magnitude: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The closed loop, one 3-minute step at a time: PI controllers move the valves to hold
    the controlled measurements at zero deviation; the rest follow lagged."""
    n, kp, ki = PLANT_ROWS, 0.6, 0.25
    pv, command, valve = np.zeros(11), np.zeros(11), np.zeros(11)
    free_state, comp_state = np.zeros(len(s["free"])), np.zeros(19)
    out_pv, out_valve = np.zeros((n, 11)), np.zeros((n, 11))
    out_free, out_comp = np.zeros((n, len(s["free"]))), np.zeros((n, 19))
    error_before = np.zeros(11)
    band = 0.3 + 0.4 * magnitude  # stiction: a sticky valve moves only past this much
    for i in range(n):
        drive = s["loop_gain"] * valve + s["d_to_loop"] @ d[i]
        pv = s["loop_a"] * pv + (1 - s["loop_a"]) * drive + rng.normal(0, 0.05, 11)
        error = -pv
        command = command + kp * (error - error_before) + ki * error / s["loop_gain"]
        error_before = error
        if i >= start and kind == "sticky":
            stuck = list(targets)
            moved = np.abs(command[stuck] - valve[stuck]) > band
            valve[stuck] = np.where(moved, command[stuck], valve[stuck])
            free_valves = [j for j in range(11) if j not in targets]
            valve[free_valves] = command[free_valves]
        elif not (i >= start and kind == "fixed"):
            valve = command.copy()
        else:
            fixed = list(targets)  # the valve stays where it was; its loop loses control
            keep = valve[fixed].copy()
            valve = command.copy()
            valve[fixed] = keep
        free_drive = s["p_mix"] @ pv + s["v_mix"] @ valve + s["d_mix"] @ d[i]
        free_state = s["free_a"] * free_state + (1 - s["free_a"]) * free_drive
        comp_drive = s["c_mix"] @ d[i] + s["cv_mix"] @ valve
        comp_state = s["c_a"] * comp_state + (1 - s["c_a"]) * comp_drive
        out_pv[i], out_valve[i], out_free[i], out_comp[i] = pv, valve, free_state, comp_state
    return out_pv, out_valve, out_free, out_comp
