"""The detector: readings in, anomaly scores, alert transitions and events out. No I/O.

Adaptation happens in layers (see DESIGN.md):

1. An online baseline per channel (time-based exponentially weighted mean and variance with
   a configurable half-life, Huber-clipped so one outlier cannot drag it) turns a reading
   into a normalised value ``z``; slow drift moves the baseline, not the score.
2. The liquid (CfC) state carries each channel's recent dynamics, stepped with the real
   ``dt`` (in units of the channel's own typical interval) and predicts the next ``z`` with
   a variance. Every channel that has a reading in a tick is stepped in ONE batched call.
3. A reading's raw surprise is the largest of its squared prediction error (in units of the
   predicted variance, recalibrated online), its squared distance from the baseline, and a
   stuck-sensor test. Two statistics of it are judged against their own healthy history
   (``TailModel``, the idea of Numenta's anomaly likelihood): a short one (the last few
   readings: spikes, jumps) and a medium one (about the last 20 readings: a small shift that
   persists). Each channel, on its own, then an asset takes its most surprising channel with a
   Bonferroni factor for having looked at several; the score lands in [0, 1].
4. An ``AlertLatch`` per asset adds hysteresis, minimum duration and cool-down.

Two cores run this arithmetic: this module (the reference, always available) and the
compiled one (``_kernel.c``, a C mirror of ``_judge``, ``_score_asset``, ``_adapt`` and the
rest, built at install time when a C compiler and Python headers exist), about five times
faster. Results are the same (``tests/detector/test_kernel.py`` runs both side by side). The compiled
core is used when built unless ``LIQUID_GATEWAY_PURE=1``; ``Detector.core`` says which runs.
With it, this class keeps names, slots, alert ids and units and does the rare work (creating
streams, alerts, events, snapshots); the kernel keeps the numbers and runs each tick.

While a score is elevated, adaptation is frozen for the channels that look faulty; while an
alert is open, for the channels that raised it, so a fault is not learned as the new normal
while a healthy channel of the same asset (a temperature drifting on its own) keeps following
its baseline and cannot hold the alert open forever. A baseline that moves more than
``drift_threshold`` scales away from its slow reference is reported as a ``drift`` event, not
an alert. A gap longer than ``max_gap`` resets the channel (state, baseline, warm-up).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import DetectorSection
from gateway.detector.latch import AlertLatch
from gateway.detector.tail import TailModel
from gateway.model.runtime import StepModel
from gateway.records import AlertChange, Contribution, Event, Reading, ScoredReading


def _load_kernel() -> tuple[Any, str]:
    """The compiled core and "", or None and why not: not built (no compiler or Python
    headers at install), or built from another _kernel.c (a stale build after an edit would
    not mirror engine.py)."""
    try:
        from gateway.detector import _kernel as kernel  # type: ignore[attr-defined]
    except ImportError:
        return None, "not built"
    source = Path(__file__).with_name("_kernel.c")
    if source.is_file():
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        if getattr(kernel, "SOURCE_SHA256", None) != digest:
            return None, "built from another version of _kernel.c"
    return kernel, ""


_kernel, KERNEL_PROBLEM = _load_kernel()

CORES = ("python", "compiled")
PURE_ENV = "LIQUID_GATEWAY_PURE"

_Z_INPUT_CLIP = 8.0  # the model was trained on z in [-8, 8]
_Z_SCORE_CLIP = 1e6
_HUBER = 3.0  # baseline updates see at most 3 scales of deviation
_SCALE_FLOOR_REL = 1e-4
_SCALE_FLOOR_ABS = 1e-9
_DT_CLIP = 50.0
_INTERVAL_ALPHA = 0.05
_SHORT_ALPHA = 1.0 / 3.0  # short average of the raw score: about the last 5 readings
# The medium statistic: an average over about the last 20 readings of the raw surprise,
# clipped at 5 scales so that after a huge excursion it returns within a few dozen readings.
_MEDIUM_ALPHA = 0.1
_MEDIUM_CLIP = 25.0
# How light the short statistic's tail may look (in squared scales): coarsely quantised
# channels (7 pressure levels, 1 l/min flow steps) make it nearly constant in healthy times,
# and an exponential tail fitted to that called one two-step jump a 1e-12 event.
_SHORT_BETA_FLOOR = 0.25
_MEDIUM_BETA_FLOOR = 0.1
# A channel counts as looking faulty (its adaptation is held) below this tail probability.
_HOLD_SURPRISE = math.log(100.0)
_LONG_READINGS = 2000.0  # memory of the variance recalibration, in readings
_SCORE_FROM = 30  # a channel is not judged before its baseline has settled a little
_BAND_SIGMAS = 3.0
# A burst of isolated spikes: the second-largest raw score in the last few readings, so
# one lone spike is not an alarm but two within the window are.
_BURST_WINDOW = 10
# A stuck sensor repeats exactly the same value far longer than it ever did when healthy.
_STUCK_MIN_RUN = 20
_STUCK_FACTOR = 3.0
_STUCK_Q = 36.0  # as surprising as a 6-sigma reading
_REASONS = ("level", "prediction", "stuck")
_HORIZON = 100  # readings: see TailModel.score
# What the compiled core trades per channel and asset (then ``recent`` and the tail's raw).
_CHANNEL_FIELDS = (
    "mean", "var", "n", "last_ts", "interval", "pred", "logvar", "calib", "slow", "drifting",
    "q", "reason", "run", "run_max", "last_value", "last_expected", "band_low", "band_high",
    "fresh", "short", "n_raw", "level", "surprise", "medium", "level_medium", "held",
)  # fmt: skip
_ASSET_FIELDS = ("score", "raised_ts", "accepted", "max_score")
_LATCH_FIELDS = ("active", "above", "below", "cooldown_until")


def compiled_core_available() -> bool:
    return _kernel is not None


def record_constructor(cls: Any) -> Any:
    """A faster stand-in for ``cls(...)`` (positional arguments) when ``cls`` is a frozen slots
    dataclass like Reading: its generated ``__init__`` sets each slot with
    ``object.__setattr__``, which costs more than scoring the reading; ``_kernel.Record`` sets
    the same slots in C. ``cls`` itself where that would not be the same thing, or when the
    compiled core is off."""
    if (
        default_core() != "compiled"
        or not isinstance(cls, type)
        or not dataclasses.is_dataclass(cls)
    ):
        return cls
    fields = dataclasses.fields(cls)
    init = cls.__dict__.get("__init__")
    generated = getattr(init, "__qualname__", "") == f"{cls.__qualname__}.__init__"
    if (
        not generated
        or hasattr(cls, "__post_init__")
        or "__slots__" not in cls.__dict__
        or any(not f.init or f.default_factory is not dataclasses.MISSING for f in fields)
    ):
        return cls
    defaults = tuple(f.default for f in fields if f.default is not dataclasses.MISSING)
    if any(f.default is dataclasses.MISSING for f in fields[len(fields) - len(defaults) :]):
        return cls
    return _kernel.Record(cls, tuple(cls.__dict__[f.name] for f in fields), defaults)


def default_core() -> str:
    """``compiled`` when the extension is built and ``LIQUID_GATEWAY_PURE`` is not set."""
    if os.environ.get(PURE_ENV, "").strip() not in ("", "0") or _kernel is None:
        return "python"
    return "compiled"


@dataclass
class DetectorOutput:
    scored: list[ScoredReading] = field(default_factory=list)
    alerts: list[AlertChange] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class _Channel:
    """One stream's state. Plain floats: per reading this is a few dozen arithmetic steps,
    which Python does faster on scalars than numpy does on arrays of a handful of streams;
    only the liquid state ``h`` lives in one matrix, for the batched model step."""

    __slots__ = (
        "name", "slot", "asset", "mean", "var", "n", "last_ts", "interval", "pred",
        "logvar", "calib", "slow", "drifting", "q", "reason", "run", "run_max",
        "last_value", "last_expected", "band_low", "band_high",
        "fresh", "short", "recent", "n_raw", "tail", "level", "surprise",
        "medium", "tail_medium", "level_medium", "held",
    )  # fmt: skip

    def __init__(self, name: str, slot: int, asset: _Asset) -> None:
        self.name, self.slot, self.asset = name, slot, asset
        self.last_ts = math.nan
        self.last_value = 0.0
        self.slow = 0.0
        # In a multi-channel asset each channel's surprise is first judged in its own terms.
        self.fresh = False
        self.short = 0.0
        self.recent = [0.0] * _BURST_WINDOW
        self.n_raw = 0
        self.tail = TailModel(beta_floor=_SHORT_BETA_FLOOR)
        self.level = 0.0
        self.surprise = 0.0
        self.medium = 0.0
        self.tail_medium = TailModel(beta_floor=_MEDIUM_BETA_FLOOR)
        self.level_medium = 0.0
        self.held = False  # it raised the asset's open alert: not adapting while it is open
        self.reset()

    def reset(self) -> None:
        """Forget what was learned (a gap longer than max_gap); the last timestamp stays."""
        self.mean = self.var = 0.0
        self.n = 0
        self.interval = math.nan
        self.pred = math.nan
        self.logvar = 0.0
        self.calib = 1.0
        self.drifting = False
        self.q = 0.0
        self.reason = 0
        self.run = 0
        self.run_max = 0.0
        self.last_expected = self.band_low = self.band_high = math.nan


@dataclass
class _Asset:
    name: str
    latch: AlertLatch
    channels: list[_Channel] = field(default_factory=list)
    score: float = 0.0
    alert_id: str | None = None
    raised_ts: float = 0.0
    accepted: bool = False  # the open alert outlived accept_after: adapting to the new level
    max_score: float = 0.0
    index: int = -1  # in the compiled core


@dataclass(slots=True)
class _Step:
    """What one reading's tick needs between the scoring and the update halves."""

    channel: _Channel
    reading: Reading
    first: bool
    mean: float
    var: float
    scale: float
    z: float
    dt: float  # seconds since the previous reading; nan for the first or after a reset
    dt_model: float
    has_pred: bool
    err2: float
    expected: float


class _CompiledCore:
    """Detector methods of the compiled core: the per-tick glue around ``_kernel.Kernel`` and
    the state trade between the kernel and the Python objects (which, with the compiled core,
    are current only right after a pull)."""

    _kernel: Any
    _slot_of: dict[str, int]
    _asset_list: list[_Asset]
    _channels: dict[str, _Channel]
    _assets: dict[str, _Asset]
    _h: np.ndarray
    model: StepModel

    def _grow_batch(self, n: int) -> None:
        cap = 1 << max(n - 1, 0).bit_length()
        self._x = np.zeros((cap, 1), np.float32)
        self._dt = np.ones((cap, 1), np.float32)
        self._hbuf = np.zeros((cap, self.model.hidden_size), np.float32)
        self._views: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._bind()

    def _bind(self) -> None:
        """Hand the kernel the buffers it reads and writes (again after one was replaced)."""
        self._kernel.bind(self._slot_of, self._x, self._dt, self._hbuf, self._h)

    def _tick_compiled(self, tick: Sequence[Reading], out: DetectorOutput) -> None:
        if type(tick) is not list and type(tick) is not tuple:
            tick = list(tick)  # read more than once
        kernel = self._kernel
        result = kernel.tick(tick)
        for _ in range(2):
            if result is False:  # new streams: create them (as _judge would), then again
                for r in tick:
                    if (
                        math.isfinite(r.value)
                        and math.isfinite(r.ts)
                        and r.stream not in self._slot_of
                    ):
                        self._channel(r.stream)  # type: ignore[attr-defined]
            elif type(result) is int:  # more readings than the batch buffers hold
                self._grow_batch(result)
            else:
                break
            result = kernel.tick(tick)
        if result is None:
            return
        b, scored, notes = result
        if notes is not None:
            self._notes(tick, notes, out)
        views = self._views.get(b)
        if views is None:
            views = self._views[b] = (self._x[:b], self._hbuf[:b], self._dt[:b])
        pred, logvar, h_new = self.model.step(*views)
        kernel.store(pred, logvar, h_new)
        out.scored += scored

    def _notes(self, tick: Sequence[Reading], notes: list[tuple], out: DetectorOutput) -> None:
        """Events and alert changes the kernel reported, in the order they happened."""
        for note in notes:
            kind = note[0]
            if kind == 0:  # _judge: a gap reset
                r = tick[note[1]]
                out.events.append(Event("gap_reset", r.stream, r.ts, {"gap_s": note[2]}))
            elif kind == 1:  # _score_asset: a latch transition
                asset, state, ts = self._asset_list[note[1]], _CHANGES[note[2]], note[3]
                if state == "raised":
                    asset.alert_id = uuid.uuid4().hex
                if asset.alert_id is not None:
                    for c in asset.channels:
                        self._pull_channel(c, tail=False)
                    self._pull_asset(asset)
                    out.alerts.append(self._alert(asset, state, ts))  # type: ignore[attr-defined]
                    if state == "cleared":
                        asset.alert_id = None
            elif kind == 2:  # _accepted: a new normal
                asset, ts, open_s = self._asset_list[note[1]], note[2], note[3]
                detail = {"alert_id": asset.alert_id, "open_s": round(open_s, 1)}
                out.events.append(Event("new_normal", asset.name, ts, detail))
            else:  # _adapt: drift
                _, i, ts, baseline, reference, distance = note
                detail = {
                    "baseline": baseline,
                    "reference": reference,
                    "scales": round(distance, 3),
                }
                out.events.append(Event("drift", tick[i].stream, tick[i].ts, detail))

    def _pull_channel(self, c: _Channel, tail: bool = True) -> None:
        state = self._kernel.get_channel(c.slot)
        for name, value in zip(_CHANNEL_FIELDS, state, strict=False):
            setattr(c, name, value)
        c.recent = list(state[-3])
        if tail:
            c.tail.load_raw(state[-2])
            c.tail_medium.load_raw(state[-1])

    def _push_channel(self, c: _Channel, tail: bool = True) -> None:
        fields = tuple(getattr(c, name) for name in _CHANNEL_FIELDS)
        tails = (c.tail.raw(), c.tail_medium.raw()) if tail else (None, None)
        self._kernel.set_channel(c.slot, (*fields, c.recent, *tails))

    def _pull_asset(self, asset: _Asset) -> None:
        state = self._kernel.get_asset(asset.index)
        for name, value in zip(_ASSET_FIELDS + _LATCH_FIELDS, state, strict=True):
            setattr(asset.latch if name in _LATCH_FIELDS else asset, name, value)

    def _push_asset(self, asset: _Asset) -> None:
        fields = [getattr(asset, name) for name in _ASSET_FIELDS]
        fields += [getattr(asset.latch, name) for name in _LATCH_FIELDS]
        self._kernel.set_asset(asset.index, tuple(fields))

    def _pull_all(self) -> None:
        for c in self._channels.values():
            self._pull_channel(c)
        for asset in self._assets.values():
            self._pull_asset(asset)

    def _push_all(self) -> None:
        for c in self._channels.values():
            self._push_channel(c)
        for asset in self._assets.values():
            self._push_asset(asset)


_CHANGES = (None, "raised", "cleared")


class Detector(_CompiledCore):
    """Scores readings of many streams. Owned by one thread (the pipeline, or replay)."""

    def __init__(
        self,
        config: DetectorSection,
        model: StepModel,
        assets: Mapping[str, Sequence[str]] | None = None,
        units: Mapping[str, str | None] | None = None,
        core: str | None = None,
    ) -> None:
        """``core``: "python" or "compiled"; None = ``default_core()``."""
        core = default_core() if core is None else core
        if core not in CORES:
            raise ValueError(f"unknown detector core {core!r}; choose one of {', '.join(CORES)}")
        if core == "compiled" and _kernel is None:
            raise ValueError(
                "the compiled detector core is not built here (python -m gateway.detector.build)"
            )
        self.config = config
        self.model = model
        self.core = core
        self._asset_of_stream = {s: a for a, streams in (assets or {}).items() for s in streams}
        self._units: dict[str, str | None] = dict(units or {})
        self._channels: dict[str, _Channel] = {}
        self._assets: dict[str, _Asset] = {}
        self._h = np.zeros((16, model.hidden_size), np.float32)
        self._kernel: Any = None
        if core == "compiled":
            self._kernel = _kernel.Kernel(
                max_gap=config.max_gap,
                warmup=config.warmup,
                baseline_halflife=config.baseline_halflife,
                drift_halflife=config.drift_halflife,
                drift_threshold=config.drift_threshold,
                threshold=config.threshold,
                clear_threshold=config.clear_threshold,
                min_duration=config.min_duration,
                cooldown=config.cooldown,
                cooldown_min_duration=config.cooldown_min_duration,
                accept_after=config.accept_after,
                scored=record_constructor(ScoredReading),
            )
            self._slot_of: dict[str, int] = {}
            self._asset_list: list[_Asset] = []
            self._grow_batch(16)

    # --- streams and assets -------------------------------------------------------------

    @property
    def streams(self) -> list[str]:
        return list(self._channels)

    def _channel(self, stream: str) -> _Channel:
        channel = self._channels.get(stream)
        if channel is not None:
            return channel
        slot = len(self._channels)
        if slot >= len(self._h):
            grown = np.zeros((2 * len(self._h), self._h.shape[1]), np.float32)
            grown[: len(self._h)] = self._h
            self._h = grown
            if self._kernel is not None:
                self._bind()
        asset_name = self._asset_of_stream.get(stream, stream)
        asset = self._assets.get(asset_name)
        if asset is None:
            cfg = self.config
            latch = AlertLatch(
                cfg.threshold,
                cfg.clear_threshold,
                cfg.min_duration,
                cfg.cooldown,
                cfg.cooldown_min_duration,
            )
            asset = self._assets[asset_name] = _Asset(asset_name, latch)
            if self._kernel is not None:
                asset.index = self._kernel.add_asset()
                self._asset_list.append(asset)
        channel = self._channels[stream] = _Channel(stream, slot, asset)
        asset.channels.append(channel)
        if self._kernel is not None:
            self._kernel.add_channel(asset.index)
            self._slot_of[stream] = slot
        return channel

    def set_unit(self, stream: str, unit: str | None) -> None:
        if unit is not None:
            self._units[stream] = unit

    # --- scoring --------------------------------------------------------------------------

    def process(self, readings: Sequence[Reading]) -> DetectorOutput:
        """Score a batch. Readings of one stream are taken in order; each "round" (the k-th
        reading of every stream in the batch) is one tick, stepped in one model call."""
        rounds: list[list[Reading]] = []
        seen: dict[str, int] = {}
        for reading in readings:
            k = seen.get(reading.stream, 0)
            seen[reading.stream] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(reading)
            if reading.unit is not None and reading.stream not in self._units:
                self._units[reading.stream] = reading.unit
        return self.process_ticks(rounds)

    def process_ticks(self, ticks: Sequence[Sequence[Reading]]) -> DetectorOutput:
        """Score ticks in order; each tick holds at most one reading per stream (replay
        passes one CSV row per tick)."""
        out = DetectorOutput()
        if self._kernel is not None:
            for tick in ticks:
                self._tick_compiled(tick, out)
            return out
        for tick in ticks:
            # Sources never send non-finite values; the guard keeps the state finite anyway.
            usable = [r for r in tick if math.isfinite(r.value) and math.isfinite(r.ts)]
            if usable:
                self._tick(usable, out)
        return out

    def _tick(self, tick: list[Reading], out: DetectorOutput) -> None:
        steps = [self._judge(self._channel(r.stream), r, out) for r in tick]

        # Asset scores and alert latches, then the adaptation gate they imply.
        now = max(r.ts for r in tick)
        touched = {step.channel.asset.name: step.channel.asset for step in steps}
        guarded = set()
        for asset in touched.values():
            self._score_asset(asset, now, out)
            if self._elevated(asset) and not self._accepted(asset, now, out):
                guarded.add(asset.name)

        for step in steps:
            c = step.channel
            self._adapt(step, c.asset.name in guarded and self._held(c), out)

        # One batched model step for every channel in this tick.
        slots = [step.channel.slot for step in steps]
        x = np.array(
            [[min(max(step.z, -_Z_INPUT_CLIP), _Z_INPUT_CLIP)] for step in steps], np.float32
        )
        dt_in = np.array([[step.dt_model] for step in steps], np.float32)
        pred_next, logvar_next, h_new = self.model.step(x, self._h[slots], dt_in)
        self._h[slots] = h_new
        # Trained like this: input normalised with the baseline before this reading, target
        # (the next reading) with the baseline after it, which is what the next tick uses.
        for step, pred, logvar in zip(
            steps, pred_next[:, 0].tolist(), logvar_next[:, 0].tolist(), strict=True
        ):
            step.channel.pred = pred
            step.channel.logvar = logvar
            asset = step.channel.asset
            reading = step.reading
            out.scored.append(
                ScoredReading(
                    reading.stream,
                    reading.ts,
                    reading.value,
                    None if math.isnan(step.expected) else step.expected,
                    asset.score,
                    asset.latch.active,
                )
            )

    def _judge(self, c: _Channel, reading: Reading, out: DetectorOutput) -> _Step:
        """The first half of a tick for one reading: how surprising is it?"""
        cfg = self.config
        value, ts = reading.value, reading.ts
        dt = ts - c.last_ts  # nan for a first reading
        if dt > cfg.max_gap:  # a long silence resets the channel entirely
            c.reset()
            self._h[c.slot] = 0.0
            out.events.append(Event("gap_reset", c.name, ts, {"gap_s": dt}))
            dt = math.nan
        elif dt < 0.0:
            dt = 0.0
        have_dt = not math.isnan(dt)
        n = c.n
        first = n == 0

        interval = c.interval
        if math.isnan(interval):
            new_interval = dt
        else:
            new_interval = interval + _INTERVAL_ALPHA * (
                min(max(dt, 0.1 * interval), 10 * interval) - interval
            )
        if have_dt and new_interval > 0:
            c.interval = new_interval
            dt_model = min(max(dt / new_interval, 0.0), _DT_CLIP)
        else:
            dt_model = 1.0

        # Baseline before this reading's update: what "normal" meant up to now.
        mean = value if first else c.mean
        var = c.var
        scale = max(math.sqrt(var), _SCALE_FLOOR_REL * abs(mean) + _SCALE_FLOOR_ABS)
        z = 0.0 if first else min(max((value - mean) / scale, -_Z_SCORE_CLIP), _Z_SCORE_CLIP)

        # Surprise against the prediction made at the previous step.
        pred = c.pred
        pred_var = math.exp(c.logvar) * c.calib
        no_pred = math.isnan(pred)
        has_pred = not no_pred and n >= _SCORE_FROM
        pred0 = 0.0 if no_pred else pred
        err2 = (z - pred0) ** 2 / pred_var if has_pred else 0.0
        stuck = _STUCK_Q if self._stuck(c, value, n, var, mean) else 0.0
        level2 = z * z
        if level2 >= err2 and level2 >= stuck:
            c.q, c.reason = level2, 0
        elif err2 >= stuck:
            c.q, c.reason = err2, 1
        else:
            c.q, c.reason = stuck, 2
        if n < _SCORE_FROM:
            c.q = 0.0
        c.fresh = True
        expected = math.nan if no_pred else mean + pred0 * scale
        c.last_value = value
        # The explanation follows whichever test the reading failed: far from the baseline
        # (expected = baseline, band = +-3 scales) or far from the model's prediction.
        if level2 >= err2 or math.isnan(expected):
            c.last_expected, half = mean, _BAND_SIGMAS * scale
        else:
            c.last_expected, half = expected, _BAND_SIGMAS * math.sqrt(pred_var) * scale
        c.band_low, c.band_high = c.last_expected - half, c.last_expected + half
        return _Step(c, reading, first, mean, var, scale, z, dt, dt_model, has_pred, err2, expected)

    def _adapt(self, step: _Step, frozen: bool, out: DetectorOutput) -> None:
        """The second half: learn from the reading, unless its asset is frozen."""
        cfg = self.config
        c, first, mean, scale = step.channel, step.first, step.mean, step.scale
        value = step.reading.value
        dt0 = 0.0 if math.isnan(step.dt) else step.dt
        n1 = c.n + 1

        # Baseline update (time-based half-life; cumulative during warm-up).
        alpha = 0.0 if math.isnan(step.dt) else 1.0 - 2.0 ** (-dt0 / cfg.baseline_halflife)
        if n1 <= max(cfg.warmup, 1):
            alpha = max(alpha, 1.0 / n1)
        if frozen and not first:
            alpha = 0.0
        # Huber-clipped once warm, so one outlier cannot drag the baseline; not during warm-up,
        # where the spread must grow to its true size from a near-zero start.
        dev = value - mean
        if n1 > cfg.warmup:
            dev = min(max(dev, -_HUBER * scale), _HUBER * scale)
        if first:
            dev = 0.0
        new_mean = mean + alpha * dev
        c.var = 0.0 if first else (1.0 - alpha) * (step.var + alpha * dev * dev)
        c.mean = new_mean
        c.n = n1
        c.last_ts = step.reading.ts

        # Recalibrate the model's variance to what it actually achieves on this channel.
        if step.has_pred:
            ratio = min(step.err2 * c.calib, 1e4)
            rate = 0.0 if frozen else max(1.0 / n1, 1.0 / _LONG_READINGS)
            c.calib = max(c.calib + rate * (ratio - c.calib), 1e-3)

        # Drift: the baseline leaving its slow reference is news, but not an alarm.
        warm = n1 > cfg.warmup
        slow = new_mean if (first or not warm) else c.slow
        if warm and not frozen:
            slow += (1.0 - 2.0 ** (-dt0 / cfg.drift_halflife)) * (new_mean - slow)
        c.slow = slow
        distance = abs(new_mean - slow) / scale
        was = c.drifting
        limit = 0.5 * cfg.drift_threshold if was else cfg.drift_threshold
        c.drifting = warm and distance > limit
        if c.drifting and not was:
            out.events.append(
                Event(
                    "drift",
                    c.name,
                    step.reading.ts,
                    {"baseline": new_mean, "reference": slow, "scales": round(distance, 3)},
                )
            )

    def _stuck(self, c: _Channel, value: float, n: int, var: float, mean: float) -> bool:
        """Exact repeats, far longer than the longest run this channel had while healthy.
        A channel that never varied (a constant, a coarse quantiser at rest) is exempt."""
        run = c.run
        repeat = n >= 1 and value == c.last_value
        warming = n <= self.config.warmup
        if not repeat and run > 0 and not self._elevated(c.asset):
            c.run_max = max(c.run_max, run)
        c.run = run + 1 if repeat else 0
        if warming:
            # During warm-up an ongoing run counts too: a sensor at rest all along is normal.
            c.run_max = max(c.run_max, c.run)
        varied = var > _squared(_SCALE_FLOOR_REL * abs(mean) + _SCALE_FLOOR_ABS)
        limit = max(_STUCK_MIN_RUN, _STUCK_FACTOR * c.run_max)
        return varied and not warming and c.run > limit

    def accept_new_normal(self, asset_name: str, alert_id: str) -> bool:
        """An operator acknowledged this alert as a new normal (``alerts ack --new-normal``):
        adapt to the new level from the next reading. False when that alert is no longer open
        (already cleared, or the asset is unknown after a restart with another model)."""
        asset = self._assets.get(asset_name)
        if asset is not None and self._kernel is not None:
            self._pull_asset(asset)
        if asset is None or not asset.latch.active or asset.alert_id != alert_id:
            return False
        asset.accepted = True
        if self._kernel is not None:
            self._push_asset(asset)
        return True

    def _accepted(self, asset: _Asset, ts: float, out: DetectorOutput) -> bool:
        """An alert open longer than ``accept_after``, or acknowledged by an operator as a
        new normal, is a new normal: adapt to it."""
        if asset.accepted and asset.latch.active:
            return True
        limit = self.config.accept_after
        if limit is None or not asset.latch.active or ts - asset.raised_ts < limit:
            return False
        if not asset.accepted:
            asset.accepted = True
            out.events.append(
                Event(
                    "new_normal",
                    asset.name,
                    ts,
                    {"alert_id": asset.alert_id, "open_s": round(ts - asset.raised_ts, 1)},
                )
            )
        return True

    def _elevated(self, asset: _Asset) -> bool:
        return asset.latch.active or asset.score >= self.config.clear_threshold

    @staticmethod
    def _held(c: _Channel) -> bool:
        """Whether a channel of a guarded asset stops adapting: while an alert is open, the
        channels that raised it; before that, the ones that look faulty now."""
        if c.asset.latch.active:
            return c.held
        return c.surprise >= _HOLD_SURPRISE

    def _score_asset(self, asset: _Asset, ts: float, out: DetectorOutput) -> None:
        cfg = self.config
        judged = [c for c in asset.channels if c.n >= _SCORE_FROM]
        if not judged:
            asset.score = 0.0
            return
        # The first half of the warm-up is the baseline settling: not what healthy looks like.
        settle = max(_SCORE_FROM, cfg.warmup // 2)
        settled = all(c.n > settle for c in asset.channels)
        self._score_channels(asset, judged, settled)
        warm = all(c.n > cfg.warmup for c in asset.channels)
        change = asset.latch.update(asset.score, ts, armed=warm)
        if asset.latch.active:
            asset.max_score = max(asset.max_score, asset.score)
        if change == "raised":
            asset.alert_id = uuid.uuid4().hex
            asset.max_score = asset.score
            asset.raised_ts = ts
            asset.accepted = False
            for c in asset.channels:
                c.held = c.surprise >= _HOLD_SURPRISE
        if change is not None and asset.alert_id is not None:
            out.alerts.append(self._alert(asset, change, ts))
            if change == "cleared":
                asset.alert_id = None

    def _score_channels(self, asset: _Asset, judged: list[_Channel], settled: bool) -> None:
        """Each channel is judged against its own healthy history first, so one channel that
        is always a little surprising (a temperature the baseline lags behind) cannot hide a
        clear change in a quiet one; on two time scales, the more surprising one counting
        (Bonferroni: twice its tail probability). The asset takes the most surprising
        channel, with a Bonferroni factor for having looked at several."""
        levels = []
        smallest = 1.0
        for c in judged:
            if c.fresh:
                c.fresh = False
                restart = c.tail.count == 0
                c.level = _window_level(c, c.q, restart=restart)
                clipped = min(c.q, _MEDIUM_CLIP)
                c.medium = clipped if restart else c.medium + _MEDIUM_ALPHA * (clipped - c.medium)
                c.level_medium = c.medium
                levels.append(c)
            p = c.tail.exceedance(c.level) if c.tail.ready else 1.0
            if c.tail_medium.ready:
                p = 2.0 * min(p, c.tail_medium.exceedance(c.level_medium))
            c.surprise = -math.log(max(p, 1e-300))
            smallest = min(smallest, p)
        ready = all(c.tail.ready for c in judged)
        p_asset = min(1.0, len(asset.channels) * smallest)
        asset.score = math.exp(-_HORIZON * p_asset) if ready else 0.0
        if settled and not self._elevated(asset):
            # Learn what the statistics look like while healthy; never from a fault.
            for c in levels:
                c.tail.update(c.level)
                c.tail_medium.update(c.level_medium)

    def _alert(self, asset: _Asset, state: str, ts: float) -> AlertChange:
        q = np.array([max(c.surprise, 0.0) for c in asset.channels])
        total = float(q.sum()) or 1.0
        contributors = tuple(
            Contribution(
                stream=c.name,
                observed=c.last_value,
                expected=_finite(c.last_expected),
                band=(_finite(c.band_low), _finite(c.band_high)),
                share=float(q[i]) / total,
                unit=self._units.get(c.name),
                reason=_REASONS[c.reason],
            )
            for i, c in ((i, asset.channels[i]) for i in np.argsort(-q))
        )
        top = contributors[0]
        return AlertChange(
            alert_id=asset.alert_id or uuid.uuid4().hex,
            stream=asset.name,
            state=state,
            ts=ts,
            score=asset.score if state == "raised" else asset.max_score,
            observed=top.observed,
            expected=top.expected,
            band=top.band,
            unit=top.unit,
            model=self.model.model_id,
            contributors=contributors,
        )

    # --- inspection and persistence -----------------------------------------------------

    def channel_view(self, stream: str) -> dict[str, Any] | None:
        """What `streams` shows: baseline, scale, last expected value, readings seen."""
        c = self._channels.get(stream)
        if c is None:
            return None
        if self._kernel is not None:
            self._pull_channel(c, tail=False)
            self._pull_asset(c.asset)
        return {
            "stream": stream,
            "asset": c.asset.name,
            "baseline": c.mean,
            "scale": math.sqrt(c.var),
            "expected": _finite(c.last_expected),
            "score": c.asset.score,
            "alert": c.asset.latch.active,
            "readings": c.n,
            "warming_up": c.n <= self.config.warmup,
        }

    def channel_views(self) -> dict[str, dict[str, Any]]:
        """``channel_view`` of every stream, at once: the daemon's status snapshot builds this
        every second, so with the compiled core it is one kernel call, not a state trade per
        stream (at 10,000 streams that trade cost more than scoring a second of readings)."""
        if self._kernel is None:
            return {s: v for s in self._channels if (v := self.channel_view(s)) is not None}
        warmup = self.config.warmup
        views = {}
        for c, (mean, var, expected, n, score, active) in zip(
            self._channels.values(), self._kernel.views(), strict=True
        ):
            views[c.name] = {
                "stream": c.name,
                "asset": c.asset.name,
                "baseline": mean,
                "scale": math.sqrt(var),
                "expected": _finite(expected),
                "score": score,
                "alert": active,
                "readings": n,
                "warming_up": n <= warmup,
            }
        return views

    def snapshot(self) -> dict[str, str]:
        """JSON text per stream (and per asset, under ``asset/NAME``) for stream_state."""
        if self._kernel is not None:
            self._pull_all()
        states: dict[str, str] = {}
        for stream, c in self._channels.items():
            states[stream] = json.dumps(
                {
                    "h": base64.b64encode(self._h[c.slot].tobytes()).decode("ascii"),
                    "mean": c.mean,
                    "var": c.var,
                    "n": c.n,
                    "last_ts": _json_float(c.last_ts),
                    "interval": _json_float(c.interval),
                    "pred": _json_float(c.pred),
                    "logvar": c.logvar,
                    "calib": c.calib,
                    "slow": c.slow,
                    "drifting": c.drifting,
                    "q": c.q,
                    "reason": c.reason,
                    "run": c.run,
                    "run_max": c.run_max,
                    "last_value": c.last_value,
                    "short": c.short,
                    "recent": c.recent,
                    "n_raw": c.n_raw,
                    "level": c.level,
                    "tail": c.tail.state() if c.tail.count else None,
                    "medium": c.medium,
                    "level_medium": c.level_medium,
                    "tail_medium": c.tail_medium.state() if c.tail_medium.count else None,
                    "held": c.held,
                }
            )
        for name, asset in self._assets.items():
            states[f"asset/{name}"] = json.dumps(
                {
                    "score": asset.score,
                    "alert_id": asset.alert_id,
                    "raised_ts": asset.raised_ts,
                    "accepted": asset.accepted,
                    "max_score": asset.max_score,
                    "latch": asset.latch.state(),
                }
            )
        return states

    def restore(self, states: Mapping[str, str]) -> int:
        """Load a snapshot taken with the same model. Returns how many streams were restored;
        entries that do not parse are skipped (the stream starts fresh)."""
        if self._kernel is None:
            return self._restore(states)
        # The compiled core: the same code on the Python objects, then back into the kernel.
        self._pull_all()
        try:
            return self._restore(states)
        finally:
            self._push_all()

    def _restore(self, states: Mapping[str, str]) -> int:
        restored = 0
        for key, text in states.items():
            if key.startswith("asset/"):
                continue
            try:
                data = json.loads(text)
                h = np.frombuffer(base64.b64decode(data["h"], validate=True), np.float32)
                if h.shape != (self.model.hidden_size,) or not np.all(np.isfinite(h)):
                    continue
                fields = {
                    "mean": float(data["mean"]),
                    "var": float(data["var"]),
                    "n": int(data["n"]),
                    "last_ts": _from_json_float(data["last_ts"]),
                    "interval": _from_json_float(data["interval"]),
                    "pred": _from_json_float(data["pred"]),
                    "logvar": float(data["logvar"]),
                    "calib": float(data["calib"]),
                    "slow": float(data["slow"]),
                    "drifting": bool(data["drifting"]),
                    "q": float(data["q"]),
                    "reason": int(data["reason"]) % len(_REASONS),
                    "run": int(data["run"]),
                    "run_max": float(data["run_max"]),
                    "last_value": float(data["last_value"]),
                    "short": float(data["short"]),
                    "n_raw": int(data["n_raw"]),
                    "level": float(data["level"]),
                    # Absent from checkpoints written before the medium statistic existed.
                    "medium": float(data.get("medium", 0.0)),
                    "level_medium": float(data.get("level_medium", 0.0)),
                    "held": bool(data.get("held", False)),
                }
                recent = [float(v) for v in data["recent"]]
                if len(recent) != _BURST_WINDOW:
                    continue
                tail_data = data["tail"]
                if tail_data is None:
                    # Before 0.2 a lone stream's statistic lived in its asset's entry.
                    tail_data, recent, fields = _legacy_lone_stream(
                        states.get(f"asset/{key}"), recent, fields
                    )
                tail = TailModel(beta_floor=_SHORT_BETA_FLOOR)
                if tail_data is not None:
                    tail.restore(tail_data)
                tail_medium = TailModel(beta_floor=_MEDIUM_BETA_FLOOR)
                if data.get("tail_medium") is not None:
                    tail_medium.restore(data["tail_medium"])
            except (KeyError, TypeError, ValueError):
                continue
            c = self._channel(key)
            self._h[c.slot] = h
            for name, value in fields.items():
                setattr(c, name, value)
            c.recent, c.tail, c.tail_medium = recent, tail, tail_medium
            restored += 1
        for key, text in states.items():
            if not key.startswith("asset/"):
                continue
            asset = self._assets.get(key.removeprefix("asset/"))
            if asset is None:
                continue
            try:
                data = json.loads(text)
                asset.score = float(data["score"])
                asset.alert_id = data.get("alert_id")
                asset.max_score = float(data.get("max_score", 0.0))
                asset.raised_ts = float(data.get("raised_ts", 0.0))
                asset.accepted = bool(data.get("accepted", False))
                asset.latch.restore(data["latch"])
            except (KeyError, TypeError, ValueError):
                continue
        return restored


def _legacy_lone_stream(
    asset_text: str | None, recent: list[float], fields: dict[str, Any]
) -> tuple[Any, list[float], dict[str, Any]]:
    """A checkpoint from before 0.2 kept a lone stream's short statistic (its tail, average
    and recent ring) in the asset entry; move it to the channel, where it lives now."""
    if asset_text is None:
        return None, recent, fields
    data = json.loads(asset_text)
    if not isinstance(data, dict) or data.get("tail") is None:
        return None, recent, fields
    legacy = [float(v) for v in data.get("recent", ())]
    if len(legacy) == _BURST_WINDOW:
        recent = legacy
        fields = {**fields, "short": float(data["short"]), "n_raw": int(data.get("n_raw", 0))}
    return data["tail"], recent, fields


def _window_level(holder: _Channel, raw: float, restart: bool) -> float:
    """The statistic that is judged: a short average of the raw surprise, or for a burst of
    isolated spikes the second-largest of the last few."""
    holder.short = raw if restart else holder.short + _SHORT_ALPHA * (raw - holder.short)
    holder.recent[holder.n_raw % _BURST_WINDOW] = raw
    holder.n_raw += 1
    return max(holder.short, sorted(holder.recent)[-2])


def _squared(x: float) -> float:
    """``x ** 2`` that overflows to inf (as C's pow does) instead of raising: a baseline past
    1e154 (a reading of 1e200 from a broken sender) must not stop the detector."""
    try:
        return x**2
    except OverflowError:
        return math.inf


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else float("nan")


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _from_json_float(value: Any) -> float:
    return float("nan") if value is None else float(value)
