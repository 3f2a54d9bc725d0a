"""How long each phase of a pipeline iteration took: the longest, and how many went over
the stall budget (100 ms), per phase and for whole iterations.

The pipeline's promise at scale is "no iteration longer than 100 ms" (#16 item 3); these
counters are how `status`, the metrics endpoint and `tools/soak_scale.py` check it on a
running gateway, instead of only in a benchmark. Python's garbage collector is timed too
(through ``gc.callbacks``): its pauses land in whichever phase it interrupts.
"""

from __future__ import annotations

import gc
import time
from typing import Any

STALL_S = 0.1
PHASES = ("take", "score", "checkpoint", "status", "write", "commit", "trim", "prune", "gc")


class PhaseTimes:
    """Owned by the pipeline thread; ``status`` reads a copy (plain ints and floats)."""

    def __init__(self, stall_s: float = STALL_S) -> None:
        self.stall_s = stall_s
        self.max_s: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.over: dict[str, int] = dict.fromkeys(PHASES, 0)
        self.iterations = 0
        self.iteration_max_s = 0.0
        self.iterations_over = 0
        self._gc_started = 0.0

    def add(self, phase: str, seconds: float) -> None:
        if seconds > self.max_s[phase]:
            self.max_s[phase] = seconds
        if seconds > self.stall_s:
            self.over[phase] += 1

    def iteration(self, seconds: float) -> None:
        self.iterations += 1
        if seconds > self.iteration_max_s:
            self.iteration_max_s = seconds
        if seconds > self.stall_s:
            self.iterations_over += 1

    def watch_gc(self) -> None:
        """Time every collection (of any thread: the pipeline's is the one that matters)."""
        gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.add("gc", time.perf_counter() - self._gc_started)
            self._gc_started = 0.0

    def status(self) -> dict[str, Any]:
        return {
            "stall_budget_ms": round(self.stall_s * 1000),
            "iterations": self.iterations,
            "iteration_max_ms": round(self.iteration_max_s * 1000, 1),
            "iterations_over": self.iterations_over,
            "phase_max_ms": {k: round(v * 1000, 1) for k, v in self.max_s.items()},
            "phase_over": dict(self.over),
        }
