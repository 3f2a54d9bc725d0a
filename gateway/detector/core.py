"""The detector's arithmetic, written once: readings in, scores, alert changes and events out.

This module is the only implementation. It is plain typed Python that runs as it is, and the
build (``python -m gateway.detector.build``, also run when the wheel is built) compiles the
same file with mypyc into ``_core_compiled``, about ten times faster. ``gateway.detector``
picks the compiled build when it was made from this exact source, else this file.

One principle runs through it: **every statistic is judged against its own healthy history,
counted in readings, never in seconds**, so one default serves a 10 Hz vibration channel and an
hourly tank level, in any unit, at any scale.

Per channel (one stream), in the order a reading is handled:

1. Time. The channel's typical interval is a robust running estimate of the time between its
   readings (an average of log intervals, each step clipped to a factor of ten). Every time
   constant below is a number of typical intervals; a silence longer than ``max_gap`` (by
   default 100 intervals) restarts the model's state but keeps what was learned.
2. Baseline. A running mean and variance with a half-life of ``baseline_halflife`` (300
   intervals by default), cumulative until it has seen that many readings, turns the reading
   into ``z``. A reading that is judged faulty is clipped before it updates the baseline, and
   while an alert is open the channels that raised it do not adapt at all, so a fault is never
   learned as the new normal. Slow drift moves the baseline and is reported as a ``drift``
   event when the baseline leaves its slow reference, not as an alert.
3. Statistics. ``level`` is z squared; ``prediction`` is the squared error of the model's
   prediction of this reading (made one reading earlier from the liquid state), in units of
   the error this channel's model really achieves; ``stuck`` is an exact repeat run far longer
   than any seen while healthy. In an asset of several channels, ``relation`` is the squared
   standardised residual of the channel given all the others (a ridge regression on their
   slowly learned joint behaviour): a channel that stops moving with the others, or drifts on
   its own, breaks it even inside its normal range; all channels moving together do not.
   ``level``, ``prediction`` and ``relation`` are each also averaged over about the last 16
   readings, which finds a small shift that persists.
4. Judging (``Judge``). For every statistic the channel keeps the largest value of each block
   of 16 healthy readings, for the last 64 blocks (1,024 readings), and fits the extreme-value
   distribution of block maxima (GEV, by L-moments, its tail never lighter than Gumbel's); it
   speaks once it has learned 8 blocks. A value's surprise
   is ``-ln P(a healthy block of readings holds a value this large)``. A pattern that recurs
   (every edge of a square wave, the start of every duty cycle) is in that history, so it is
   not surprising; one far beyond it is. A block that contained an elevated reading is not
   learned, unless the elevation was brief (at most 4 blocks) and a brief one came before it
   within the memory: then the smaller of their largest values is learned as one block's
   maximum, so a surprise that recurs (the edge of a sawtooth sampled with jitter) stops
   alarming after its second time; a single flicker teaches nothing, and a fault that lasts
   is never learned.

Per asset (one stream alone, or the channels of a configured asset): the surprise is the
largest channel surprise, less ``ln(statistics)`` and ``ln(channels)`` (a Bonferroni
correction for having looked several times). The **score** is ``D / (1 + D)`` with
``D = surprise / ln 10``, "as rare as one healthy block in 10^D": 0.75 is one in a thousand,
0.9 one in 10^9. It never saturates, so it ranks. An ``AlertLatch`` adds hysteresis: a raise
needs ``min_duration`` consecutive readings at or over ``threshold``; a clear as many under
``clear_threshold``; for ``cooldown`` after a clear a new raise needs
``cooldown_min_duration`` readings. An alert stays open while the fault lasts: nothing
accepts a fault as normal unless a site sets ``accept_after`` or an operator acknowledges it
as a new normal.

The liquid model steps every channel with a reading in a tick in one batched call, with the
real elapsed time in typical intervals; its state is owned here (one row per channel).
"""

from __future__ import annotations

import base64
import bisect
import math
import struct
import uuid
from array import array
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from gateway.records import AlertChange, Contribution, Event, Reading, ScoredReading
from gateway.score import score_of

# --- constants (all counted in readings or typical intervals) ------------------------------

_F32 = struct.Struct("f")
_F32_MAX: Final = 3.4028234663852886e38

BLOCK: Final = 16  # readings per block whose maximum a judge learns
BLOCKS: Final = 64  # block maxima a judge remembers: 1,024 readings of history
# A surprise that comes and goes within this many blocks (64 readings), and comes back within
# the judge's memory, is part of the signal (the edge of a sawtooth sampled with jitter, the
# start of a duty cycle): the smaller of the two is learned. Once is not enough (a single
# flicker teaches nothing); a longer elevation is a fault and is never learned.
BRIEF_BLOCKS: Final = 4
READY_BLOCKS: Final = 8  # a judge speaks once it has learned this many blocks
MEDIUM_ALPHA: Final = 1.0 / 16.0  # the medium statistics average about the last 16 readings
# ...of values clipped here (squared scales): one wild reading moves it, but only so far.
MEDIUM_CLIP: Final = 1000.0
STAT_CLIP: Final = 1e12  # statistics are clipped here (a reading of 1e300 stays finite)
SHAPE_MAX: Final = 0.5  # the heaviest tail a judge fits (GEV shape)
# The narrowest tail a judge fits, in the statistic's units (squared scales). A value is never
# more surprising than its distance past the largest healthy ones in these units: a channel
# that sat still, and so learned maxima of 0, is not infinitely surprised by its first step.
SHORT_FLOOR: Final = 0.5  # a reading's statistic (chi-square(1) maxima are about 2 wide)
MEDIUM_FLOOR: Final = 0.1  # its average over about 16 readings (far steadier)
Z_INPUT_CLIP: Final = 8.0  # the model was trained on z in [-8, 8]
DT_MODEL_CLIP: Final = 50.0  # elapsed time the model sees, in typical intervals
SCALE_FLOOR_REL: Final = 1e-4
SCALE_FLOOR_ABS: Final = 1e-9
SCALE_FLOOR_CYCLE: Final = 0.01  # of a cycling channel's spread
# The model is never taken as more certain than a fifth of a scale (variance 0.05): below
# that its confidence only measures how smooth the signal was, not what it will do.
PRED_VAR_FLOOR: Final = 0.05
HUBER: Final = 3.0  # a reading moves the baseline by at most this many scales
INTERVAL_ALPHA: Final = 0.02  # memory of the typical-interval estimate (~50 readings)
INTERVAL_STEP: Final = math.log(10.0)  # one interval moves the estimate by at most 10x
CALIB_READINGS: Final = 1000.0  # memory of the prediction-error calibration
SCORE_FROM: Final = 30  # readings before a channel's statistics mean anything
STUCK_MIN_RUN: Final = 20
STUCK_FACTOR: Final = 3.0
STUCK_SURPRISE: Final = 30.0  # a stuck sensor is as surprising as this (nats)
RELATION_RIDGE: Final = 0.1  # ridge on the correlation matrix of the relation test
# The relation sees each channel in its own scales, where it spreads about 1. One that sat
# still while the relation learned has a spread of nearly 0 there, and dividing by it made a
# step of two scales 10^12 times too surprising (every later row tied at the top score). Its
# spread is taken as at least a fifth of a scale, as the prediction test's certainty is.
RELATION_SD_FLOOR: Final = 0.2
RELATION_MAX_CHANNELS: Final = 128  # larger assets are judged per channel only
RELATION_FROM: Final = 64  # asset ticks before the relation is first fitted
BAND_SIGMAS: Final = 3.0
HOLD_SURPRISE: Final = 4.6  # a channel this surprising (ln 100) is held at a raise

# The cycle: a channel remembers its last HISTORY raw values and looks for a period in them.
HISTORY: Final = 2048  # periods up to HISTORY // 2 readings are found
FLAG_BYTES: Final = HISTORY // 8  # the fault flags of the history, a bit each
# The history keeps a reading in 12 bits: CHUNK readings at a time are coded against their
# own range, lo + code * step (4,095 steps), the chunk being written in float32 until it is
# full. A remembered reading is off by at most half a step, 1/8,190 of its chunk's range
# (a cycle is compared to 1 % of its spread, about 1/300 of its range); 2,048 readings take
# 3.6 KB, not 8 KB. A byte a reading was too coarse: 1/510 of the range is most of that 1 %,
# and a noiseless cycle held after a fault stayed surprising.
CHUNK: Final = 64
# A code spans two bytes at most when BITS + 8 - gcd(BITS, 8) <= 16: 12 and 10 do, 11 not.
BITS: Final = 12
CODES: Final = (1 << BITS) - 1  # steps of a chunk's range
CHUNK_BYTES: Final = CHUNK * BITS // 8
CYCLE_CHECK: Final = 256  # readings between two looks for a period
CYCLE_MIN: Final = 4  # the shortest period looked for
CYCLE_ACF: Final = 0.5  # a period needs this autocorrelation...
CYCLE_DROP: Final = 0.2  # ...after the autocorrelation first fell below this
CYCLE_GAIN: Final = 0.5  # and comparing with the cycle must halve the residual variance
CYCLE_LOST: Final = 0.3  # a period whose autocorrelation falls below this is dropped
CYCLE_LOOKBACK: Final = 64  # cycles looked back past a fault, at most
CYCLE_SLIP: Final = 8  # one more neighbour of tolerance per this many cycles back
CYCLE_AGREE: Final = 3.0  # two cycles agree on a phase when this many scales apart at most


LEVEL: Final = 0
PREDICTION: Final = 1
RELATION: Final = 2
STUCK: Final = 3
REASONS: Final = ("level", "prediction", "relation", "stuck")
STATE_VERSION: Final = 2  # checkpoints of another version are not restored


def _clip(x: float, lo: float, hi: float) -> float:
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def _max(a: float, b: float) -> float:
    return a if a >= b else b


def _min(a: float, b: float) -> float:
    return a if a <= b else b


def _zeros(n: int) -> array[float]:
    """n float32 zeros, allocated at exactly that size (``array("f", bytes(...))`` keeps
    6 % more, 540 bytes of a channel's history)."""
    return array("f", [0.0]) * n


def _coded(values: Any) -> tuple[float, float, bytes]:
    """CHUNK float32 ``values`` as codes of BITS bits: (lo, step, codes), lo and step
    float32, a value read back as ``lo + code * step`` (``History``); code i is the BITS
    bits from bit ``i * BITS`` of ``codes``, read as one little-endian bit string."""
    lo = math.inf
    hi = -math.inf
    for i in range(CHUNK):
        v = float(values[i])
        lo = _min(lo, v)
        hi = _max(hi, v)
    step = _F32.unpack(_F32.pack(_min((hi - lo) / CODES, _F32_MAX)))[0]
    codes = bytearray(CHUNK_BYTES + 1)  # a byte to spare: the last code may end in it
    if step > 0.0:
        for i in range(CHUNK):
            code = int((float(values[i]) - lo) / step + 0.5)
            code = (code if code <= CODES else CODES) << ((i * BITS) & 7)
            j = (i * BITS) >> 3
            codes[j] |= code & 0xFF
            codes[j + 1] |= code >> 8
    return lo, step, bytes(codes[:CHUNK_BYTES])


def _code_at(codes: bytearray, i: int) -> int:
    """Code ``i`` of ``_coded``'s packing (its two bytes; the next may be past the end)."""
    j = (i * BITS) >> 3
    pair = codes[j] | (codes[j + 1] << 8) if j + 1 < len(codes) else codes[j]
    return (pair >> ((i * BITS) & 7)) & CODES


def _flag(flags: Any, i: int) -> bool:
    """Bit ``i`` of a bit set (bit i % 8 of byte i // 8)."""
    return ((int(flags[i >> 3]) >> (i & 7)) & 1) != 0


def _set_flag(flags: bytearray, i: int, on: bool) -> None:
    if on:
        flags[i >> 3] |= 1 << (i & 7)
    else:
        flags[i >> 3] &= 0xFF ^ (1 << (i & 7))


def _finite_or_nan(x: float) -> float:
    return x if math.isfinite(x) else math.nan


def _nan_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _none_nan(x: Any) -> float:
    return math.nan if x is None else float(x)


def _floored(var: float, mean: float) -> float:
    """A scale from a variance, floored relative to the mean: a channel that was constant is
    judged on relative, not infinite, deviations."""
    return _max(math.sqrt(var), SCALE_FLOOR_REL * abs(mean) + SCALE_FLOOR_ABS)


def _decay(steps: float, halflife: float) -> float:
    """The weight of a new reading ``steps`` intervals after the last, for a half-life."""
    return 1.0 - 2.0 ** (-steps / _max(halflife, 1e-9))


def _follow(
    mean: float,
    var: float,
    scale: float,
    x: float,
    steps: float,
    halflife: float,
    n: int,
    warm: bool,
) -> tuple[float, float]:
    """A running mean and variance after ``x``, ``steps`` intervals after the last reading:
    cumulative until ``n`` reaches a half-life of readings, then exponential; once ``warm``,
    a reading moves it by at most ``HUBER`` scales."""
    alpha = _decay(steps, halflife)
    if n <= halflife:
        alpha = _max(alpha, 1.0 / n)
    dev = x - mean
    if warm:
        dev = _clip(dev, -HUBER * scale, HUBER * scale)
    return mean + alpha * dev, (1.0 - alpha) * (var + alpha * dev * dev)  # fmt: skip


# --- judging a statistic against its own healthy history -----------------------------------


# What a judge that has learned nothing holds: never written to (``learn`` replaces them).
_NO_MAXIMA: Final = array("f")
_NO_SLOTS: Final = bytearray()


class Judge:
    """Block maxima of one statistic while healthy, and the GEV fitted to them."""

    def __init__(self, floor: float) -> None:
        self.floor = floor
        # The remembered maxima, float32 as they are learned and saved (4 bytes a value, not
        # a list of boxed floats), kept once: sorted (the fit reads them in order), with the
        # ring slot of each, a byte (the oldest is the one in slot ``pos``). Until it learns
        # (a relation judge of a stream alone never does) both are the shared empty ones.
        self.ordered: array[float] = _NO_MAXIMA
        self.slots: bytearray = _NO_SLOTS
        self.pos: int = 0
        self.block_max: float = 0.0
        self.in_block: int = 0
        self.spoiled: bool = False  # the current block saw an elevated reading
        self.held_max: float = 0.0  # the largest maximum of the elevated blocks since...
        self.held: int = 0  # ...this many blocks ago (0: the last block was healthy)
        self.brief: float = 0.0  # the maximum of the last brief elevation (0: none)...
        self.brief_age: int = 0  # ...this many healthy blocks ago
        self.loc: float = 0.0
        self.scale: float = 1.0
        self.shape: float = 0.0
        self.trust: float = 0.0
        self.ready: bool = False

    def surprise(self, value: float) -> float:
        """``-ln P(a healthy block's maximum >= value)``, 0 while not ready."""
        if not self.ready:
            return 0.0
        y = (value - self.loc) / self.scale
        if self.shape > 1e-9:
            t = 1.0 + self.shape * y
            if t <= 0.0:
                return 0.0
            log_tail = -math.log(t) / self.shape  # ln of the GEV's t(x)
        else:
            log_tail = -y
        if log_tail > 3.0:  # P(max >= value) = 1 - exp(-e^log_tail): about 1
            return 0.0
        if log_tail < -30.0:  # 1 - exp(-e) ~= e for tiny e
            return -log_tail * self.trust
        p = -math.expm1(-math.exp(log_tail))
        return (-math.log(p) if p > 0.0 else -log_tail) * self.trust

    def observe(self, value: float, learn: bool) -> None:
        """Every reading: keep the block's maximum; at the end of a block, learn it, unless
        the block saw a reading that was not to be learned (an elevated asset). A brief
        elevated stretch (``BRIEF_BLOCKS``) that follows another within the memory has the
        smaller of their maxima learned; a longer stretch is never learned."""
        if value > self.block_max:
            self.block_max = value
        if not learn:
            self.spoiled = True
        self.in_block += 1
        if self.in_block < BLOCK:
            return
        if not self.spoiled:
            if self.held:
                if self.held <= BRIEF_BLOCKS:
                    if self.brief > 0.0:
                        self.learn(_min(self.brief, self.held_max))  # it came back
                    self.brief = self.held_max
                    self.brief_age = 0
                self.held = 0
                self.held_max = 0.0
            self.brief_age += 1
            if self.brief_age > BLOCKS:
                self.brief = 0.0  # too long ago: no longer in the judge's memory
            self.learn(self.block_max)
            self.refit()
        else:
            self.held += 1
            self.held_max = _max(self.held_max, self.block_max)
        self.block_max = 0.0
        self.in_block = 0
        self.spoiled = False

    def learn(self, value: float) -> None:
        value = _F32.unpack(_F32.pack(value))[0]  # kept at the precision it is saved with
        if not self.slots:  # its own, not the shared empty ones
            self.ordered = array("f")
            self.slots = bytearray()
        elif len(self.ordered) >= BLOCKS:  # full: the oldest, in slot ``pos``, goes
            oldest = self.slots.index(self.pos)
            del self.ordered[oldest]
            del self.slots[oldest]
        at = bisect.bisect_right(self.ordered, value)
        self.ordered.insert(at, value)
        self.slots.insert(at, self.pos)
        self.pos = (self.pos + 1) % BLOCKS

    def ring(self) -> array[float]:
        """The remembered maxima in ring order (slot 0 first), as saved."""
        ring = array("f", bytes(4 * len(self.ordered)))
        for i in range(len(self.ordered)):
            ring[self.slots[i]] = self.ordered[i]
        return ring

    def set_ring(self, ring: Any) -> None:
        """Remember the maxima of ``ring`` (float32, slot 0 first, at most BLOCKS)."""
        values = [float(v) for v in ring]
        order = sorted(range(len(values)), key=values.__getitem__)
        self.ordered = array("f", [values[i] for i in order]) if values else _NO_MAXIMA
        self.slots = bytearray(order) if values else _NO_SLOTS

    def refit(self) -> None:
        """GEV by L-moments (Hosking 1985) on the remembered maxima; the tail is never fitted
        lighter than Gumbel's (a bounded tail would call everything past it impossible) nor
        heavier than shape ``SHAPE_MAX``."""
        xs = self.ordered
        n = len(xs)
        if n < READY_BLOCKS:
            self.ready = False
            return
        b0 = 0.0
        b1 = 0.0
        b2 = 0.0
        for i in range(n):
            x = xs[i]
            b0 += x
            b1 += x * i
            b2 += x * i * (i - 1)
        b0 /= n
        b1 /= n * (n - 1.0)
        b2 /= n * (n - 1.0) * (n - 2.0)
        l1 = b0
        l2 = 2.0 * b1 - b0
        l3 = 6.0 * b2 - 6.0 * b1 + b0
        self.ready = True
        if l2 <= 1e-12:  # every block had the same maximum
            self.shape = 0.0
            self.scale = self.floor
            self.loc = l1
            self.trust = 1.0 - READY_BLOCKS / (2.0 * n)
            return
        t3 = l3 / l2
        c = 2.0 / (3.0 + t3) - math.log(2.0) / math.log(3.0)
        k = _clip(7.8590 * c + 2.9554 * c * c, -SHAPE_MAX, 0.0)  # Hosking's k = -shape
        if k > -1e-6:
            scale = l2 / math.log(2.0)
            loc = l1 - 0.5772156649 * scale
            shape = 0.0
        else:
            g = math.gamma(1.0 + k)
            scale = l2 * k / ((1.0 - 2.0 ** (-k)) * g)
            loc = l1 - scale * (1.0 - g) / k
            shape = -k
        self.loc = loc
        self.scale = _max(scale, self.floor)
        self.shape = shape
        # A tail fitted to few blocks is uncertain, and a too-light one raises false alarms:
        # with n blocks the surprise is scaled by 1 - READY_BLOCKS / 2n (1/2 at the first fit).
        self.trust = 1.0 - READY_BLOCKS / (2.0 * n)

    def prefill(self, values: Any) -> None:
        """Start from the block maxima of ``values`` (oldest first), as if they had been
        observed healthy one by one; the current block starts empty."""
        blocks = len(values) // BLOCK
        tail = np.asarray(values[len(values) - blocks * BLOCK :], np.float64)
        maxima = tail.reshape(blocks, BLOCK).max(axis=1)[-BLOCKS:] if blocks else tail[:0]
        self.set_ring(np.asarray(maxima, np.float32))
        self.pos = len(self.ordered) % BLOCKS
        self.block_max = 0.0
        self.in_block = 0
        self.spoiled = False
        self.held_max = 0.0
        self.held = 0
        self.brief = 0.0
        self.brief_age = 0
        self.refit()

    def state(self) -> list[Any]:
        ring = base64.b64encode(self.ring().tobytes()).decode("ascii")
        return [ring, self.pos, self.block_max, self.in_block, self.spoiled, self.held_max,
                self.held, self.brief, self.brief_age]  # fmt: skip

    def load(self, data: Sequence[Any]) -> None:
        ring = np.frombuffer(base64.b64decode(str(data[0]), validate=True), np.float32)
        if len(ring) > BLOCKS or not np.all(np.isfinite(ring)):
            raise ValueError("judge state does not fit")
        self.set_ring(ring)
        self.pos = int(data[1]) % BLOCKS
        if len(ring) < BLOCKS and self.pos != len(ring):  # a ring fills slot by slot
            raise ValueError("judge state does not fit")
        self.block_max = float(data[2])
        self.in_block = int(data[3]) % BLOCK
        self.spoiled = bool(data[4])
        more = len(data) > 8  # saved before brief elevations were learned: none pending
        self.held_max = float(data[5]) if more else 0.0
        self.held = max(0, int(data[6])) if more else 0
        self.brief = max(0.0, float(data[7])) if more else 0.0
        self.brief_age = max(0, int(data[8])) if more else 0
        finite = math.isfinite(self.block_max) and math.isfinite(self.held_max)
        if not (finite and math.isfinite(self.brief)):
            raise ValueError("judge state does not fit")
        self.refit()


class Stat:
    """One statistic of a channel: its value for this reading, its average over about the
    last 16 readings, and a judge for each (the more surprising of the two counts)."""

    def __init__(self) -> None:
        self.raw: float = 0.0
        self.medium: float = 0.0
        self.has: bool = False  # the statistic exists for this reading
        self.short: Judge = Judge(SHORT_FLOOR)
        self.mid: Judge = Judge(MEDIUM_FLOOR)

    def set(self, value: float, has: bool) -> None:
        self.raw = _min(value, STAT_CLIP)
        self.has = has

    def surprise(self) -> float:
        """Fold this reading into the average, then judge both."""
        self.medium += MEDIUM_ALPHA * (_min(self.raw, MEDIUM_CLIP) - self.medium)
        return _max(self.short.surprise(self.raw), self.mid.surprise(self.medium))

    def observe(self, learn: bool) -> None:
        self.short.observe(self.raw, learn)
        self.mid.observe(self.medium, learn)

    def prefill(self, values: Any) -> None:
        """Judge from a stretch of this statistic's values (a channel that found its cycle
        starts its new statistics from the remembered readings, not from nothing)."""
        raw = np.minimum(np.asarray(values, np.float64), STAT_CLIP)
        medium = np.empty(len(raw))
        m = 0.0
        for i in range(len(raw)):
            m += MEDIUM_ALPHA * (min(float(raw[i]), MEDIUM_CLIP) - m)
            medium[i] = m
        self.medium = m
        self.short.prefill(raw)
        self.mid.prefill(medium)

    def reset(self) -> None:
        self.medium = 0.0
        self.has = False
        self.short = Judge(SHORT_FLOOR)
        self.mid = Judge(MEDIUM_FLOOR)

    def state(self) -> list[Any]:
        return [self.medium, self.short.state(), self.mid.state()]

    def load(self, data: Sequence[Any]) -> None:
        self.medium = float(data[0])
        if not math.isfinite(self.medium):
            raise ValueError("statistic state does not fit")
        self.short.load(data[1])
        self.mid.load(data[2])


# --- alert hysteresis -----------------------------------------------------------------------


class AlertLatch:
    """Scores in, raise/clear decisions out (river keeps a detector's score apart from its
    threshold filter in the same way). Durations count the asset's readings."""

    def __init__(
        self,
        threshold: float,
        clear_threshold: float,
        min_duration: int,
        cooldown_min_duration: int,
    ) -> None:
        self.threshold = threshold
        self.clear_threshold = clear_threshold
        self.min_duration = min_duration
        self.cooldown_min_duration = cooldown_min_duration
        self.active: bool = False
        self.above: int = 0
        self.below: int = 0
        self.cooldown_left: float = 0.0  # typical intervals of cooldown left

    def update(self, score: float, elapsed: float, cooldown: float, armed: bool) -> int:
        """One score, ``elapsed`` typical intervals after the last: 1 = raised, 2 = cleared,
        0 = no change. A raise needs ``min_duration`` readings at or over the threshold.
        During the ``cooldown`` after a clear a raise needs
        ``cooldown_min_duration`` readings (0: none at all), so a flapping signal gives one
        alert, a sustained fault still one more."""
        if self.active:
            self.below = self.below + 1 if score < self.clear_threshold else 0
            if self.below >= self.min_duration:
                self.active = False
                self.below = 0
                self.above = 0
                self.cooldown_left = cooldown
                return 2
            return 0
        self.cooldown_left = _max(0.0, self.cooldown_left - elapsed)
        self.above = self.above + 1 if score >= self.threshold else 0
        if self.cooldown_left <= 0.0:
            needed = self.min_duration
        elif self.cooldown_min_duration > 0:
            needed = max(self.min_duration, self.cooldown_min_duration)
        else:
            return 0
        if armed and self.above >= needed:
            self.active = True
            self.above = 0
            self.below = 0
            return 1
        return 0

    def state(self) -> list[Any]:
        return [self.active, self.above, self.below, self.cooldown_left]

    def load(self, data: Sequence[Any]) -> None:
        self.active = bool(data[0])
        self.above = int(data[1])
        self.below = int(data[2])
        self.cooldown_left = float(data[3])
        if not math.isfinite(self.cooldown_left):
            raise ValueError("latch state does not fit")


# --- the detector's settings, resolved ------------------------------------------------------


class Settings:
    """``DetectorSection`` as plain numbers. A time constant is either a count of typical
    intervals (``*_x``, the default) or pinned in seconds (``*_s``); exactly one is used."""

    def __init__(self, section: Any) -> None:
        self.warmup: int = int(section.warmup)
        self.threshold: float = float(section.threshold)
        self.clear_threshold: float = float(section.clear_threshold)
        self.min_duration: int = int(section.min_duration)
        self.cooldown_min_duration: int = int(section.cooldown_min_duration)
        self.drift_threshold: float = float(section.drift_threshold)
        self.baseline_x, self.baseline_s = _span(section.baseline_halflife)
        self.relation_x, self.relation_s = _span(section.relation_halflife)
        self.drift_x, self.drift_s = _span(section.drift_halflife)
        self.gap_x, self.gap_s = _span(section.max_gap)
        self.cooldown_x, self.cooldown_s = _span(section.cooldown)
        self.accept: bool = section.accept_after is not None
        self.accept_x, self.accept_s = _span(section.accept_after) if self.accept else (0.0, 0.0)


def _span(span: Any) -> tuple[float, float]:
    """(intervals, seconds): one of them is the setting, the other 0."""
    if span.per_interval:
        return float(span.value), 0.0
    return 0.0, float(span.value)


def _in_intervals(intervals: float, seconds: float, interval: float) -> float:
    """A time constant in typical intervals of a stream whose interval is ``interval`` s."""
    if seconds <= 0.0:
        return intervals
    if not interval > 0.0:
        return seconds  # no interval known yet: one reading per second
    return seconds / interval


# --- one stream -----------------------------------------------------------------------------


class History:
    """A channel's last HISTORY raw readings (less its offset), a ring whose next reading
    goes to ``pos``: the chunk of CHUNK being written as float32 (``open``), every chunk
    before it BITS a reading (``codes``, ``scales``: lo and step of each chunk). Until the
    ring is full, ``pos == count`` and ``codes`` holds the chunks written so far: a young
    stream holds what it has read. In a full ring the open chunk's slots from ``pos`` on
    still hold the readings of HISTORY ago, in their old codes."""

    def __init__(self) -> None:
        self.open: array[float] = array("f")
        self.codes: bytearray = bytearray()
        self.scales: array[float] = array("f")
        self.pos: int = 0
        self.count: int = 0

    def __getitem__(self, i: int) -> float:
        """The reading in slot ``i`` (float64)."""
        into = i - (self.pos & ~(CHUNK - 1))
        if 0 <= into < (self.pos & (CHUNK - 1)):  # written since the open chunk began
            return float(self.open[into])
        c = 2 * (i // CHUNK)
        return float(self.scales[c]) + _code_at(self.codes, i) * float(self.scales[c + 1])

    def add(self, value: float) -> None:
        if not self.open:
            self.open = _zeros(CHUNK)
        self.open[self.pos & (CHUNK - 1)] = _clip(value, -_F32_MAX, _F32_MAX)
        if self.pos & (CHUNK - 1) == CHUNK - 1:
            self.close()
        self.pos = (self.pos + 1) % HISTORY
        self.count += 1

    def close(self) -> None:
        """The open chunk is full: into codes, in its place in the ring."""
        lo, step, codes = _coded(self.open)
        start = self.pos & ~(CHUNK - 1)
        at = start * BITS // 8
        if at == len(self.codes):  # the ring is still filling: it grows, exactly
            self.codes = self.codes + codes
            self.scales = self.scales + array("f", [lo, step])
        else:
            self.codes[at : at + CHUNK_BYTES] = codes
            self.scales[2 * (start // CHUNK)] = lo
            self.scales[2 * (start // CHUNK) + 1] = step

    def held(self) -> int:
        """How many readings it holds."""
        return self.count if self.count < HISTORY else HISTORY

    def coded(self) -> int:
        """How many slots, from 0, are in ``codes``."""
        return len(self.codes) * 8 // BITS

    def values(self) -> Any:
        """Every slot, float64, slot 0 first (``held()`` of them while filling)."""
        n = self.held()
        x = np.empty(n)
        closed = self.coded()
        scales = np.frombuffer(self.scales, np.float32).astype(np.float64)
        bits = np.unpackbits(np.frombuffer(self.codes, np.uint8), bitorder="little")
        codes = bits.reshape(closed, BITS).astype(np.float64) @ (2.0 ** np.arange(BITS))
        x[:closed] = np.repeat(scales[0::2], CHUNK) + codes * np.repeat(scales[1::2], CHUNK)
        start = self.pos & ~(CHUNK - 1)
        written = self.pos & (CHUNK - 1)
        x[start : start + written] = np.frombuffer(self.open, np.float32)[:written]
        return x

    def state(self) -> list[str]:
        """The open chunk's readings, the codes and the scales, base64."""
        written = self.pos & (CHUNK - 1)
        return [
            base64.b64encode(self.open[:written].tobytes()).decode("ascii"),
            base64.b64encode(bytes(self.codes)).decode("ascii"),
            base64.b64encode(self.scales.tobytes()).decode("ascii"),
        ]

    def load(self, pos: int, count: int, saved: Sequence[Any]) -> None:
        """Restore ``state`` at ``pos`` and ``count``; ValueError if it does not fit."""
        opened = base64.b64decode(str(saved[0]), validate=True)
        codes = base64.b64decode(str(saved[1]), validate=True)
        scales = np.frombuffer(base64.b64decode(str(saved[2]), validate=True), np.float32)
        written = pos & (CHUNK - 1)
        closed = HISTORY if count >= HISTORY else count - written
        fits = len(opened) == 4 * written and len(codes) == closed * BITS // 8
        if not fits or len(scales) != 2 * (closed // CHUNK):
            raise ValueError("cycle state does not fit")
        if not (np.all(np.isfinite(scales)) and np.all(scales[1::2] >= 0.0)):
            raise ValueError("cycle state does not fit")
        self.pos = pos
        self.count = count
        self.codes = bytearray(codes)
        self.scales = array("f", scales.tobytes())
        self.open = _zeros(CHUNK)
        self.open[:written] = array("f", opened)

    def fill(self, pos: int, count: int, values: Any) -> None:
        """Start from float32 ``values``, slot 0 first (``held()`` of them: a row saved
        before the history was coded), coded as if they had been read one by one."""
        self.pos = pos
        self.count = count
        self.open = _zeros(CHUNK)
        self.codes = bytearray()
        self.scales = array("f")
        start = pos & ~(CHUNK - 1)
        closed = HISTORY if count >= HISTORY else start
        for c in range(0, closed, CHUNK):
            lo, step, codes = _coded(values[c : c + CHUNK])
            self.codes += codes
            self.scales.append(lo)
            self.scales.append(step)
        written = pos & (CHUNK - 1)
        self.open[:written] = array("f", values[start : start + written])


class Channel:
    """One stream's state: plain floats (per reading this is a few dozen arithmetic steps);
    only the liquid state lives in the engine's matrix, for the batched model step."""

    def __init__(self, name: str, slot: int, asset: Asset) -> None:
        self.name = name
        self.slot = slot
        self.asset = asset
        self.index: int = len(asset.channels)  # position in the asset
        self.unit: str | None = None
        self.n: int = 0
        self.last_ts: float = math.nan
        self.log_interval: float = math.nan
        self.mean: float = 0.0
        self.var: float = 0.0
        self.slow: float = 0.0  # the drift reference
        self.drifting: bool = False
        self.rel_mean: float = 0.0  # the relation test's slow baseline
        self.rel_var: float = 0.0
        self.u: float = 0.0  # this reading against the slow baseline
        self.pred: float = math.nan  # the model's prediction of this channel's next z
        self.logvar: float = 0.0
        self.calib: float = 1.0
        self.last_value: float = math.nan
        self.resolution: float = 0.0  # the smallest change between two readings seen
        self.run: int = 0
        self.run_max: int = 0
        self.held: bool = False  # it raised the asset's open alert: not adapting
        # The cycle: raw values, newest at hpos - 1; the period (0: none) and when it is
        # looked for next. ``ref`` is this reading's value one (or two) cycles ago.
        self.history: History = History()
        # One bit per remembered reading (bit i % 8 of byte i // 8), set: read while held,
        # not a reference. Bits, not a byte each: 256 bytes a channel, not 2,048.
        self.faulty: bytearray = bytearray(FLAG_BYTES)
        self.period: float = 0.0  # readings per cycle, 0: none
        self.cycle_at: int = CYCLE_CHECK
        self.weak: int = 0  # consecutive looks at which the period looked lost
        self.offset: float = math.nan  # history holds value - offset
        self.ref: float = 0.0
        # This reading, between the scoring and the learning halves of a tick.
        self.z: float = 0.0
        self.dt: float = math.nan  # typical intervals since the previous reading
        self.fresh: bool = False
        self.level: Stat = Stat()
        self.prediction: Stat = Stat()
        self.relation: Stat = Stat()
        self.stuck: bool = False
        self.surprise: float = 0.0
        self.reason: int = LEVEL
        self.expected: float = math.nan
        self.band_low: float = math.nan
        self.band_high: float = math.nan
        self.rel_expected: float = math.nan
        self.rel_band: float = math.nan

    @property
    def hpos(self) -> int:
        """Where the history's next reading goes."""
        return self.history.pos

    @property
    def hcount(self) -> int:
        """Readings remembered since the history started."""
        return self.history.count

    @property
    def interval(self) -> float:
        return math.exp(self.log_interval) if math.isfinite(self.log_interval) else math.nan

    @property
    def scale(self) -> float:
        """The baseline's scale, floored at half the channel's resolution (one step of a
        coarse transmitter is never a surprise on its own), at 0.01 % of the signal's own
        size (float rounding on a noiseless signal is not a deviation either) and, when the
        channel follows a cycle, at 1 % of its spread (the cycle is compared to that
        resolution: readings between its phases do not line up closer)."""
        spread = math.sqrt(self.rel_var)
        floor = SCALE_FLOOR_REL * (abs(self.rel_mean) + spread)
        if self.period > 0.0:
            floor = _max(floor, SCALE_FLOOR_CYCLE * spread)
        return _max(_max(math.sqrt(self.var), floor + SCALE_FLOOR_ABS), 0.5 * self.resolution)

    @property
    def rel_scale(self) -> float:
        return _max(_floored(self.rel_var, self.rel_mean), 0.5 * self.resolution)

    def stats(self) -> list[Stat]:
        return [self.level, self.prediction, self.relation]

    def restart(self) -> None:
        """After a long silence: the model's short memory goes, and the cycle (its phase is
        lost when readings are missing); what was learned about the levels stays."""
        self.pred = math.nan
        for stat in self.stats():
            stat.medium = 0.0
        self.run = 0
        if self.period > 0.0:
            self.period = 0.0
            self.mean = self.rel_mean
            self.var = self.rel_var
            self.level.reset()
            self.prediction.reset()
        self.history = History()
        self.faulty = bytearray(FLAG_BYTES)
        self.cycle_at = CYCLE_CHECK
        self.offset = math.nan

    # --- the cycle -------------------------------------------------------------------------

    def remember(self, value: float) -> None:
        if self.offset != self.offset:
            self.offset = value
        _set_flag(self.faulty, self.history.pos, False)
        self.history.add(value - self.offset)

    def remembers(self) -> int:
        """How many readings the history holds."""
        return self.history.held()

    def cycle_ref(self, value: float) -> float:
        """This phase of the cycle for ``value``: see ``cycle_value``."""
        have = self.remembers()
        relative = value - self.offset
        tolerance = CYCLE_AGREE * self.scale
        return self.offset + cycle_value(
            self.history, self.faulty, self.hpos, HISTORY, have, self.period, relative, tolerance
        )

    def remembered(self) -> tuple[Any, Any]:
        """The remembered values, oldest first (float64, with the offset added back), and
        which of them were read during a fault (bits, as ``faulty``)."""
        view = self.history.values()
        flags = np.unpackbits(np.frombuffer(self.faulty, np.uint8), bitorder="little")
        if self.hcount < HISTORY:
            x = view
            f = flags[: self.hcount]
        else:
            x = np.concatenate((view[self.hpos :], view[: self.hpos]))
            f = np.concatenate((flags[self.hpos :], flags[: self.hpos]))
        return x + self.offset, np.packbits(f, bitorder="little").tobytes()

    def state(self, h: Any) -> dict[str, Any]:
        history = self.history.state()
        return {
            "v": STATE_VERSION,
            "h": base64.b64encode(np.asarray(h, np.float32).tobytes()).decode("ascii"),
            "f": [
                self.n,
                _nan_none(self.last_ts),
                _nan_none(self.log_interval),
                self.mean,
                self.var,
                self.slow,
                self.drifting,
                self.rel_mean,
                self.rel_var,
                self.u,
                _nan_none(self.pred),
                self.logvar,
                self.calib,
                _nan_none(self.last_value),
                self.run,
                self.run_max,
                self.held,
                self.resolution,
            ],
            "s": [stat.state() for stat in self.stats()],
            # The coded history: [open chunk, ..., fault flags, codes, scales]. Rows saved
            # before it was coded hold the float32 readings in the first place, and 8 items.
            "c": [
                history[0],
                self.hpos,
                self.hcount,
                self.period,
                self.cycle_at,
                self.weak,
                _nan_none(self.offset),
                base64.b64encode(bytes(self.faulty)).decode("ascii"),
                history[1],
                history[2],
            ],
        }

    def load(self, data: Mapping[str, Any], hidden: int) -> Any:
        """Restore ``state``; returns the liquid state. ValueError, KeyError or TypeError if
        the entry does not fit (the caller then starts the stream fresh)."""
        if data["v"] != STATE_VERSION:
            raise ValueError("another state version")
        h = np.frombuffer(base64.b64decode(str(data["h"]), validate=True), np.float32)
        if h.shape != (hidden,) or not np.all(np.isfinite(h)):
            raise ValueError("liquid state does not fit")
        f = list(data["f"])
        if len(f) != 18 or len(data["s"]) != 3:
            raise ValueError("state does not fit")
        self.n = int(f[0])
        self.last_ts = _none_nan(f[1])
        self.log_interval = _none_nan(f[2])
        self.mean = float(f[3])
        self.var = float(f[4])
        self.slow = float(f[5])
        self.drifting = bool(f[6])
        self.rel_mean = float(f[7])
        self.rel_var = float(f[8])
        self.u = float(f[9])
        self.pred = _none_nan(f[10])
        self.logvar = float(f[11])
        self.calib = float(f[12])
        self.last_value = _none_nan(f[13])
        self.run = int(f[14])
        self.run_max = int(f[15])
        self.held = bool(f[16])
        self.resolution = float(f[17])
        numbers = [self.mean, self.var, self.slow, self.rel_mean, self.rel_var, self.u,
                   self.logvar, self.calib]  # fmt: skip
        for v in numbers:
            if not math.isfinite(v):
                raise ValueError("state does not fit")
        if self.n < 0 or self.var < 0.0 or self.rel_var < 0.0:
            raise ValueError("state does not fit")
        for stat, saved in zip(self.stats(), data["s"], strict=True):
            stat.load(saved)
        cycle = list(data["c"])
        faulty = base64.b64decode(str(cycle[7]), validate=True)
        if len(faulty) == HISTORY:  # a byte a flag, as saved before they were bits
            old = np.frombuffer(faulty, np.uint8) != 0
            faulty = np.packbits(old, bitorder="little").tobytes()
        if len(faulty) != FLAG_BYTES or len(cycle) not in (8, 10):
            raise ValueError("cycle state does not fit")
        hpos = int(cycle[1]) % HISTORY
        hcount = int(cycle[2])
        have = hcount if hcount < HISTORY else HISTORY
        if hcount < 0 or (have < HISTORY and hpos != hcount):
            raise ValueError("cycle state does not fit")
        self.history = History()
        if len(cycle) == 10:
            self.history.load(hpos, hcount, [cycle[0], cycle[8], cycle[9]])
        else:
            # Saved before the history was coded: float32 readings; before it grew, all
            # HISTORY of them, zeros past ``have``.
            history = base64.b64decode(str(cycle[0]), validate=True)
            if len(history) not in (4 * have, 4 * HISTORY):
                raise ValueError("cycle state does not fit")
            values = np.frombuffer(history[: 4 * have], np.float32)
            if not np.all(np.isfinite(values)):
                raise ValueError("cycle state does not fit")
            self.history.fill(hpos, hcount, values)
        self.faulty = bytearray(faulty)
        self.period = float(cycle[3])
        self.cycle_at = int(cycle[4])
        self.weak = int(cycle[5])
        self.offset = _none_nan(cycle[6])
        if not 0.0 <= self.period <= HISTORY // 2:
            raise ValueError("cycle state does not fit")
        return h.copy()


# --- finding a cycle --------------------------------------------------------------------


_DESIGNS: dict[int, tuple[Any, Any, Any, float]] = {}  # n -> what a line fit over n needs
_DESIGNS_MAX: Final = 32  # the history's few lengths; others are fitted without keeping


def _line_fit(x: Any) -> tuple[Any, float, float]:
    """(t, slope, intercept) of ``np.polyfit(t, x, 1)`` over t = 0..n-1, by the very same
    steps (the design matrix scaled by its column norms, ``lstsq``, the scale undone), so
    the same bits; but the design matrix and its scale depend on n only and are kept:
    polyfit's own set-up was half the cost of a look for a cycle."""
    n = len(x)
    design = _DESIGNS.get(n)
    if design is None:
        t = np.arange(n, dtype=np.float64) + 0.0
        lhs = np.vander(t, 2)
        scale = np.sqrt((lhs * lhs).sum(axis=0))
        lhs /= scale
        design = (t, lhs, scale, len(t) * float(np.finfo(t.dtype).eps))
        if len(_DESIGNS) < _DESIGNS_MAX:
            _DESIGNS[n] = design
    t, lhs, scale, rcond = design
    c = np.linalg.lstsq(lhs, np.asarray(x) + 0.0, rcond)[0]
    c = (c.T / scale).T
    return t, float(c[0]), float(c[1])


def autocorrelation(x: Any) -> Any:
    """The unbiased autocorrelation of ``x`` after removing its straight-line trend."""
    n = len(x)
    t, slope, intercept = _line_fit(x)
    y = x - (slope * t + intercept)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(y, size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n]
    if not acf[0] > 0.0:
        return np.zeros(n)
    return (acf / acf[0]) * (n / (n - t))


def find_period(acf: Any) -> float:
    """The cycle's length in readings (a fraction too), 0 for none: the first lag (within 5 % of the best)
    where the autocorrelation peaks at CYCLE_ACF or more, after it first fell below
    CYCLE_DROP (a trend or a random walk never falls, so it never has a cycle); at most half
    the remembered readings, so at least two cycles were seen."""
    n = len(acf)
    hi = n // 2
    if hi <= CYCLE_MIN:
        return 0.0
    below = np.nonzero(acf[1:hi] < CYCLE_DROP)[0]
    if below.size == 0:
        return 0.0
    lo = int(below[0]) + 1
    segment = acf[lo:hi]
    if segment.size == 0:
        return 0.0
    best = float(segment.max())
    if best < CYCLE_ACF:
        return 0.0
    period = lo + int(np.nonzero(segment >= 0.95 * best)[0][0])
    while period + 1 <= hi and acf[period + 1] > acf[period]:
        period += 1
    if period < CYCLE_MIN:
        return 0.0
    # Between readings: the vertex of the parabola through the peak and its neighbours.
    a, b, c = float(acf[period - 1]), float(acf[period]), float(acf[period + 1])
    bend = a - 2.0 * b + c
    shift = 0.5 * (a - c) / bend if bend < 0.0 else 0.0
    return period + _clip(shift, -0.5, 0.5)


def _nearest(
    x: Any, flags: Any, now: int, size: int, have: int, lag: int, width: int, value: float
) -> float:
    """Of the readings ``lag - width`` to ``lag + width`` back, the one closest to ``value``
    that was not read during a fault; nan when the reading ``lag`` back itself was (a cycle
    that held a fault at this phase is passed over whole, not by a neighbour: that would
    shift the phase by a reading)."""
    if lag > have or _flag(flags, (now - lag) % size):
        return math.nan
    best = math.nan
    for k in range(lag - width, lag + width + 1):
        if k < 1 or k > have:
            continue
        i = (now - k) % size
        if _flag(flags, i):
            continue
        v = float(x[i])
        if best != best or abs(v - value) < abs(best - value):
            best = v
    return best


def cycle_value(
    x: Any,
    flags: Any,
    now: int,
    size: int,
    have: int,
    period: float,
    value: float,
    tolerance: float,
) -> float:
    """What the cycle expects of ``value``, the reading at position ``now`` of ``x`` (a ring
    of ``size`` values holding ``have`` earlier readings, ``x[(now - k) % size]`` being the
    reading k back; ``flags`` marks those read during a fault): the mean of the same phase in
    the last two cycles that were not faulty, each taken from the reading there or a neighbour,
    whichever is closest (a cycle of 476.6 readings, or sampled with jitter, does not line up
    to the reading; the further back, the more it may have slipped: one more neighbour each
    side per CYCLE_SLIP cycles back). When those two differ by more than ``tolerance`` one of
    them is not the cycle (a pulse that went missing and was not caught: taken as the
    reference, it would come back as a fault one cycle later, and every cycle after that, as
    the true ones are passed over as faulty): the cycle before them decides, and the two of
    the three that agree best are the reference. A fault is looked past, to the cycles
    before it, so it is never its own reference; when only faulty readings are remembered,
    the last cycle is."""
    found = 0
    first = 0.0
    second = 0.0
    k = 1
    while k <= CYCLE_LOOKBACK:
        lag = int(round(k * period))
        if lag + 1 > have:
            break
        v = _nearest(x, flags, now, size, have, lag, 1 + k // CYCLE_SLIP, value)
        k += 1
        if v != v:
            continue
        if found == 0:
            first = v
            found = 1
        elif found == 1:
            if abs(v - first) <= tolerance:
                return 0.5 * (first + v)
            second = v
            found = 2
        else:
            # The two disagree: the third decides; the pair that agrees best is the reference.
            one = abs(first - second)
            two = abs(second - v)
            three = abs(first - v)
            if one <= two and one <= three:
                return 0.5 * (first + second)
            if two <= three:
                return 0.5 * (second + v)
            return 0.5 * (first + v)
    if found == 2:
        return 0.5 * (first + second)
    if found:
        return first
    return float(x[(now - min(int(round(period)), have)) % size])


def cycle_residuals(x: Any, flags: Any, period: float, tolerance: float) -> Any:
    """Every reading of ``x`` (oldest first; ``flags`` marks those read during a fault)
    after the first cycle less what the cycle expects of it, as the channel computes it
    reading by reading (``cycle_value``)."""
    n = len(x)
    lag = int(round(period))
    out = np.empty(max(n - lag - 1, 0))
    for t in range(lag + 1, n):
        value = float(x[t])
        out[t - lag - 1] = value - cycle_value(x, flags, t, n, t, period, value, tolerance)
    return out


def cycle_fit(x: Any, flags: Any, period: float) -> Any:
    """``cycle_residuals`` with the tolerance the channel would use: ``CYCLE_AGREE`` times
    the spread of the residuals of the plain two-cycle reference."""
    _, var = robust_mean_var(cycle_residuals(x, flags, period, math.inf))
    return cycle_residuals(x, flags, period, CYCLE_AGREE * math.sqrt(var))


def baseline_residuals(x: Any, halflife: float) -> Any:
    """``x`` minus a running mean with ``halflife`` readings, cumulative at first: what the
    baseline without a cycle leaves, to compare a cycle with."""
    alpha = _decay(1.0, halflife)
    out = np.empty(len(x))
    mean = float(x[0])
    for i in range(len(x)):
        v = float(x[i])
        out[i] = v - mean
        mean += _max(alpha, 1.0 / (i + 1.0)) * (v - mean)
    return out[1:]


def mean_square(r: Any) -> float:
    """The mean square of ``r`` about its median."""
    d = r - float(np.median(r))
    return float(np.mean(d * d))


def robust_mean_var(r: Any) -> tuple[float, float]:
    """Median and (1.4826 MAD)^2: what a stretch of residuals says about its baseline, not
    moved by the odd spike in it."""
    median = float(np.median(r))
    mad = 1.4826 * float(np.median(np.abs(r - median)))
    return median, mad * mad


# --- the relation between an asset's channels -----------------------------------------------


class Relation:
    """How each channel departs from what the asset's channels do together: the principal
    components of the channels' slowly learned correlation that stand above the noise
    (eigenvalue over 1: each explains more than one channel's worth) are what the channels
    share, a load change moving them all among them; a channel's residual off those
    components, in units of its own residual spread, is its relation statistic. One
    matrix-vector product per tick. Healthy readings are gathered a block at a time and
    folded into the covariance (half-life ``relation_halflife``) at the end of each block,
    when the components are also refitted. (A regression on the other channels, tried first,
    shrinks what a short history shows of a load change and calls the first one a fault; the
    components' directions are learned from much less.)"""

    def __init__(self, size: int) -> None:
        self.size = size
        self.cov: Any = np.zeros((size, size))  # E[u u'] of the slow-baseline readings
        self.weight: float = 0.0  # how much the covariance has learned (0..1)
        self.ticks: int = 0  # healthy ticks learned
        self.block: Any = np.zeros((BLOCK, size))
        self.filled: int = 0
        self.solve: Any = None  # residuals = solve @ u, standardised per channel
        # Each channel's residual spread, in u units: floats, read per tick.
        self.spread: list[float] = []
        self.shared: int = 0  # components the channels share

    def learn(self, u: Any, halflife: float) -> None:
        # Clipped like the model's input, so one wild reading cannot own the covariance.
        # (Two ufuncs into the block's row are np.clip without its Python layers, ~2 us.)
        row = self.block[self.filled]
        np.minimum(np.maximum(u, -Z_INPUT_CLIP, out=row), Z_INPUT_CLIP, out=row)
        self.filled += 1
        self.ticks += 1
        if self.filled < BLOCK:
            return
        mean_outer = (self.block.T @ self.block) / BLOCK
        alpha = _max(_decay(float(BLOCK), halflife), BLOCK / float(self.ticks))
        self.cov += alpha * (mean_outer - self.cov)
        self.weight += alpha * (1.0 - self.weight)
        self.filled = 0
        self.refit()

    def refit(self) -> None:
        if self.ticks < RELATION_FROM or self.weight <= 0.0:
            return
        cov = self.cov / self.weight
        sd = np.sqrt(np.maximum(np.diag(cov), RELATION_SD_FLOOR * RELATION_SD_FLOOR))
        corr = cov / np.outer(sd, sd)
        np.fill_diagonal(corr, 1.0)
        try:
            values, vectors = np.linalg.eigh(corr)
        except np.linalg.LinAlgError:
            return
        order = np.argsort(values)[::-1]
        values = np.maximum(values[order], 0.0)
        vectors = vectors[:, order]
        shared = int(np.count_nonzero(values > 1.0))
        shared = min(max(shared, 1), self.size - 1)
        kept = vectors[:, :shared]
        rest = vectors[:, shared:]
        # A channel's residual variance off the shared components, as the fit sees it, with
        # the ridge as a floor: a channel the components explain perfectly is not infinitely
        # sensitive.
        unexplained = np.clip((rest * rest) @ values[shared:], 0.0, 1.0)
        residual_var = unexplained + RELATION_RIDGE
        off = np.eye(self.size) - kept @ kept.T  # the residual of standardised readings
        self.solve = (off / np.sqrt(residual_var)[:, None]) / sd[None, :]
        self.spread = (np.sqrt(residual_var) * sd).tolist()
        self.shared = shared

    def residuals(self, u: Any) -> Any:
        """Standardised residual of every channel; None until fitted."""
        if self.solve is None:
            return None
        return self.solve @ u

    def state(self) -> dict[str, Any]:
        return {
            "cov": base64.b64encode(np.asarray(self.cov, np.float64).tobytes()).decode("ascii"),
            "weight": self.weight,
            "ticks": self.ticks,
            "block": base64.b64encode(
                np.asarray(self.block[: self.filled], np.float64).tobytes()
            ).decode("ascii"),
        }

    def load(self, data: Mapping[str, Any]) -> None:
        cov = np.frombuffer(base64.b64decode(str(data["cov"]), validate=True), np.float64)
        if cov.size != self.size * self.size or not np.all(np.isfinite(cov)):
            raise ValueError("relation state does not fit")
        block = np.frombuffer(base64.b64decode(str(data["block"]), validate=True), np.float64)
        if block.size % self.size or block.size >= BLOCK * self.size:
            raise ValueError("relation state does not fit")
        self.cov = cov.reshape(self.size, self.size).copy()
        self.weight = float(data["weight"])
        self.ticks = int(data["ticks"])
        self.filled = block.size // self.size
        self.block[: self.filled] = block.reshape(self.filled, self.size)
        self.refit()


# --- one asset ------------------------------------------------------------------------------


class Asset:
    def __init__(self, name: str, latch: AlertLatch) -> None:
        self.name = name
        self.latch = latch
        self.channels: list[Channel] = []
        self.cold: int = 0  # channels still in warm-up
        self.score: float = 0.0
        self.surprise: float = 0.0
        self.max_score: float = 0.0
        self.alert_id: str = ""
        self.raised_ts: float = 0.0
        self.open_for: float = 0.0  # typical intervals the open alert has lasted
        self.accepted: bool = False
        self.last_ts: float = math.nan
        self.relation: Relation | None = None
        self.u: Any = None  # the channels' latest slow-baseline readings

    def elevated(self, clear_threshold: float) -> bool:
        return self.latch.active or self.score >= clear_threshold

    def guarded(self, clear_threshold: float) -> bool:
        """Whether learning is held back: while the asset looks faulty, unless an operator
        accepted it as a new normal."""
        return self.elevated(clear_threshold) and not self.accepted

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": STATE_VERSION,
            "score": self.score,
            "surprise": self.surprise,
            "max_score": self.max_score,
            "alert_id": self.alert_id,
            "raised_ts": self.raised_ts,
            "open_for": self.open_for,
            "accepted": self.accepted,
            "last_ts": _nan_none(self.last_ts),
            "latch": self.latch.state(),
        }
        if self.relation is not None:
            data["relation"] = self.relation.state()
            data["channels"] = [c.name for c in self.channels]
        return data

    def load(self, data: Mapping[str, Any]) -> None:
        if data["v"] != STATE_VERSION:
            raise ValueError("another state version")
        self.score = float(data["score"])
        self.surprise = float(data["surprise"])
        self.max_score = float(data["max_score"])
        self.alert_id = str(data["alert_id"])
        self.raised_ts = float(data["raised_ts"])
        self.open_for = float(data["open_for"])
        self.accepted = bool(data["accepted"])
        self.last_ts = _none_nan(data["last_ts"])
        self.latch.load(data["latch"])
        relation = data.get("relation")
        if relation is not None and data.get("channels") == [c.name for c in self.channels]:
            restored = Relation(len(self.channels))
            restored.load(relation)
            self.relation = restored
            self.u = np.array([c.u for c in self.channels])


# --- the engine -----------------------------------------------------------------------------


class Output:
    """What one call produced (``DetectorOutput`` in the public API)."""

    def __init__(self) -> None:
        self.scored: list[ScoredReading] = []
        self.alerts: list[AlertChange] = []
        self.events: list[Event] = []


class RowOutput(Output):
    """What ``Engine.process_row`` produced: alert changes and events as ``Output``, and per
    value of the row, not a ``ScoredReading``, its expected value (nan: none, or the value
    was not finite and was skipped); ``score`` and ``alert`` are the asset's after the row
    (of the last value's asset), when ``scored`` values were scored at all."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.expected: list[float] = [math.nan] * size
        self.scored_values: int = 0
        self.score: float = 0.0
        self.alert: bool = False


class Engine:
    """Scores readings of many streams. Owned by one thread (the pipeline, or replay)."""

    def __init__(
        self,
        section: Any,
        model: Any,
        assets: Mapping[str, Sequence[str]] | None = None,
        units: Mapping[str, str | None] | None = None,
    ) -> None:
        self.settings = Settings(section)
        self.model = model
        self.hidden: int = int(model.hidden_size)
        self.asset_of: dict[str, str] = {}
        for asset_name, streams in (assets or {}).items():
            for stream in streams:
                self.asset_of[stream] = asset_name
        self.units: dict[str, str | None] = dict(units or {})
        self.channels: dict[str, Channel] = {}
        self.assets: dict[str, Asset] = {}
        self.free: list[int] = []  # rows of ``h`` left by forgotten channels
        self.h: Any = np.zeros((16, self.hidden), np.float32)
        self._x: Any = np.zeros((16, 1), np.float32)
        self._dt: Any = np.ones((16, 1), np.float32)
        self._hb: Any = np.zeros((16, self.hidden), np.float32)

    # --- streams and assets ---------------------------------------------------------------

    def channel(self, stream: str) -> Channel:
        found = self.channels.get(stream)
        if found is not None:
            return found
        slot = self.free.pop() if self.free else len(self.channels)
        if slot >= len(self.h):
            grown = np.zeros((2 * len(self.h), self.hidden), np.float32)
            grown[: len(self.h)] = self.h
            self.h = grown
        asset_name = self.asset_of.get(stream, stream)
        asset = self.assets.get(asset_name)
        if asset is None:
            s = self.settings
            latch = AlertLatch(
                s.threshold, s.clear_threshold, s.min_duration, s.cooldown_min_duration
            )
            asset = Asset(asset_name, latch)
            self.assets[asset_name] = asset
        c = Channel(stream, slot, asset)
        c.unit = self.units.get(stream)
        asset.channels.append(c)
        if self.settings.warmup > 0:
            asset.cold += 1
        # The relation covers every channel: it starts again when one joins.
        asset.relation = None
        asset.u = None
        self.channels[stream] = c
        self.h[slot] = 0.0
        return c

    def forget(self, stream: str) -> bool:
        """Drop a stream that is an asset of its own (a configured asset's channels stay):
        its state and its row of ``h`` are freed for another stream. False if it is not
        known or belongs to a configured asset."""
        c = self.channels.get(stream)
        if c is None or c.asset.name != stream or len(c.asset.channels) != 1:
            return False
        del self.channels[stream]
        del self.assets[stream]
        self.units.pop(stream, None)
        self.free.append(c.slot)
        c.asset.channels.clear()  # the pair is freed now, not by the collector
        return True

    # --- scoring --------------------------------------------------------------------------

    def process(self, readings: Sequence[Reading]) -> Output:
        """A batch; readings of one stream in order. The k-th reading of every stream in the
        batch forms tick k, stepped in one model call."""
        rounds: list[list[Reading]] = []
        seen: dict[str, int] = {}
        for reading in readings:
            k = seen.get(reading.stream, 0)
            seen[reading.stream] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(reading)
            if reading.unit is not None and self.units.get(reading.stream) is None:
                self.units[reading.stream] = reading.unit
                known = self.channels.get(reading.stream)
                if known is not None:
                    known.unit = reading.unit
        out = Output()
        for tick in rounds:
            self.tick(tick, out)
        return out

    def process_ticks(self, ticks: Sequence[Sequence[Reading]]) -> Output:
        """Ticks in order; each holds at most one reading per stream (replay: one row)."""
        out = Output()
        for tick in ticks:
            self.tick(tick, out)
        return out

    def process_row(self, streams: Sequence[str], ts: float, values: Sequence[float]) -> RowOutput:
        """One row of a table (replay): ``values[i]`` of ``streams[i]``, all at ``ts``, scored
        exactly as ``tick`` scores the same readings (a stream named twice starts the next
        tick; a value that is not finite is skipped), without a Reading or a ScoredReading
        made per value: at 8 channels those were an eighth of replay's time."""
        if len(streams) != len(values):
            raise ValueError(f"{len(streams)} streams but {len(values)} values")
        out = RowOutput(len(values))
        steps: list[Channel] = []
        places: list[int] = []
        timed = math.isfinite(ts)
        for i in range(len(values)):
            value = values[i]
            if not (timed and math.isfinite(value)):
                continue
            c = self.channel(streams[i])
            if c.fresh:
                self.settle_row(steps, places, out)
                steps = []
                places = []
            self.judge(c, value, ts, out)
            steps.append(c)
            places.append(i)
        self.settle_row(steps, places, out)
        return out

    def settle_row(self, steps: list[Channel], places: list[int], out: RowOutput) -> None:
        if not steps:
            return
        self.settle(steps, out)
        expected = out.expected
        for k in range(len(steps)):
            expected[places[k]] = _finite_or_nan(steps[k].expected)
        asset = steps[len(steps) - 1].asset
        out.score = asset.score
        out.alert = asset.latch.active
        out.scored_values += len(steps)

    def tick(self, tick: Sequence[Reading], out: Output) -> None:
        steps: list[Channel] = []
        readings: list[Reading] = []
        for r in tick:
            value = r.value
            ts = r.ts
            if not (math.isfinite(value) and math.isfinite(ts)):
                continue  # sources never send these; the guard keeps the state finite
            c = self.channel(r.stream)
            if c.fresh:  # a second reading of one stream: it belongs to the next tick
                self.finish(steps, readings, out)
                steps = []
                readings = []
            self.judge(c, value, ts, out)
            steps.append(c)
            readings.append(r)
        self.finish(steps, readings, out)

    def finish(self, steps: list[Channel], readings: list[Reading], out: Output) -> None:
        """Score the judged readings of one tick, learn from them, step the model."""
        if not steps:
            return
        self.settle(steps, out)
        for i in range(len(steps)):
            c = steps[i]
            r = readings[i]
            asset = c.asset
            expected = c.expected if math.isfinite(c.expected) else None
            out.scored.append(
                ScoredReading(r.stream, r.ts, r.value, expected, asset.score, asset.latch.active)
            )

    def settle(self, steps: list[Channel], out: Output) -> None:
        """Score the judged readings of one tick (``steps``, not empty), learn from them,
        step the model."""
        if len(steps) == 1:
            asset = steps[0].asset
            self.relate(asset)
            self.score(asset, out)
            self.adapt(steps[0], out)
            self.learn_relation(asset)
        else:
            touched: dict[str, Asset] = {}
            for c in steps:
                touched[c.asset.name] = c.asset
            for asset in touched.values():
                self.relate(asset)
                self.score(asset, out)
            for c in steps:
                self.adapt(c, out)
            for asset in touched.values():
                self.learn_relation(asset)
        self.step_model(steps)

    def judge(self, c: Channel, value: float, ts: float, out: Output) -> None:
        """The first half of a tick for one reading: how surprising is it?"""
        dt = self.elapse(c, ts, out)
        c.dt = dt
        n = c.n
        # The resolution first: the first step a coarse transmitter takes is one step.
        change = abs(value - c.last_value) if n > 0 else 0.0
        if change > 0.0 and (c.resolution == 0.0 or change < c.resolution):
            c.resolution = change
        ref = c.cycle_ref(value) if c.period > 0.0 else 0.0
        c.ref = ref
        c.remember(value)
        residual = value - ref
        mean = residual if n == 0 else c.mean
        scale = c.scale
        z = 0.0 if n == 0 else _clip((residual - mean) / scale, -STAT_CLIP, STAT_CLIP)
        c.z = z
        c.fresh = True
        scoring = n >= SCORE_FROM
        c.level.set(z * z, scoring)
        pred = c.pred
        has_pred = scoring and pred == pred
        err2 = 0.0
        if has_pred:
            # Never more certain than a fifth of a scale, nor than one step of the channel's
            # resolution: a coarse transmitter's next step is not predictable to the step.
            step = c.resolution / scale
            floor = _max(PRED_VAR_FLOOR, step * step)
            err2 = (z - pred) * (z - pred) / _max(math.exp(c.logvar) * c.calib, floor)
        c.prediction.set(err2, has_pred)
        c.stuck = self.is_stuck(c, value, n)
        # What an alert shows for this channel: the model's expectation (the baseline before
        # it has one) with the baseline's band.
        centre = ref + mean
        c.expected = centre + pred * scale if has_pred else centre
        c.band_low = centre - BAND_SIGMAS * scale
        c.band_high = centre + BAND_SIGMAS * scale
        c.last_value = value
        c.last_ts = ts
        c.u = 0.0 if n == 0 else _clip((value - c.rel_mean) / c.rel_scale, -STAT_CLIP, STAT_CLIP)

    def elapse(self, c: Channel, ts: float, out: Output) -> float:
        """Typical intervals since the channel's last reading (nan for a first one), after
        updating the typical interval; a silence longer than ``max_gap`` restarts the
        model's short memory."""
        dt_s = ts - c.last_ts
        if dt_s != dt_s:
            return math.nan
        if dt_s < 0.0:
            dt_s = 0.0  # a device clock stepping back: no time has passed
        interval = c.interval
        if dt_s > 0.0:
            log_dt = math.log(dt_s)
            if not math.isfinite(c.log_interval):
                c.log_interval = log_dt
            else:
                rate = _max(INTERVAL_ALPHA, 1.0 / (c.n + 1.0))
                step = _clip(log_dt - c.log_interval, -INTERVAL_STEP, INTERVAL_STEP)
                c.log_interval += rate * step
        if not interval > 0.0:
            return 1.0
        dt = dt_s / interval
        s = self.settings
        if dt > _in_intervals(s.gap_x, s.gap_s, interval):
            c.restart()
            self.h[c.slot] = 0.0
            detail = {"gap_s": dt_s, "intervals": round(dt, 1)}
            out.events.append(Event("gap_reset", c.name, ts, detail))
        return dt

    def is_stuck(self, c: Channel, value: float, n: int) -> bool:
        """Exact repeats, far longer than the longest run this channel had while healthy.
        A channel that never varied (a constant, a coarse quantiser at rest) is exempt."""
        repeat = n >= 1 and value == c.last_value
        warming = n <= self.settings.warmup
        if not repeat and c.run > 0 and not c.asset.guarded(self.settings.clear_threshold):
            c.run_max = max(c.run_max, c.run)
        c.run = c.run + 1 if repeat else 0
        if warming:
            c.run_max = max(c.run_max, c.run)  # a sensor at rest all along is normal
        floor = SCALE_FLOOR_REL * abs(c.rel_mean) + SCALE_FLOOR_ABS
        varied = c.rel_var > floor * floor
        limit = _max(float(STUCK_MIN_RUN), STUCK_FACTOR * c.run_max)
        return varied and not warming and c.run > limit

    def relate(self, asset: Asset) -> None:
        """The relation residual of every channel of a multi-channel asset in this tick."""
        channels = asset.channels
        size = len(channels)
        if size < 2 or size > RELATION_MAX_CHANNELS:
            return
        if asset.relation is None:
            asset.relation = Relation(size)
            asset.u = np.zeros(size)
        relation = asset.relation
        u = asset.u
        for c in channels:
            if c.fresh:
                u[c.index] = c.u
        found = relation.residuals(u)
        # As floats at once: indexing an array per channel costs more than the product.
        residuals: list[float] = [] if found is None else found.tolist()
        spreads = relation.spread
        for c in channels:
            if not c.fresh:
                continue
            if found is None or c.n < SCORE_FROM:
                c.relation.set(0.0, False)
                continue
            e = residuals[c.index]
            c.relation.set(e * e, True)
            # What the other channels imply, for the explanation: this reading less its
            # residual, with a band of its residual spread.
            spread = spreads[c.index]
            rel_scale = c.rel_scale
            c.rel_expected = c.rel_mean + (c.u - e * spread) * rel_scale
            c.rel_band = BAND_SIGMAS * spread * rel_scale

    def score(self, asset: Asset, out: Output) -> None:
        s = self.settings
        best = 0.0
        best_channel: Channel | None = None
        ts = asset.last_ts
        for c in asset.channels:
            if not c.fresh:
                continue
            if ts != ts or c.last_ts > ts:
                ts = c.last_ts
            self.judge_channel(c)
            if c.surprise > best:
                best = c.surprise
                best_channel = c
        interval = asset.channels[0].interval
        elapsed = 1.0
        if asset.last_ts == asset.last_ts and interval > 0.0:
            elapsed = _max(0.0, (ts - asset.last_ts) / interval)
        asset.last_ts = ts
        surprise = _max(0.0, best - math.log(len(asset.channels)))
        asset.surprise = surprise
        asset.score = score_of(surprise)
        cooldown = _in_intervals(s.cooldown_x, s.cooldown_s, interval)
        change = asset.latch.update(asset.score, elapsed, cooldown, asset.cold == 0)
        if asset.latch.active:
            asset.max_score = _max(asset.max_score, asset.score)
            asset.open_for += elapsed
        if change == 1:
            asset.alert_id = uuid.uuid4().hex
            asset.max_score = asset.score
            asset.raised_ts = ts
            asset.open_for = 0.0
            asset.accepted = False
            for c in asset.channels:
                c.held = c.surprise >= HOLD_SURPRISE or c is best_channel
            out.alerts.append(self.alert(asset, "raised", ts))
        elif change == 2:
            out.alerts.append(self.alert(asset, "cleared", ts))
            asset.alert_id = ""
            for c in asset.channels:
                c.held = False
        accept = s.accept and asset.latch.active and not asset.accepted
        if accept and asset.open_for >= _in_intervals(s.accept_x, s.accept_s, interval):
            asset.accepted = True
            detail = {"alert_id": asset.alert_id, "open_s": round(ts - asset.raised_ts, 1)}
            out.events.append(Event("new_normal", asset.name, ts, detail))

    def judge_channel(self, c: Channel) -> None:
        """The channel's surprise: its most surprising statistic, less ln(looks) (each
        statistic is looked at twice, its value and its average)."""
        looks = 0
        top = 0.0
        reason = LEVEL
        if c.level.has:
            top = c.level.surprise()
            looks += 2
        if c.prediction.has:
            surprise = c.prediction.surprise()
            looks += 2
            if surprise > top:
                top = surprise
                reason = PREDICTION
        if c.relation.has:
            surprise = c.relation.surprise()
            looks += 2
            if surprise > top:
                top = surprise
                reason = RELATION
        if c.stuck and top < STUCK_SURPRISE:
            top = STUCK_SURPRISE
            reason = STUCK
        c.surprise = _max(0.0, top - math.log(looks)) if looks > 1 else top
        c.reason = reason

    def adapt(self, c: Channel, out: Output) -> None:
        """The second half: learn from the reading, unless it must not be learned."""
        s = self.settings
        asset = c.asset
        c.fresh = False
        elevated = asset.guarded(s.clear_threshold)
        # While an alert is open the channels that raised it hold still; before that, the
        # ones that look faulty now.
        if asset.latch.active and not asset.accepted:
            frozen = c.held
        else:
            frozen = elevated and c.surprise >= HOLD_SURPRISE
        learn = not elevated
        if c.level.has:
            c.level.observe(learn)
        if c.prediction.has:
            c.prediction.observe(learn)
        if c.relation.has:
            c.relation.observe(learn)
        # A cycle is not learned from a fault either: a held channel's readings are marked,
        # and the cycle looks past them, or the fault would come back one period later as the
        # reference. (Without a cycle yet nothing is marked: the values may reveal one.)
        if frozen and c.period > 0.0:
            _set_flag(c.faulty, (c.hpos - 1) % HISTORY, True)
        first = c.n == 0
        c.n += 1
        if c.n == s.warmup:
            asset.cold -= 1
        interval = c.interval
        steps = 0.0 if c.dt != c.dt else _min(c.dt, DT_MODEL_CLIP)
        value = c.last_value
        if first:
            c.mean = value
            c.rel_mean = value
            c.slow = value
            return
        residual = value - c.ref
        warm = c.n > s.warmup
        # Baseline: cumulative until it has seen a half-life of readings, then exponential;
        # once warm, a reading moves it by at most HUBER scales.
        halflife = _in_intervals(s.baseline_x, s.baseline_s, interval)
        if not frozen:
            c.mean, c.var = _follow(
                c.mean, c.var, c.scale, residual, steps, halflife, c.n, warm
            )  # fmt: skip
            # The relation's slow baseline, on the same terms with its own half-life.
            rel_half = _in_intervals(s.relation_x, s.relation_s, interval)
            c.rel_mean, c.rel_var = _follow(
                c.rel_mean, c.rel_var, c.rel_scale, value, steps, rel_half, c.n, warm
            )  # fmt: skip
        # Recalibrate the model's variance to the error it really achieves on this channel.
        if c.prediction.has and not frozen:
            ratio = _min(c.prediction.raw * c.calib, 1e4)
            rate = _max(1.0 / c.n, 1.0 / CALIB_READINGS)
            c.calib = _max(c.calib + rate * (ratio - c.calib), 1e-3)
        self.track_drift(c, warm, frozen, steps, interval, out)
        if c.hcount >= c.cycle_at:
            c.cycle_at = c.hcount + CYCLE_CHECK
            if not (frozen and c.period > 0):  # a cycle does not change while it is faulty
                self.look_for_cycle(c)

    def look_for_cycle(self, c: Channel) -> None:
        """Find the channel's cycle in what it remembers; compare readings with the same
        phase of it when that halves the residual variance. A cycle that fades is dropped."""
        x, flags = c.remembered()
        if len(x) < 8 * CYCLE_MIN:
            return
        acf = autocorrelation(x)
        period = find_period(acf)
        if c.period > 0:
            if acf[int(round(c.period))] >= CYCLE_LOST:
                c.weak = 0
                if period == 0.0 or abs(period - c.period) <= 1.0:
                    return
                # A clearly better cycle replaces the current one. (By the mean square: a
                # noiseless pattern of flat stretches leaves most residuals at exactly 0 under
                # either period, and their median absolute size cannot tell them apart.)
                now = mean_square(cycle_fit(x, flags, c.period))
                new = mean_square(cycle_fit(x, flags, period))
                if new < CYCLE_GAIN * now:
                    self.use_cycle(c, x, flags, period)
                return
            c.weak += 1
            if c.weak >= 2:
                self.use_cycle(c, x, flags, 0.0)
            return
        if period == 0.0:
            return
        _, var = robust_mean_var(cycle_fit(x, flags, period))
        halflife = _in_intervals(self.settings.baseline_x, self.settings.baseline_s, c.interval)
        _, plain = robust_mean_var(baseline_residuals(x, halflife))
        if var < CYCLE_GAIN * plain:
            self.use_cycle(c, x, flags, period)

    def use_cycle(self, c: Channel, x: Any, flags: Any, period: float) -> None:
        """Switch the channel's reference (a cycle of ``period`` readings, or none) and start
        its baseline and statistics from the remembered readings, as the new reference sees
        them; the model's state starts again (its input changed meaning)."""
        c.period = period
        c.weak = 0
        residuals = cycle_fit(x, flags, period) if period > 0.0 else x[-BLOCK * READY_BLOCKS :]
        mean, var = robust_mean_var(residuals)
        c.mean = mean
        c.var = var
        c.slow = mean
        c.drifting = False
        z = (residuals - mean) / c.scale
        c.level.prefill(z * z)
        # The model's input changed meaning: its state and judges start again.
        c.prediction.reset()
        c.pred = math.nan
        self.h[c.slot] = 0.0

    def track_drift(
        self, c: Channel, warm: bool, frozen: bool, steps: float, interval: float, out: Output
    ) -> None:
        """The baseline leaving its slow reference is news (a ``drift`` event), not an alarm."""
        s = self.settings
        if not warm:
            c.slow = c.mean
        elif not frozen:
            c.slow += _decay(steps, _in_intervals(s.drift_x, s.drift_s, interval)) * (
                c.mean - c.slow
            )
        distance = abs(c.mean - c.slow) / c.scale
        was = c.drifting
        limit = 0.5 * s.drift_threshold if was else s.drift_threshold
        c.drifting = warm and distance > limit
        if c.drifting and not was:
            detail = {"baseline": c.mean, "reference": c.slow, "scales": round(distance, 3)}
            out.events.append(Event("drift", c.name, c.last_ts, detail))

    def learn_relation(self, asset: Asset) -> None:
        """Once per tick of a multi-channel asset, while healthy and every channel has a
        baseline."""
        relation = asset.relation
        if relation is None or asset.guarded(self.settings.clear_threshold):
            return
        for c in asset.channels:
            if c.n < SCORE_FROM:
                return  # a baseline of a few readings scales u absurdly
        s = self.settings
        interval = asset.channels[0].interval
        relation.learn(asset.u, _in_intervals(s.relation_x, s.relation_s, interval))

    def step_model(self, steps: list[Channel]) -> None:
        """One batched model step for every channel in the tick: the prediction of each
        channel's next z, in the baseline after this reading (what the next tick uses).
        When the tick's channels hold consecutive rows of the state (every row of a replay
        file, a whole asset) the state goes in and out as a slice, not a gathered copy."""
        b = len(steps)
        if b > len(self._x):
            cap = 1 << (b - 1).bit_length()
            self._x = np.zeros((cap, 1), np.float32)
            self._dt = np.ones((cap, 1), np.float32)
            self._hb = np.zeros((cap, self.hidden), np.float32)
        x = self._x[:b]
        dt = self._dt[:b]
        first = steps[0].slot
        contiguous = True
        for i in range(b):
            c = steps[i]
            if c.slot != first + i:
                contiguous = False
            x[i, 0] = _clip(c.z, -Z_INPUT_CLIP, Z_INPUT_CLIP)
            d = c.dt
            dt[i, 0] = 1.0 if d != d else _clip(d, 0.0, DT_MODEL_CLIP)
        if contiguous:
            pred, logvar, h_new = self.model.step(x, self.h[first : first + b], dt)
            self.h[first : first + b] = h_new
        else:
            slots = [c.slot for c in steps]
            hb = self._hb[:b]
            hb[:] = self.h[slots]
            pred, logvar, h_new = self.model.step(x, hb, dt)
            self.h[slots] = h_new
        if b == 1:
            c = steps[0]
            c.pred = float(pred[0, 0])
            c.logvar = float(logvar[0, 0])
            return
        preds = pred[:, 0].tolist()
        logvars = logvar[:, 0].tolist()
        for i in range(b):
            c = steps[i]
            c.pred = float(preds[i])
            c.logvar = float(logvars[i])

    def alert(self, asset: Asset, state: str, ts: float) -> AlertChange:
        surprises = [_max(c.surprise, 0.0) for c in asset.channels]
        total = sum(surprises) or 1.0
        order = sorted(range(len(asset.channels)), key=lambda i: -surprises[i])
        contributors = []
        for i in order:
            c = asset.channels[i]
            if c.reason == RELATION and math.isfinite(c.rel_expected):
                expected = c.rel_expected
                low = expected - c.rel_band
                high = expected + c.rel_band
            else:
                expected = c.expected
                low = c.band_low
                high = c.band_high
            contributors.append(
                Contribution(
                    stream=c.name,
                    observed=c.last_value,
                    expected=_finite_or_nan(expected),
                    band=(_finite_or_nan(low), _finite_or_nan(high)),
                    share=surprises[i] / total,
                    unit=c.unit,
                    reason=REASONS[c.reason],
                )
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
            model=str(self.model.model_id),
            contributors=tuple(contributors),
        )

    # --- operator actions, inspection, persistence --------------------------------------------

    def accept_new_normal(self, asset_name: str, alert_id: str) -> bool:
        asset = self.assets.get(asset_name)
        if asset is None or not asset.latch.active or asset.alert_id != alert_id:
            return False
        asset.accepted = True
        for c in asset.channels:
            c.held = False
        return True

    def view(self, c: Channel) -> dict[str, Any]:
        return {
            "stream": c.name,
            "asset": c.asset.name,
            "baseline": c.mean,
            "scale": math.sqrt(c.var),
            "expected": _finite_or_nan(c.expected),
            "score": c.asset.score,
            "alert": c.asset.latch.active,
            "readings": c.n,
            "warming_up": c.n < self.settings.warmup,
            "interval_s": _finite_or_nan(c.interval),
            "cycle_readings": c.period if c.period > 0.0 else None,
        }

    def snapshot(self, streams: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """The state of every stream and asset, or of ``streams`` and their assets."""
        states: dict[str, dict[str, Any]] = {}
        chosen = list(self.channels.values())
        if streams is not None:
            chosen = [self.channels[s] for s in streams if s in self.channels]
        assets: dict[str, Asset] = {}
        for c in chosen:
            states[c.name] = c.state(self.h[c.slot])
            assets[c.asset.name] = c.asset
        for name, asset in assets.items():
            states[f"asset/{name}"] = asset.state()
        return states

    def restore(self, states: Mapping[str, Mapping[str, Any]]) -> int:
        """Load a snapshot: streams first (an entry that does not fit is skipped, the stream
        starts fresh), then assets. Returns how many streams were restored."""
        restored = 0
        for key, data in states.items():
            if key.startswith("asset/"):
                continue
            probe = Channel(key, -1, Asset("", AlertLatch(0.5, 0.5, 1, 0)))
            try:
                probe.load(data, self.hidden)
            except (KeyError, TypeError, ValueError, IndexError):
                continue
            c = self.channel(key)
            self.h[c.slot] = c.load(data, self.hidden)
            if c.n >= self.settings.warmup and self.settings.warmup > 0:
                c.asset.cold -= 1
            restored += 1
        for key, data in states.items():
            if not key.startswith("asset/"):
                continue
            asset = self.assets.get(key[len("asset/") :])
            if asset is None:
                continue
            try:
                asset.load(data)
            except (KeyError, TypeError, ValueError, IndexError):
                asset.relation = None
                asset.u = None
        return restored
