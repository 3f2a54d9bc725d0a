"""The detector as the rest of the gateway sees it: ``Detector``, over one of two builds of the
same source, ``core.py`` (see its docstring for what the detector does).

``compiled`` is ``core.py`` compiled by mypyc into ``_core_compiled`` (``python -m
gateway.detector.build``, also run when the wheel is built where a C compiler exists). It is
used only when it was built from this exact ``core.py`` (the build stamps the source's SHA-256
into it), so an edit never runs against a stale build. ``python`` is ``core.py`` itself. Both
give the same results; the compiled one is about ten times faster. The default is the compiled
build when there is a current one, unless ``LIQUID_GATEWAY_PURE=1``.

Why mypyc (measured on a prototype of the per-reading work, 1 channel): interpreted 1.17 us,
mypyc 0.10 us, Cython on the same plain annotations 1.08 us, Cython with ``cclass`` and C math
cimports 0.10 us. mypyc reaches Cython's best on the plain typed Python that mypy already
checks, with no second dialect in the source and nothing extra to run it interpreted.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from gateway import statecodec
from gateway.config import DetectorSection
from gateway.detector import core as _python_core
from gateway.model.runtime import StepModel
from gateway.records import Reading

CORES = ("python", "compiled")
PURE_ENV = "LIQUID_GATEWAY_PURE"
SOURCE = Path(__file__).with_name("core.py")

DetectorOutput = _python_core.Output
MAX_UNREADABLE_KEYS = 1000  # unreadable checkpoint rows named for dead letters at once


def source_sha256() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def _load_compiled() -> tuple[ModuleType | None, str]:
    """The compiled build and "", or None and why not."""
    try:
        from gateway.detector import _core_compiled  # type: ignore[attr-defined]
    except ImportError:
        return None, "not built"
    if SOURCE.is_file() and getattr(_core_compiled, "COMPILED_FROM", None) != source_sha256():
        return None, "built from another version of core.py"
    return _core_compiled, ""


_compiled, COMPILED_PROBLEM = _load_compiled()


def compiled_core_available() -> bool:
    return _compiled is not None


def default_core() -> str:
    """``compiled`` when a current build exists and ``LIQUID_GATEWAY_PURE`` is not set."""
    if os.environ.get(PURE_ENV, "").strip() not in ("", "0") or _compiled is None:
        return "python"
    return "compiled"


def core_module(core: str | None = None) -> ModuleType:
    """The module of one build; ``None``: the default."""
    core = default_core() if core is None else core
    if core not in CORES:
        raise ValueError(f"unknown detector core {core!r}; choose one of {', '.join(CORES)}")
    if core == "compiled":
        if _compiled is None:
            raise ValueError(
                f"the compiled detector core is {COMPILED_PROBLEM} here "
                "(python -m gateway.detector.build)"
            )
        return _compiled
    return _python_core


class Detector:
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
        module = core_module(core)
        self.core = "compiled" if module is _compiled else "python"
        self.config = config
        self.model = model
        # ``admit`` refuses readings of new streams past this (None: no limit); the pipeline
        # sets it from limits.max_streams.
        self.max_streams: int | None = None
        self._engine: Any = module.Engine(config, model, assets, units)
        # When each stream last had a reading (monotonic), for `since` and `forget_idle`.
        self._seen: dict[str, float] = {}
        # Where the state of a stream not yet seen since start comes from (``restore_lazily``).
        self._stored: Callable[[list[str]], Mapping[str, str | bytes]] | None = None
        self.restored = 0  # streams whose checkpointed state was loaded
        self.unreadable = 0  # checkpoint rows that did not decode (see ``restore``)
        self.unreadable_keys: list[tuple[str, str]] = []  # (key, why), taken by the pipeline
        self._loose = 0  # admitted streams of no configured asset

    @property
    def streams(self) -> list[str]:
        return list(self._engine.channels)

    def admit(
        self, readings: Sequence[Reading], now: float | None = None
    ) -> tuple[list[Reading], list[Reading]]:
        """(readings to score, readings refused because their stream would be one past
        ``max_streams``). The streams of configured assets always have their place (the
        config cannot name more than the limit). A stream's first reading here loads its
        checkpointed state if ``restore_lazily`` said where from; every admitted stream is
        marked as seen now."""
        now = time.monotonic() if now is None else now
        seen = self._seen
        configured = self._engine.asset_of
        room = None if self.max_streams is None else self.max_streams - len(configured)
        kept: list[Reading] = []
        refused: list[Reading] = []
        new: list[str] = []
        for r in readings:
            stream = r.stream
            if stream not in seen:
                if stream not in configured:
                    if room is not None and self._loose >= room:
                        refused.append(r)
                        continue
                    self._loose += 1
                new.append(stream)
            seen[stream] = now
            kept.append(r)
        if new and self._stored is not None:
            wanted = [s for s in new if s not in self._engine.channels]
            wanted += [f"asset/{s}" for s in wanted if s not in configured]
            if wanted:
                self.restore(self._stored(wanted))
        return kept, refused

    def restore_lazily(self, stored: Callable[[list[str]], Mapping[str, str | bytes]]) -> None:
        """Load a stream's checkpointed state when it first sends a reading (``stored``
        gives the entries of the keys asked for), not every stream at start: start-up time
        does not grow with the number of streams ever seen."""
        self._stored = stored

    def forget_idle(self, idle_s: float, now: float | None = None) -> list[str]:
        """Forget the streams without a reading for ``idle_s``: their state leaves memory and
        their place under ``max_streams`` is free. Streams of configured assets stay.
        Returns the names forgotten."""
        now = time.monotonic() if now is None else now
        engine = self._engine
        configured = engine.asset_of
        gone = [s for s, t in self._seen.items() if now - t > idle_s and s not in configured]
        for stream in gone:
            engine.forget(stream)
            del self._seen[stream]
            self._loose -= 1
        return gone

    @property
    def tracked(self) -> int:
        """Streams that have a place under ``max_streams`` (admitted, not forgotten)."""
        return len(self._seen)

    def process(self, readings: Sequence[Reading]) -> Any:
        """Score a batch; readings of one stream are taken in order. Returns a
        ``DetectorOutput`` (scored readings, alert changes, events)."""
        return self._engine.process(readings)

    def process_ticks(self, ticks: Sequence[Sequence[Reading]]) -> Any:
        """Score ticks in order, each at most one reading per stream (replay: one row)."""
        return self._engine.process_ticks(ticks)

    def process_row(self, streams: Sequence[str], ts: float, values: Sequence[float]) -> Any:
        """One row of a table (replay): ``values[i]`` of ``streams[i]`` at ``ts``, scored as
        ``process_ticks`` scores that tick. Returns a ``RowOutput``: alert changes and
        events, and per value its expected value (nan: none, or skipped as not finite) in
        ``expected``, with the asset's ``score`` and ``alert`` after the row; no scored
        readings (their objects were an eighth of replay's time at 8 channels)."""
        return self._engine.process_row(streams, ts, values)

    def set_unit(self, stream: str, unit: str | None) -> None:
        if unit is None:
            return
        self._engine.units[stream] = unit
        channel = self._engine.channels.get(stream)
        if channel is not None:
            channel.unit = unit

    def accept_new_normal(self, asset_name: str, alert_id: str) -> bool:
        """An operator acknowledged this alert as a new normal (``alerts ack --new-normal``):
        adapt to the new level from the next reading. False when that alert is no longer open
        (already cleared, or the asset is unknown after a restart with another model)."""
        return bool(self._engine.accept_new_normal(asset_name, alert_id))

    def channel_view(self, stream: str) -> dict[str, Any] | None:
        """What `streams` shows: baseline, scale, last expected value, readings seen."""
        channel = self._engine.channels.get(stream)
        return None if channel is None else dict(self._engine.view(channel))

    def channel_views(self) -> dict[str, dict[str, Any]]:
        engine = self._engine
        return {name: dict(engine.view(c)) for name, c in engine.channels.items()}

    def snapshot(self, since: float | None = None) -> dict[str, str]:
        """JSON text per stream (and per asset, under ``asset/NAME``); with ``since``
        (monotonic) only of the streams ``admit`` saw since then, and their assets. The
        readable form (tests, parity of the two builds); checkpoints use ``states``."""
        streams = None if since is None else self.changed_since(since)
        states = self._engine.snapshot(streams)
        return {key: json.dumps(state) for key, state in states.items()}

    def changed_since(self, since: float) -> list[str]:
        """The streams ``admit`` saw at or after ``since`` (monotonic): those whose state
        changed, so the only ones an incremental checkpoint needs to write."""
        return [s for s, t in self._seen.items() if t >= since]

    def states(self, streams: Sequence[str]) -> dict[str, bytes]:
        """Checkpoint rows (``gateway.statecodec``) of ``streams`` and of their assets."""
        return {key: statecodec.encode(s) for key, s in self._engine.snapshot(streams).items()}

    def restore(self, states: Mapping[str, str | bytes]) -> int:
        """Load checkpoint rows taken with the same model (binary, or the JSON text of older
        releases). Returns how many streams were restored. A row that does not decode is
        quarantined: counted in ``unreadable`` and its key kept in ``unreadable_keys`` (for
        a dead letter), and the stream starts fresh; so does one of another state version."""
        parsed: dict[str, Any] = {}
        for key, row in states.items():
            try:
                data = statecodec.decode(row)
            except (statecodec.StateDecodeError, TypeError) as exc:
                self.unreadable += 1
                if len(self.unreadable_keys) < MAX_UNREADABLE_KEYS:
                    self.unreadable_keys.append((key, str(exc)[:200]))
                continue
            if isinstance(data, dict):
                parsed[key] = data
        restored = int(self._engine.restore(parsed))
        self.restored += restored
        return restored
