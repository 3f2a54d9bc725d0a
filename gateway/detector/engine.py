"""The detector: readings in, anomaly scores, alert transitions and events out. No I/O.

Adaptation happens in layers (see DESIGN.md):

1. An online baseline per channel (time-based exponentially weighted mean and variance with
   a configurable half-life, Huber-clipped so one outlier cannot drag it) turns a reading
   into a normalised value ``z``; slow drift moves the baseline, not the score.
2. The liquid (CfC) state carries each channel's recent dynamics, stepped with the real
   ``dt`` (in units of the channel's own typical interval) and predicts the next ``z`` with
   a variance. Every channel that has a reading in a tick is stepped in ONE batched call.
3. A channel's surprise is the larger of its squared prediction error (in units of the
   predicted variance, recalibrated online) and its squared distance from the baseline. An
   asset's raw score is the log of its channels' largest surprise; the anomaly likelihood
   compares a short average of the raw score with its long-run distribution (the idea of
   Numenta's anomaly likelihood) and lands in [0, 1].
4. An ``AlertLatch`` per asset adds hysteresis, minimum duration and cool-down.

While a score is elevated or an alert is open, adaptation is frozen, so a fault is not
learned as the new normal. A baseline that moves more than ``drift_threshold`` scales away
from its slow reference is reported as a ``drift`` event, not an alert. A gap longer than
``max_gap`` resets the channel (state, baseline, warm-up).
"""

from __future__ import annotations

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


@dataclass
class DetectorOutput:
    scored: list[ScoredReading] = field(default_factory=list)
    alerts: list[AlertChange] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass
class _Asset:
    name: str
    channels: list[int]
    latch: AlertLatch
    short: float = 0.0
    tail: TailModel = field(default_factory=TailModel)
    n: int = 0
    score: float = 0.0
    recent: np.ndarray = field(default_factory=lambda: np.zeros(_BURST_WINDOW))  # a ring
    n_raw: int = 0
    alert_id: str | None = None
    raised_ts: float = 0.0
    accepted: bool = False  # the open alert outlived accept_after: adapting to the new level
    max_score: float = 0.0


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
        self._asset_members = {a: list(streams) for a, streams in (assets or {}).items()}
        self._units: dict[str, str | None] = dict(units or {})
        self._slot: dict[str, int] = {}
        self._names: list[str] = []
        self._assets: dict[str, _Asset] = {}
        self._asset_of_slot: list[_Asset] = []
        hidden = model.hidden_size
        cap = 16
        self._h = np.zeros((cap, hidden), np.float32)
        self._mean = np.zeros(cap)
        self._var = np.zeros(cap)
        self._n = np.zeros(cap, np.int64)
        self._last_ts = np.full(cap, np.nan)
        self._interval = np.full(cap, np.nan)
        self._pred = np.full(cap, np.nan)
        self._logvar = np.zeros(cap)
        self._calib = np.ones(cap)
        self._slow = np.zeros(cap)
        self._drifting = np.zeros(cap, bool)
        self._q = np.zeros(cap)
        self._reason = np.zeros(cap, np.int8)
        self._run = np.zeros(cap, np.int64)
        self._run_max = np.zeros(cap)
        self._last_value = np.zeros(cap)
        self._last_expected = np.full(cap, np.nan)
        self._last_band = np.full((cap, 2), np.nan)

    # --- streams and assets -------------------------------------------------------------

    @property
    def streams(self) -> list[str]:
        return list(self._names)

    def _grow(self, cap: int) -> None:
        def grow(a: np.ndarray, fill: float) -> np.ndarray:
            shape = (cap,) + a.shape[1:]
            out = np.full(shape, fill, dtype=a.dtype)
            out[: len(a)] = a
            return out

        self._h = grow(self._h, 0.0)
        self._mean, self._var = grow(self._mean, 0.0), grow(self._var, 0.0)
        self._n = grow(self._n, 0)
        self._last_ts, self._interval = grow(self._last_ts, np.nan), grow(self._interval, np.nan)
        self._pred, self._logvar = grow(self._pred, np.nan), grow(self._logvar, 0.0)
        self._calib, self._slow = grow(self._calib, 1.0), grow(self._slow, 0.0)
        self._drifting, self._q = grow(self._drifting, False), grow(self._q, 0.0)
        self._reason, self._run = grow(self._reason, 0), grow(self._run, 0)
        self._run_max = grow(self._run_max, 0.0)
        self._last_value = grow(self._last_value, 0.0)
        self._last_expected = grow(self._last_expected, np.nan)
        self._last_band = grow(self._last_band, np.nan)

    def _slot_for(self, stream: str) -> int:
        slot = self._slot.get(stream)
        if slot is not None:
            return slot
        slot = len(self._names)
        if slot >= len(self._mean):
            self._grow(2 * len(self._mean))
        self._slot[stream] = slot
        self._names.append(stream)
        asset_name = self._asset_of_stream.get(stream, stream)
        asset = self._assets.get(asset_name)
        if asset is None:
            cfg = self.config
            latch = AlertLatch(cfg.threshold, cfg.clear_threshold, cfg.min_duration, cfg.cooldown)
            asset = _Asset(asset_name, [], latch)
            self._assets[asset_name] = asset
        asset.channels.append(slot)
        self._asset_of_slot.append(asset)
        return slot

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
        cfg = self.config
        idx = np.fromiter((self._slot_for(r.stream) for r in tick), np.int64, len(tick))
        values = np.fromiter((r.value for r in tick), float, len(tick))
        ts = np.fromiter((r.ts for r in tick), float, len(tick))

        # Gaps: a long silence resets the channel entirely.
        dt_raw = ts - self._last_ts[idx]
        gap = dt_raw > cfg.max_gap
        for j in np.flatnonzero(gap):
            self._reset_slot(int(idx[j]))
            out.events.append(
                Event("gap_reset", tick[j].stream, float(ts[j]), {"gap_s": float(dt_raw[j])})
            )
        dt_raw = np.where(np.isnan(dt_raw) | gap, np.nan, np.maximum(dt_raw, 0.0))
        dt0 = np.where(np.isnan(dt_raw), 0.0, dt_raw)

        n = self._n[idx]
        first = n == 0
        interval = self._interval[idx]
        have_dt = ~np.isnan(dt_raw)
        new_interval = np.where(
            np.isnan(interval),
            dt_raw,
            interval
            + _INTERVAL_ALPHA * (np.clip(dt_raw, 0.1 * interval, 10 * interval) - interval),
        )
        new_interval = np.where(have_dt & (new_interval > 0), new_interval, interval)
        self._interval[idx] = new_interval
        dt_model = np.where(
            have_dt & (new_interval > 0), np.clip(dt_raw / new_interval, 0.0, _DT_CLIP), 1.0
        )

        # Baseline before this reading's update: what "normal" meant up to now.
        mean = np.where(first, values, self._mean[idx])
        var = self._var[idx]
        scale = np.maximum(np.sqrt(var), _SCALE_FLOOR_REL * np.abs(mean) + _SCALE_FLOOR_ABS)
        z = np.clip((values - mean) / scale, -_Z_SCORE_CLIP, _Z_SCORE_CLIP)
        z = np.where(first, 0.0, z)

        # Surprise against the prediction made at the previous step.
        pred = self._pred[idx]
        pred_var = np.exp(self._logvar[idx]) * self._calib[idx]
        has_pred = ~np.isnan(pred) & (n >= _SCORE_FROM)
        pred0 = np.where(np.isnan(pred), 0.0, pred)
        err2 = np.where(has_pred, (z - pred0) ** 2 / pred_var, 0.0)
        judged = n >= _SCORE_FROM
        stuck = self._stuck(idx, values, n, var, mean)
        tests = np.stack([z * z, err2, np.where(stuck, _STUCK_Q, 0.0)])
        q = np.where(judged, tests.max(axis=0), 0.0)
        self._q[idx] = q
        self._reason[idx] = tests.argmax(axis=0)
        expected = np.where(np.isnan(pred), np.nan, mean + pred0 * scale)
        half_band = _BAND_SIGMAS * np.sqrt(pred_var) * scale
        self._last_value[idx] = values
        # The explanation follows whichever test the reading failed: far from the baseline
        # (expected = baseline, band = +-3 scales) or far from the model's prediction.
        by_level = (z * z >= err2) | np.isnan(expected)
        self._last_expected[idx] = np.where(by_level, mean, expected)
        half = np.where(by_level, _BAND_SIGMAS * scale, half_band)
        self._last_band[idx, 0] = self._last_expected[idx] - half
        self._last_band[idx, 1] = self._last_expected[idx] + half

        # Asset scores and alert latches, then the adaptation gate they imply.
        touched: dict[str, _Asset] = {}
        for slot in idx:
            asset = self._asset_of_slot[slot]
            touched[asset.name] = asset
        open_assets: set[str] = set()
        now = float(ts.max())
        for asset in touched.values():
            self._score_asset(asset, now, out)
            if self._elevated(asset) and not self._accepted(asset, now, out):
                open_assets.add(asset.name)
        frozen = np.fromiter(
            (self._asset_of_slot[s].name in open_assets for s in idx), bool, len(idx)
        )

        # Baseline update (time-based half-life; cumulative during warm-up; Huber-clipped).
        n1 = n + 1
        alpha_time = np.where(have_dt, 1.0 - np.exp2(-dt0 / cfg.baseline_halflife), 0.0)
        alpha = np.where(n1 <= max(cfg.warmup, 1), np.maximum(alpha_time, 1.0 / n1), alpha_time)
        alpha = np.where(frozen & ~first, 0.0, alpha)
        # Huber-clipped once warm, so one outlier cannot drag the baseline; not during warm-up,
        # where the spread must grow to its true size from a near-zero start.
        warming = n1 <= cfg.warmup
        dev = np.where(
            warming, values - mean, np.clip(values - mean, -_HUBER * scale, _HUBER * scale)
        )
        dev = np.where(first, 0.0, dev)
        new_mean = mean + alpha * dev
        new_var = np.where(first, 0.0, (1.0 - alpha) * (var + alpha * dev * dev))
        self._mean[idx] = new_mean
        self._var[idx] = new_var
        self._n[idx] = n1
        self._last_ts[idx] = ts

        # Recalibrate the model's variance to what it actually achieves on this channel.
        ratio = np.where(has_pred, np.minimum(err2 * self._calib[idx], 1e4), np.nan)
        calib_alpha = np.where(frozen, 0.0, np.maximum(1.0 / n1, 1.0 / _LONG_READINGS))
        self._calib[idx] = np.where(
            has_pred,
            np.maximum(self._calib[idx] + calib_alpha * (ratio - self._calib[idx]), 1e-3),
            self._calib[idx],
        )

        # Drift: the baseline leaving its slow reference is news, but not an alarm.
        self._check_drift(idx, new_mean, scale, dt_raw, first, frozen, tick, ts, out)

        # One batched model step for every channel in this tick.
        x = np.clip(z, -_Z_INPUT_CLIP, _Z_INPUT_CLIP).astype(np.float32).reshape(-1, 1)
        dt_in = dt_model.astype(np.float32).reshape(-1, 1)
        pred_next, logvar_next, h_new = self.model.step(x, self._h[idx], dt_in)
        self._h[idx] = h_new
        # Trained like this: input normalised with the baseline before this reading, target
        # (the next reading) with the baseline after it, which is what the next tick uses.
        self._pred[idx] = pred_next[:, 0].astype(float)
        self._logvar[idx] = logvar_next[:, 0].astype(float)

        for j, reading in enumerate(tick):
            asset = self._asset_of_slot[int(idx[j])]
            exp = float(expected[j])
            out.scored.append(
                ScoredReading(
                    reading.stream,
                    reading.ts,
                    reading.value,
                    None if math.isnan(exp) else exp,
                    asset.score,
                    asset.latch.active,
                )
            )

    def _stuck(
        self, idx: np.ndarray, values: np.ndarray, n: np.ndarray, var: np.ndarray, mean: np.ndarray
    ) -> np.ndarray:
        """Exact repeats, far longer than the longest run this channel had while healthy.
        A channel that never varied (a constant, a coarse quantiser at rest) is exempt."""
        run = self._run[idx]
        repeat = (n >= 1) & (values == self._last_value[idx])
        healthy = np.fromiter(
            (not self._elevated(self._asset_of_slot[s]) for s in idx), bool, len(idx)
        )
        warming = n <= self.config.warmup
        ended = ~repeat & (run > 0) & healthy
        run_max = self._run_max[idx]
        run_max = np.where(ended, np.maximum(run_max, run), run_max)
        new_run = np.where(repeat, run + 1, 0)
        # During warm-up an ongoing run counts too: a sensor at rest all along is normal.
        run_max = np.where(warming, np.maximum(run_max, new_run), run_max)
        self._run[idx] = new_run
        self._run_max[idx] = run_max
        varied = var > (_SCALE_FLOOR_REL * np.abs(mean) + _SCALE_FLOOR_ABS) ** 2
        limit = np.maximum(_STUCK_MIN_RUN, _STUCK_FACTOR * run_max)
        return varied & ~warming & (new_run > limit)

    def _accepted(self, asset: _Asset, ts: float, out: DetectorOutput) -> bool:
        """An alert open longer than ``accept_after`` is a new normal: adapt to it."""
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

    def _score_asset(self, asset: _Asset, ts: float, out: DetectorOutput) -> None:
        cfg = self.config
        slots = asset.channels
        judged = [s for s in slots if self._n[s] >= _SCORE_FROM]
        if not judged:
            asset.score = 0.0
            return
        raw = float(np.max(self._q[judged]))
        asset.short = raw if asset.n == 0 else asset.short + _SHORT_ALPHA * (raw - asset.short)
        asset.recent[asset.n_raw % _BURST_WINDOW] = raw
        asset.n_raw += 1
        burst = float(np.partition(asset.recent, -2)[-2])
        level = max(asset.short, burst)
        asset.score = asset.tail.score(level)
        # The first half of the warm-up is the baseline settling: not what healthy looks like.
        settled = all(self._n[s] > max(_SCORE_FROM, cfg.warmup // 2) for s in slots)
        if settled and not self._elevated(asset):
            # Learn what the statistic looks like while healthy; never from a fault.
            asset.n += 1
            asset.tail.update(level)
        warm = all(self._n[s] > cfg.warmup for s in slots)
        change = asset.latch.update(asset.score, ts, armed=warm)
        if asset.latch.active:
            asset.max_score = max(asset.max_score, asset.score)
        if change == "raised":
            asset.alert_id = uuid.uuid4().hex
            asset.max_score = asset.score
            asset.raised_ts = ts
            asset.accepted = False
        if change is not None and asset.alert_id is not None:
            out.alerts.append(self._alert(asset, change, ts))
            if change == "cleared":
                asset.alert_id = None

    def _alert(self, asset: _Asset, state: str, ts: float) -> AlertChange:
        slots = asset.channels
        q = self._q[slots]
        total = float(q.sum()) or 1.0
        order = np.argsort(-q)
        contributors = tuple(
            Contribution(
                stream=self._names[slots[i]],
                observed=float(self._last_value[slots[i]]),
                expected=_finite(self._last_expected[slots[i]]),
                band=(
                    _finite(self._last_band[slots[i], 0]),
                    _finite(self._last_band[slots[i], 1]),
                ),
                share=float(q[i]) / total,
                unit=self._units.get(self._names[slots[i]]),
                reason=_REASONS[int(self._reason[slots[i]])],
            )
            for i in order
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

    def _check_drift(
        self,
        idx: np.ndarray,
        new_mean: np.ndarray,
        scale: np.ndarray,
        dt_raw: np.ndarray,
        first: np.ndarray,
        frozen: np.ndarray,
        tick: list[Reading],
        ts: np.ndarray,
        out: DetectorOutput,
    ) -> None:
        cfg = self.config
        warm = self._n[idx] > cfg.warmup
        slow = np.where(first | ~warm, new_mean, self._slow[idx])
        a = np.where(
            warm & ~frozen,
            1.0 - np.exp2(-np.where(np.isnan(dt_raw), 0.0, dt_raw) / cfg.drift_halflife),
            0.0,
        )
        slow = slow + a * (new_mean - slow)
        self._slow[idx] = slow
        distance = np.abs(new_mean - slow) / scale
        was = self._drifting[idx]
        now = np.where(was, distance > 0.5 * cfg.drift_threshold, distance > cfg.drift_threshold)
        now &= warm
        self._drifting[idx] = now
        for j in np.flatnonzero(now & ~was):
            out.events.append(
                Event(
                    "drift",
                    tick[j].stream,
                    float(ts[j]),
                    {
                        "baseline": float(new_mean[j]),
                        "reference": float(slow[j]),
                        "scales": round(float(distance[j]), 3),
                    },
                )
            )

    def _reset_slot(self, slot: int) -> None:
        self._h[slot] = 0.0
        self._mean[slot] = self._var[slot] = 0.0
        self._n[slot] = 0
        self._interval[slot] = np.nan
        self._pred[slot] = np.nan
        self._logvar[slot] = 0.0
        self._calib[slot] = 1.0
        self._drifting[slot] = False
        self._q[slot] = 0.0
        self._run[slot] = 0
        self._run_max[slot] = 0.0

    # --- inspection and persistence -----------------------------------------------------

    def channel_view(self, stream: str) -> dict[str, Any] | None:
        """What `streams` shows: baseline, scale, last expected value, readings seen."""
        slot = self._slot.get(stream)
        if slot is None:
            return None
        asset = self._asset_of_slot[slot]
        return {
            "stream": stream,
            "asset": asset.name,
            "baseline": float(self._mean[slot]),
            "scale": float(math.sqrt(self._var[slot])),
            "expected": _finite(self._last_expected[slot]),
            "score": asset.score,
            "alert": asset.latch.active,
            "readings": int(self._n[slot]),
            "warming_up": bool(self._n[slot] <= self.config.warmup),
        }

    def snapshot(self) -> dict[str, str]:
        """JSON text per stream (and per asset, under ``asset/NAME``) for stream_state."""
        states: dict[str, str] = {}
        for stream, slot in self._slot.items():
            states[stream] = json.dumps(
                {
                    "h": self._h[slot].tolist(),
                    "mean": float(self._mean[slot]),
                    "var": float(self._var[slot]),
                    "n": int(self._n[slot]),
                    "last_ts": _json_float(self._last_ts[slot]),
                    "interval": _json_float(self._interval[slot]),
                    "pred": _json_float(self._pred[slot]),
                    "logvar": float(self._logvar[slot]),
                    "calib": float(self._calib[slot]),
                    "slow": float(self._slow[slot]),
                    "drifting": bool(self._drifting[slot]),
                    "q": float(self._q[slot]),
                    "reason": int(self._reason[slot]),
                    "run": int(self._run[slot]),
                    "run_max": float(self._run_max[slot]),
                    "last_value": float(self._last_value[slot]),
                }
            )
        for name, asset in self._assets.items():
            states[f"asset/{name}"] = json.dumps(
                {
                    "short": asset.short,
                    "tail": asset.tail.state(),
                    "n": asset.n,
                    "score": asset.score,
                    "recent": asset.recent.tolist(),
                    "n_raw": asset.n_raw,
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
                h = np.asarray(data["h"], np.float32)
                if h.shape != (self.model.hidden_size,) or not np.all(np.isfinite(h)):
                    continue
                slot = self._slot_for(key)
                self._h[slot] = h
                self._mean[slot], self._var[slot] = float(data["mean"]), float(data["var"])
                self._n[slot] = int(data["n"])
                self._last_ts[slot] = _from_json_float(data["last_ts"])
                self._interval[slot] = _from_json_float(data["interval"])
                self._pred[slot] = _from_json_float(data["pred"])
                self._logvar[slot] = float(data["logvar"])
                self._calib[slot] = float(data["calib"])
                self._slow[slot] = float(data["slow"])
                self._drifting[slot] = bool(data["drifting"])
                self._q[slot] = float(data["q"])
                self._reason[slot] = int(data["reason"])
                self._run[slot] = int(data["run"])
                self._run_max[slot] = float(data["run_max"])
                self._last_value[slot] = float(data["last_value"])
                restored += 1
            except (KeyError, TypeError, ValueError):
                continue
        for key, text in states.items():
            if not key.startswith("asset/"):
                continue
            asset = self._assets.get(key.removeprefix("asset/"))
            if asset is None:
                continue
            try:
                data = json.loads(text)
                asset.short, asset.n = float(data["short"]), int(data["n"])
                asset.tail.restore(data["tail"])
                asset.score = float(data["score"])
                recent = np.asarray(data["recent"], float)
                if recent.shape == (_BURST_WINDOW,):
                    asset.recent = recent
                    asset.n_raw = int(data.get("n_raw", 0))
                asset.alert_id = data.get("alert_id")
                asset.max_score = float(data.get("max_score", 0.0))
                asset.raised_ts = float(data.get("raised_ts", 0.0))
                asset.accepted = bool(data.get("accepted", False))
                asset.latch.restore(data["latch"])
            except (KeyError, TypeError, ValueError):
                continue
        return restored


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else float("nan")


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _from_json_float(value: Any) -> float:
    return float("nan") if value is None else float(value)
