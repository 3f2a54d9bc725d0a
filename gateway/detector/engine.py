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

While a score is elevated, adaptation is frozen for the channels that look faulty; while an
alert is open, for the channels that raised it, so a fault is not learned as the new normal
while a healthy channel of the same asset (a temperature drifting on its own) keeps following
its baseline and cannot hold the alert open forever. A baseline that moves more than ``drift_threshold`` scales away
from its slow reference is reported as a ``drift`` event, not an alert. A gap longer than
``max_gap`` resets the channel (state, baseline, warm-up).
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.config import DetectorSection
from gateway.detector.latch import AlertLatch
from gateway.detector.tail import TailModel
from gateway.model.runtime import StepModel
from gateway.records import AlertChange, Contribution, Event, Reading, ScoredReading

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
        "medium", "tail_medium", "level_medium",
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
    n: int = 0
    score: float = 0.0
    alert_id: str | None = None
    raised_ts: float = 0.0
    accepted: bool = False  # the open alert outlived accept_after: adapting to the new level
    max_score: float = 0.0
    held: frozenset[str] = frozenset()  # channels that raised the open alert: not adapting


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


class Detector:
    """Scores readings of many streams. Owned by one thread (the pipeline, or replay)."""

    def __init__(
        self,
        config: DetectorSection,
        model: StepModel,
        assets: Mapping[str, Sequence[str]] | None = None,
        units: Mapping[str, str | None] | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self._asset_of_stream = {s: a for a, streams in (assets or {}).items() for s in streams}
        self._units: dict[str, str | None] = dict(units or {})
        self._channels: dict[str, _Channel] = {}
        self._assets: dict[str, _Asset] = {}
        self._h = np.zeros((16, model.hidden_size), np.float32)

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
        asset_name = self._asset_of_stream.get(stream, stream)
        asset = self._assets.get(asset_name)
        if asset is None:
            cfg = self.config
            latch = AlertLatch(cfg.threshold, cfg.clear_threshold, cfg.min_duration, cfg.cooldown)
            asset = self._assets[asset_name] = _Asset(asset_name, latch)
        channel = self._channels[stream] = _Channel(stream, slot, asset)
        asset.channels.append(channel)
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
        varied = var > (_SCALE_FLOOR_REL * abs(mean) + _SCALE_FLOOR_ABS) ** 2
        limit = max(_STUCK_MIN_RUN, _STUCK_FACTOR * c.run_max)
        return varied and not warming and c.run > limit

    def accept_new_normal(self, asset_name: str, alert_id: str) -> bool:
        """An operator acknowledged this alert as a new normal (``alerts ack --new-normal``):
        adapt to the new level from the next reading. False when that alert is no longer open
        (already cleared, or the asset is unknown after a restart with another model)."""
        asset = self._assets.get(asset_name)
        if asset is None or not asset.latch.active or asset.alert_id != alert_id:
            return False
        asset.accepted = True
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
            return c.name in c.asset.held
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
            asset.held = frozenset(c.name for c in asset.channels if c.surprise >= _HOLD_SURPRISE)
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
            asset.n += 1
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

    def snapshot(self) -> dict[str, str]:
        """JSON text per stream (and per asset, under ``asset/NAME``) for stream_state."""
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
                }
            )
        for name, asset in self._assets.items():
            states[f"asset/{name}"] = json.dumps(
                {
                    "n": asset.n,
                    "score": asset.score,
                    "held": sorted(asset.held),
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
                asset.n = int(data["n"])
                asset.score = float(data["score"])
                names = {c.name for c in asset.channels}
                asset.held = frozenset(str(n) for n in data.get("held", ()) if n in names)
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


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else float("nan")


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _from_json_float(value: Any) -> float:
    return float("nan") if value is None else float(value)
