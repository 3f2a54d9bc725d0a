"""Series from GutenTAG, the TimeEval group's anomaly generator (``pip install
timeeval-gutentag``): an outside view of what an anomaly is, so our benchmark is not only our
own idea of a fault.

GutenTAG builds a series from base oscillations and injects labelled anomalies into them. This
module writes one GutenTAG configuration (a Python dict, nothing on disk) that covers every base
oscillation with every anomaly kind GutenTAG allows on it (its own compatibility table, 85
pairs), lets GutenTAG generate the values and labels, and turns the result into ``Series``.

What is generated:
- base oscillations: ``sine``, ``cosine``, ``square`` (duty 0.2-0.8), ``sawtooth`` (width
  0.1-1), ``dirichlet`` (odd periodicity 3-7), ``ecg`` (48-120 beats a minute at 100 readings a
  second), ``mls`` (a smoothed maximum-length sequence, period 31-511), ``cylinder-bell-funnel``
  (random patterns of 40-200 readings), ``random-walk``, ``polynomial`` (a slow curve),
  ``formula`` (a channel computed from the others, e.g. their sum) and ``random-mode-jump``
  (channels jumping between two modes together);
- periods of 20-400 readings (log-uniform), amplitudes 0.5-5, offsets -10..10, noise of 0, 1,
  5 or 10 % of the amplitude; 4,000-16,000 readings at 1 s (the benchmark re-times them);
- univariate, or (about half, and always for ``formula`` and ``random-mode-jump``) 2-8 channels
  of the same oscillation with different parameters;
- 1-3 anomalies per series, all after ``train_rows`` (3 periods or 1,000 rows, whichever is more,
  at most 30 % of the file; 25 % in "smoke"), on a channel whose oscillation allows the kind:
  ``amplitude`` (x0.3-0.6 or x1.6-2.5), ``extremum`` (one reading, local or global, min or max),
  ``frequency`` (x0.5-0.7 or x1.5-2), ``mean`` (0.5-2 amplitudes), ``pattern`` (another shape:
  a duty cycle, a sawtooth width, a reversed heartbeat...), ``pattern-shift`` (the cycle slips
  by 1/10-1/4 period), ``platform`` (a flat stretch), ``trend`` (a ramp of 1-3 amplitudes; it
  always runs to the end of the file: GutenTAG keeps the ramp's end offset after the anomaly
  but labels only the ramp, so an anomaly that ended earlier would leave an unlabelled level
  shift behind), ``variance`` (noise of 10-50 % of the amplitude), ``mode-correlation`` (one
  channel jumps against the others);
- about 15 % of the series have no anomaly at all.

Labels are GutenTAG's ``is_anomaly`` column; faults are its runs of ones.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tools.corpora.base import SIZES, T0, Series

CORPUS = "gutentag"
ALL_KINDS = ("amplitude", "extremum", "frequency", "mean", "pattern", "pattern-shift")
ALL_KINDS += ("platform", "trend", "variance")
# GutenTAG's compatibility table (gutenTAG/utils/compatibility.py): kinds per oscillation.
APPLICABLE: dict[str, tuple[str, ...]] = {
    "sine": ALL_KINDS,
    "cosine": ALL_KINDS,
    "square": ALL_KINDS,
    "sawtooth": ALL_KINDS,
    "dirichlet": ALL_KINDS,
    "ecg": ALL_KINDS,
    "mls": ("amplitude", "extremum", "mean", "pattern", "platform", "trend", "variance"),
    "cylinder-bell-funnel": (
        "amplitude",
        "extremum",
        "mean",
        "pattern",
        "platform",
        "trend",
        "variance",
    ),  # fmt: skip
    "random-walk": ("amplitude", "extremum", "mean", "platform", "trend", "variance"),
    "polynomial": ("extremum", "mean", "platform", "trend", "variance"),
    "formula": ("extremum", "mean", "platform", "trend", "variance"),
    "random-mode-jump": ("mode-correlation",),
}
PERIODIC = ("sine", "cosine", "square", "sawtooth", "dirichlet", "ecg", "mls")
ALWAYS_MULTIVARIATE = ("formula", "random-mode-jump")
NOISE = (0.0, 0.01, 0.05, 0.1)  # GutenTAG's "variance": noise sd as a fraction of amplitude
QUIET_SHARE = 0.15


@dataclass
class Plan:
    """One series: its GutenTAG configuration and what we need to know to label and tag it."""

    name: str
    oscillation: str
    length: int
    train_rows: int
    period: int  # readings; 0 = not periodic
    noise: float
    channels: list[dict[str, Any]]
    scales: list[float]  # a typical amplitude per channel, to size anomalies
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # in file order
    main: str = "none"  # the kind this series stands for in the table

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "length": self.length,
            "base-oscillations": self.channels,
            "anomalies": self.anomalies,
        }


def generate(seed: int = 0, size: str = "full") -> list[Series]:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    gutentag = _import_gutentag()
    rng = np.random.default_rng([seed, 0x6E7])
    plans = [_plan(rng, i, osc, kind, size) for i, (osc, kind) in enumerate(_cells(rng, size))]
    frames = _run(gutentag, [p.config() for p in plans], seed)
    return [_series(plan, frames[plan.name]) for plan in plans]


def _import_gutentag() -> Any:
    try:
        with warnings.catch_warnings():
            # gutenTAG imports jsonschema's deprecated RefResolver; not ours to fix.
            warnings.simplefilter("ignore", DeprecationWarning)
            from gutenTAG import GutenTAG
    except ImportError as exc:
        raise ImportError(
            "the gutentag corpus needs GutenTAG: pip install timeeval-gutentag"
        ) from exc
    return GutenTAG


def _cells(rng: np.random.Generator, size: str) -> list[tuple[str, str]]:
    """(oscillation, main anomaly kind) per series; kind "none" = no anomaly."""
    if size == "smoke":
        return [
            ("sine", "frequency"),
            ("ecg", "pattern"),
            ("random-mode-jump", "mode-correlation"),
            ("formula", "mean"),
            ("square", "none"),
        ]
    if size == "quick":  # two kinds per oscillation: every oscillation and every kind appears
        cells = []
        for i, (osc, kinds) in enumerate(APPLICABLE.items()):
            pair = {kinds[i % len(kinds)]: 0, kinds[(i + 1 + len(kinds) // 2) % len(kinds)]: 0}
            cells += [(osc, kind) for kind in pair]
    else:
        cells = [(osc, kind) for osc, kinds in APPLICABLE.items() for kind in kinds]
    quiet = round(len(cells) * QUIET_SHARE / (1 - QUIET_SHARE))
    oscillations = list(APPLICABLE)
    cells += [(oscillations[int(rng.integers(len(oscillations)))], "none") for _ in range(quiet)]
    return cells


def _plan(rng: np.random.Generator, index: int, osc: str, kind: str, size: str) -> Plan:
    length = 2400 if size == "smoke" else int(np.exp(rng.uniform(np.log(4000), np.log(16000))))
    multivariate = osc in ALWAYS_MULTIVARIATE or rng.random() < 0.5
    width = int(rng.integers(2, 9)) if multivariate else 1
    if size == "smoke":
        width = min(width, 3)
    noise = float(rng.choice(NOISE))
    longest = 100 if size == "smoke" else 400
    period = int(np.exp(rng.uniform(np.log(20), np.log(longest)))) if osc in PERIODIC else 0
    channels, scales, period = _channels(rng, osc, width, period, noise)
    short = size == "smoke"
    train_rows = length // 4 if short else int(min(max(1000, 3 * period), 0.3 * length))
    plan = Plan(
        name=f"gt-{osc}-{kind}-{index:03d}",
        oscillation=osc,
        length=length,
        train_rows=train_rows,
        period=period,
        noise=noise,
        channels=channels,
        scales=scales,
    )
    if kind != "none":
        plan.main = kind
        _add_anomalies(rng, plan, kind)
    return plan


def _channels(
    rng: np.random.Generator, osc: str, width: int, period: int, noise: float
) -> tuple[list[dict[str, Any]], list[float], int]:
    """GutenTAG base-oscillation configs per channel, with a typical amplitude each."""
    if osc == "formula":  # periodic channels, and a last one computed from them
        period = period or int(np.exp(rng.uniform(np.log(20), np.log(400))))
        inputs, scales, period = _channels(rng, "sine", width - 1, period, noise)
        operand: Any = {"base": width - 2} if width > 2 else float(rng.uniform(1.5, 3.0))
        kind = "+" if width > 2 else "*"
        formula = {"base": 0, "operation": {"kind": kind, "operand": operand}}
        scale = scales[0] + scales[-1] if width > 2 else scales[0] * operand
        computed = {"kind": "formula", "formula": formula, "variance": noise}
        return [*inputs, computed], [*scales, scale], period
    if osc == "mls":  # its period is fixed by the sequence length: 2**complexity - 1
        complexity = int(rng.integers(5, 10))
        period = 2**complexity - 1
    if osc == "ecg":
        beats = float(rng.uniform(0.8, 2.0))  # per 100 readings
        period = int(round(100 / beats))
    modes = float(rng.integers(5, 30))  # mode changes over the file, shared by all channels
    channels, scales = [], []
    for _ in range(width):
        amplitude = float(rng.uniform(0.5, 5.0))
        config: dict[str, Any] = {"kind": osc, "variance": noise}
        if osc != "random-mode-jump":
            config["offset"] = float(rng.uniform(-10, 10))
        if osc in ("sine", "cosine", "square", "sawtooth", "dirichlet"):
            config.update(frequency=100.0 / period, amplitude=amplitude)  # 100 readings = 1 Hz
        if osc == "square":
            config["duty"] = float(rng.uniform(0.2, 0.8))
        elif osc == "sawtooth":
            config["width"] = float(rng.choice([0.1, 0.5, 0.9, 1.0]))  # 0 means "default"
        elif osc == "dirichlet":
            config["periodicity"] = float(rng.choice([3, 5, 7]))  # odd: the period stays put
        elif osc == "ecg":
            config.update(frequency=beats, amplitude=amplitude, **{"ecg-sim-method": "simple"})
        elif osc == "mls":
            config.update(complexity=complexity, amplitude=amplitude)
            config["smoothing"] = float(rng.uniform(0.05, 0.2))
        elif osc == "cylinder-bell-funnel":
            config.update(amplitude=amplitude, variance=max(noise, 0.05))
            config["avg-pattern-length"] = int(rng.integers(40, 201))
            config["variance-pattern-length"] = float(rng.uniform(5, 30))
            config["variance-amplitude"] = float(rng.uniform(0.2, 0.5) * amplitude)
        elif osc == "random-walk":
            config.update(amplitude=amplitude, smoothing=float(rng.uniform(0.005, 0.05)))
        elif osc == "polynomial":  # a slow curve over the file: rise ~amplitude per 10k rows
            rise = amplitude * rng.choice([-1, 1])
            config["polynomial"] = [0.0, float(rise / 10000), float(rng.normal(0, 1e-9))]
            config["variance"] = noise * amplitude
        elif osc == "random-mode-jump":
            config["frequency"] = modes
            config["channel-diff"] = float(rng.uniform(0.1, 1.0))
            config["channel-offset"] = float(rng.uniform(1.0, 3.0))
            amplitude = config["channel-offset"]
        channels.append(config)
        scales.append(amplitude)
    return channels, scales, period


def _add_anomalies(rng: np.random.Generator, plan: Plan, main: str) -> None:
    """The main kind and 0-2 others, in separate slots after the training rows."""
    target = len(plan.channels) - 1 if plan.oscillation == "formula" else None
    extras = [k for k in APPLICABLE[plan.oscillation] if k not in (main, "trend")]
    count = int(rng.integers(0, 3))
    kinds = [main, *(str(k) for k in rng.choice(extras, min(count, len(extras)), replace=False))]
    if main == "trend":  # its offset lasts to the end, so it must come last
        kinds = [*kinds[1:], "trend"]
    margin = max(plan.period, 50)
    begin, end = plan.train_rows + margin, plan.length
    slot = (end - begin) // len(kinds)
    for k, kind in enumerate(kinds):
        channel = target if target is not None else int(rng.integers(len(plan.channels)))
        low = begin + k * slot
        length = _anomaly_length(rng, plan, kind, slot)
        start = int(rng.integers(low, max(low + 1, low + slot - length - margin)))
        if plan.period and kind not in ("extremum", "trend"):  # cycles start at row 0
            start = -(-start // plan.period) * plan.period
        if kind == "trend":
            # GutenTAG splits a trend into int(20 %) + int(80 %) rows and fails unless they
            # add up: a multiple of 5 rows always does.
            start += (plan.length - start) % 5
            length = plan.length - start
        plan.anomalies.append(
            {
                "exact-position": int(start),
                "length": int(length),
                "channel": int(channel),
                "kinds": [_kind_config(rng, plan, kind, channel, length)],
            }
        )
        plan.kinds.append(kind)


def _anomaly_length(rng: np.random.Generator, plan: Plan, kind: str, slot: int) -> int:
    if kind == "extremum":
        return 1  # GutenTAG forces extrema to one reading
    if kind == "mode-correlation":
        step = plan.length // int(plan.channels[0]["frequency"])
        return int(min(step * rng.integers(1, 3), slot // 2))
    if plan.period:
        return int(min(plan.period * rng.integers(3, 8), slot // 2))
    return int(min(rng.integers(100, 601), slot // 2))


def _kind_config(
    rng: np.random.Generator, plan: Plan, kind: str, channel: int, length: int
) -> dict[str, Any]:
    scale = plan.scales[channel]
    sign = float(rng.choice([-1.0, 1.0]))
    base = plan.channels[channel]
    if kind == "amplitude":
        factor = rng.uniform(0.3, 0.6) if rng.random() < 0.5 else rng.uniform(1.6, 2.5)
        return {"kind": kind, "amplitude_factor": float(factor)}
    if kind == "extremum":
        local = bool(rng.random() < 0.3)
        return {"kind": kind, "min": bool(rng.random() < 0.5), "local": local, "context_window": 50}
    if kind == "frequency":
        factor = rng.uniform(0.5, 0.7) if rng.random() < 0.5 else rng.uniform(1.5, 2.0)
        return {"kind": kind, "frequency_factor": float(factor)}
    if kind == "mean":
        return {"kind": kind, "offset": float(sign * rng.uniform(0.5, 2.0) * scale)}
    if kind == "pattern":
        return {"kind": kind, **_pattern_args(rng, base)}
    if kind == "pattern-shift":
        # GutenTAG interpolates over a window at each end: both must fit in the anomaly.
        window = max(1, min(plan.period // 2, (length - 2) // 3))
        shift = max(1, min(window, int(plan.period * rng.uniform(0.1, 0.25))))
        return {"kind": kind, "shift_by": int(sign) * shift, "transition_window": window}
    if kind == "platform":
        return {"kind": kind, "value": float(rng.uniform(-0.5, 0.5) * scale)}
    if kind == "trend":
        rise = sign * rng.uniform(1.0, 3.0) * scale
        slope = rise / max(plan.length - plan.train_rows, 1)
        return {"kind": kind, "oscillation": {"kind": "polynomial", "polynomial": [0.0, slope]}}
    if kind == "variance":
        return {"kind": kind, "variance": float(plan.noise + rng.uniform(0.1, 0.5))}
    return {"kind": kind}  # mode-correlation


def _pattern_args(rng: np.random.Generator, base: dict[str, Any]) -> dict[str, Any]:
    osc = base["kind"]
    if osc == "square":  # a duty cycle clearly different from the normal one
        duty = base["duty"]
        return {"square_duty": float(duty + 0.3 if duty < 0.5 else duty - 0.3)}
    if osc == "sawtooth":
        return {"sawtooth_width": 0.5 if base["width"] != 0.5 else 1.0}
    if osc == "cylinder-bell-funnel":
        return {"cbf_pattern_factor": float(rng.uniform(2.0, 4.0))}
    if osc in ("sine", "cosine", "dirichlet"):
        return {"sinusoid_k": float(rng.uniform(5.0, 20.0))}
    return {}  # ecg (a reversed beat) and mls (a reversed stretch) need no parameter


def _run(gutentag: Any, configs: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Generate with GutenTAG, quietly: it draws progress bars on stderr and logs a line for
    every combination it cannot honour (ours never should: such a line is an error here)."""
    chatter = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(chatter):
        # jsonschema's RefResolver (GutenTAG's validator), scipy's daub (neurokit2's ECG)
        warnings.simplefilter("ignore", DeprecationWarning)
        generator = gutentag.from_dict({"timeseries": configs}, seed=seed)
        results = generator.generate(return_timeseries=True)
    if "Guten Tag!" in chatter.getvalue():
        raise RuntimeError(f"GutenTAG refused part of the configuration: {chatter.getvalue()}")
    return {result.name: result.timeseries for result in results}


def _series(plan: Plan, frame: Any) -> Series:
    labels = frame["is_anomaly"].to_numpy(dtype=np.uint8)
    values = frame.drop(columns="is_anomaly").to_numpy(dtype=np.float64)
    t = T0 + np.arange(len(labels), dtype=np.float64)
    faults = _runs(t, labels)
    if labels[: plan.train_rows].any():
        raise AssertionError(f"{plan.name}: an anomaly inside the training rows")
    channels = list(frame.columns.drop("is_anomaly"))
    targets = sorted({int(a["channel"]) for a in plan.anomalies})
    return Series(
        name=plan.name,
        corpus=CORPUS,
        t=t,
        x=values,
        channels=[str(c) for c in channels],
        labels=labels,
        faults=faults,
        train_rows=plan.train_rows,
        tags={
            "kind": plan.oscillation,
            "fault": plan.main,
            "anomalies": ",".join(plan.kinds) or "none",
            "period": str(plan.period) if plan.period else "none",
            "noise": f"{plan.noise:g}",
            "channels": str(len(channels)),
            "anomaly_channels": ",".join(str(channels[c]) for c in targets) or "none",
        },
    )


def _runs(t: np.ndarray, labels: np.ndarray) -> list[tuple[float, float]]:
    """Half-open [start, end) intervals of consecutive labelled rows."""
    edges = np.diff(np.r_[0, labels.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    step = float(t[1] - t[0]) if len(t) > 1 else 1.0
    return [
        (float(t[a]), float(t[b]) if b < len(t) else float(t[-1]) + step)
        for a, b in zip(starts, ends, strict=True)
    ]
