"""The embedded demo source: realistic sensor signals with faults injected at known times.

Lets the gateway run (and be demonstrated, and scored) with no hardware. Each stream is
``level + drift + slow periodic component + noise``; the drift is ``drift_per_hour`` noise
sigmas per hour, which the detector's baseline must follow without alarming. Faults (level
shift, spike burst, variance burst, stuck sensor) start ``fault_after`` seconds after start,
then every ``fault_every`` seconds, cycling through kinds and streams; each is announced as
an ``Event("fault_injected")`` with its kind, start and end, which is the ground truth a demo
run is scored against.

Every value is a pure function of (seed, tick): ``SignalModel`` and ``simulate()`` give the
same signal offline, for tests and tools, as the paced thread in ``Simulator`` does live.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.config import SimulateSource
from gateway.records import Event, Reading
from gateway.sources.base import Sink, Source

log = logging.getLogger(__name__)

FAULT_KINDS = ("level_shift", "spike_burst", "variance_burst", "stuck")
LEVEL_SHIFT_SIGMAS = 6.0
SPIKE_SIGMAS = 8.0
SPIKE_EVERY_S = 0.5  # one spike per half second during a spike burst
VARIANCE_FACTOR = 4.0
NOISE_BLOCK = 256  # ticks of noise drawn together; any tick is reachable without replay
MAX_BACKLOG_S = 1.0  # fall further behind than this and older ticks are skipped, not burst


@dataclass(frozen=True, slots=True)
class SensorProfile:
    kind: str
    unit: str
    level: float
    sigma: float
    period_s: float  # of the slow periodic component
    amplitude_sigmas: float


PROFILES = (
    SensorProfile("temp", "degC", 21.5, 0.08, 900.0, 2.0),
    SensorProfile("pressure", "bar", 4.2, 0.015, 600.0, 1.5),
    SensorProfile("flow", "m3/h", 12.0, 0.25, 1200.0, 1.5),
    SensorProfile("vibration", "mm/s", 2.4, 0.12, 300.0, 1.0),
)


@dataclass(frozen=True, slots=True)
class Fault:
    number: int
    stream: int  # index of the stream
    kind: str
    start: float  # seconds after t0
    end: float


class SignalModel:
    """The value of every stream at tick ``k`` (time ``k / rate_hz`` after t0)."""

    def __init__(self, section: SimulateSource) -> None:
        self.section = section
        self.rate_hz = section.rate_hz
        n = section.streams
        self.profiles = [PROFILES[i % len(PROFILES)] for i in range(n)]
        self.names = [f"{section.name}-{p.kind}-{i}" for i, p in enumerate(self.profiles)]
        self.units = [p.unit for p in self.profiles]
        self._seed = section.seed % 2**63
        rng = np.random.default_rng([self._seed, 0])
        sigma = np.array([p.sigma for p in self.profiles])
        self.sigma = sigma
        self.level = np.array([p.level for p in self.profiles]) + rng.normal(0, 5, n) * sigma
        self.amplitude = np.array([p.amplitude_sigmas for p in self.profiles]) * sigma
        self.period = np.array([p.period_s for p in self.profiles]) * rng.uniform(0.8, 1.25, n)
        self.phase = rng.uniform(0, 2 * math.pi, n)
        direction = rng.choice([-1.0, 1.0], n)
        self.drift_per_s = direction * section.drift_per_hour * sigma / 3600.0
        self._block_index = -1
        self._block: np.ndarray = np.zeros((NOISE_BLOCK, n))

    def tick_time(self, k: int) -> float:
        return k / self.rate_hz

    def first_tick_at(self, t: float) -> int:
        """The first tick at or after ``t`` seconds."""
        return max(0, math.ceil(t * self.rate_hz - 1e-9))

    def noise(self, k: int) -> np.ndarray:
        block = k // NOISE_BLOCK
        if block != self._block_index:
            rng = np.random.default_rng([self._seed, 1, block])
            self._block = rng.standard_normal((NOISE_BLOCK, len(self.profiles)))
            self._block_index = block
        row: np.ndarray = self._block[k % NOISE_BLOCK]
        return row

    def clean(self, k: int) -> np.ndarray:
        t = self.tick_time(k)
        periodic = self.amplitude * np.sin(2 * math.pi * t / self.period + self.phase)
        values: np.ndarray = (
            self.level + self.drift_per_s * t + periodic + self.sigma * self.noise(k)
        )
        return values

    # --- faults --------------------------------------------------------------------------

    def fault(self, number: int) -> Fault:
        s = self.section
        start = s.fault_after + number * s.fault_every
        kind = FAULT_KINDS[number % len(FAULT_KINDS)]
        # Shift the stream every full cycle of kinds, so each kind visits every stream.
        stream = (number + number // len(FAULT_KINDS)) % s.streams
        return Fault(number, stream, kind, start, start + s.fault_length)

    def _candidates(self, t_lo: float, t_hi: float) -> list[Fault]:
        """Faults that may start between t_lo and t_hi seconds (a superset)."""
        s = self.section
        if not s.faults or t_hi < s.fault_after - 1.0:
            return []
        if s.fault_every <= 0:  # a single fault
            return [self.fault(0)]
        first = max(0, math.floor((t_lo - s.fault_after) / s.fault_every) - 1)
        last = math.floor((t_hi - s.fault_after) / s.fault_every) + 1
        return [self.fault(j) for j in range(first, max(first, last + 1))]

    def faults_starting(self, k_lo: int, k_hi: int) -> list[Fault]:
        """Faults whose first tick lies in [k_lo, k_hi)."""
        candidates = self._candidates(self.tick_time(k_lo - 1), self.tick_time(k_hi))
        return [f for f in candidates if k_lo <= self.first_tick_at(f.start) < k_hi]

    def active_faults(self, k: int) -> list[Fault]:
        """Faults covering tick k: from the first tick at or after start, to before end."""
        t = self.tick_time(k)
        candidates = self._candidates(t - self.section.fault_length - 1.0, t + 1.0)
        return [
            f for f in candidates if self.first_tick_at(f.start) <= k < self.first_tick_at(f.end)
        ]

    def values(self, k: int) -> np.ndarray:
        values = self.clean(k)
        for fault in self.active_faults(k):
            i, sigma = fault.stream, self.sigma[fault.stream]
            since = k - self.first_tick_at(fault.start)
            if fault.kind == "level_shift":
                values[i] += LEVEL_SHIFT_SIGMAS * sigma * (1 if self.drift_per_s[i] >= 0 else -1)
            elif fault.kind == "spike_burst":
                every = max(1, round(SPIKE_EVERY_S * self.rate_hz))
                if since % every == 0:
                    values[i] += SPIKE_SIGMAS * sigma * (1 if (since // every) % 2 == 0 else -1)
            elif fault.kind == "variance_burst":
                values[i] += (VARIANCE_FACTOR - 1) * sigma * self.noise(k)[i]
            else:  # stuck: the sensor repeats the value it had when the fault began
                values[i] = self.clean(self.first_tick_at(fault.start))[i]
        return values

    def announcement(self, fault: Fault, t0: float) -> Event:
        return Event(
            kind="fault_injected",
            subject=self.names[fault.stream],
            ts=t0 + fault.start,
            detail={
                "kind": fault.kind,
                "start": t0 + fault.start,
                "end": t0 + fault.end,
                "number": fault.number,
                "sigma": float(self.sigma[fault.stream]),
            },
        )

    def records(self, k: int, t0: float, source: str) -> list[Reading | Event]:
        """Tick ``k``: the announcements of faults that begin with it, then its readings."""
        out: list[Reading | Event] = [
            self.announcement(f, t0) for f in self.faults_starting(k, k + 1)
        ]
        ts = t0 + self.tick_time(k)
        values = self.values(k)
        out.extend(
            Reading(stream=name, ts=ts, value=float(v), source=source, unit=unit)
            for name, v, unit in zip(self.names, values, self.units, strict=True)
        )
        return out


def simulate(
    section: SimulateSource, t0: float, n_ticks: int, start_tick: int = 0
) -> Iterator[Reading | Event]:
    """The same records the live source produces, without threads or clocks."""
    model = SignalModel(section)
    for k in range(start_tick, start_tick + n_ticks):
        yield from model.records(k, t0, section.name)


class Simulator(Source):
    """Paces ``SignalModel`` with the wall clock, on its own thread."""

    def __init__(
        self,
        section: SimulateSource,
        sink: Sink,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(section, sink)
        self.section: SimulateSource = section
        self.model = SignalModel(section)
        self._clock = clock
        self._monotonic = monotonic
        self.t0: float | None = None  # wall-clock time of tick 0
        self._mono0 = 0.0
        self._next = 0
        self._skipped = 0
        self._max_backlog = max(1, math.ceil(section.rate_hz * MAX_BACKLOG_S))

    def start(self) -> None:
        self.t0 = self._clock()
        self._mono0 = self._monotonic()
        self._set_connected(True)
        super().start()

    def _bodies(self) -> Sequence[Callable[[], None]]:
        return [self._tick_once]

    def _extra_stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "streams": len(self.model.names),
                "ticks": self._next,
                "skipped_ticks": self._skipped,
            }

    def _cleanup(self) -> None:
        self._set_connected(False)

    def _tick_once(self) -> None:
        assert self.t0 is not None
        elapsed = self._monotonic() - self._mono0
        due = math.floor(elapsed * self.model.rate_hz) + 1  # ticks 0..due-1 are due by now
        if due <= self._next:
            self._stop.wait(max(0.0, self.model.tick_time(self._next) - elapsed))
            return
        if due - self._next > self._max_backlog:
            resume = due - self._max_backlog
            # Skipped ticks produce no readings, but their faults are still announced.
            for fault in self.model.faults_starting(self._next, resume):
                self._announce(self.model.announcement(fault, self.t0))
            with self._lock:
                self._skipped += resume - self._next
            log.warning(
                "simulate %s: %d ticks behind; skipping %d",
                self.name,
                due - self._next,
                resume - self._next,
            )
            self._next = resume
        while self._next < due and not self.stopping:
            records = self.model.records(self._next, self.t0, self.name)
            readings = [r for r in records if isinstance(r, Reading)]
            for record in records:
                if isinstance(record, Event):
                    self._announce(record)
            self._emit_readings(readings)
            with self._lock:
                self._next += 1

    def _announce(self, event: Event) -> None:
        fault = event.detail
        log.info(
            "simulate %s: injecting %s into %s for %.1f s",
            self.name,
            fault["kind"],
            event.subject,
            fault["end"] - fault["start"],
        )
        self._sink.put(event)
        with self._lock:
            self._events[event.kind] += 1
