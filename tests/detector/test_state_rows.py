"""A warm stream's state is compact (#16 item 4): its fault flags are bits, its judges'
maxima float32 arrays, and all of it is the same state to the bit, in memory and in a
checkpoint row. Rows written before (a fault flag a byte, as JSON text or binary) still
load."""

from __future__ import annotations

import base64
import gc
import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import parse_config
from gateway.detector import Detector
from gateway.detector import core as pycore
from gateway.model.runtime import StepModel
from gateway.records import Reading

OLD_ROWS = Path(__file__).with_name("data") / "checkpoint_v1.json"
STREAM = "pump/temp"


def detector(model: StepModel, core: str) -> Detector:
    return Detector(parse_config("detector: {warmup: 50}\n").detector, model, core=core)


def cyclic(t: int, k: int = 0) -> float:
    noise = math.sin(t * 78.233 + k * 12.9898) * 43758.5453
    return 50.0 + 10.0 * math.sin(2.0 * math.pi * t / (40 + k)) + 0.4 * (noise % 1.0 - 0.5)


def feed(d: Detector, streams: list[str], start: int, n: int) -> list[Any]:
    out = []
    for t in range(start, start + n):
        tick = [Reading(s, 1e6 + t, cyclic(t, k), "x") for k, s in enumerate(streams)]
        out += d.process_ticks([tick]).scored
    return out


def old_rows() -> tuple[dict[str, Any], dict[str, str], dict[str, bytes]]:
    """The state of a cyclic stream after an alert, as the release before wrote it."""
    saved = json.loads(OLD_ROWS.read_text())
    text = saved["json"]
    binary = {k: base64.b64decode(v) for k, v in saved["binary"].items()}
    return json.loads(text[STREAM]), text, binary


def test_rows_of_the_release_before_load_with_their_fault_flags(
    model: StepModel, core: str
) -> None:
    old, text, binary = old_rows()
    flags = base64.b64decode(old["c"][7])
    assert len(flags) == pycore.HISTORY and 0 < sum(flags) < pycore.HISTORY  # a byte a flag
    restored = []
    for rows in (text, binary):
        d = detector(model, core)
        assert d.restore(rows) == 1 and d.unreadable == 0
        new = json.loads(d.snapshot()[STREAM])
        bits = np.unpackbits(
            np.frombuffer(base64.b64decode(new["c"][7]), np.uint8), bitorder="little"
        )
        assert list(bits) == [1 if b else 0 for b in flags]  # the same flags, as bits
        new["c"][7] = old["c"][7]
        assert new == old  # and all the rest the same, to the bit
        restored.append(feed(d, [STREAM], 1600, 300))
    assert restored[0] == restored[1]


def test_a_row_round_trip_is_the_same_state_and_carries_on_the_same(
    model: StepModel, core: str
) -> None:
    _, text, _ = old_rows()
    first = detector(model, core)
    first.restore(text)
    rows = first.states([STREAM])
    second = detector(model, core)
    assert second.restore(rows) == 1
    assert second.snapshot() == first.snapshot()
    assert feed(second, [STREAM], 1600, 400) == feed(first, [STREAM], 1600, 400)


def heap_per_stream(model: StepModel, n: int, readings: int) -> float:
    d = detector(model, "compiled")
    feed(d, ["probe"], 0, 300)  # one-time costs are not a stream's
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        feed(d, [f"s{i}" for i in range(n)], 0, readings)
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()


def test_a_warm_stream_holds_under_15_kib(model: StepModel) -> None:
    """Before #16 item 4 a warm stream held 34 KB of Python heap (boxed floats in its judges'
    lists, a byte per fault flag)."""
    warm = heap_per_stream(model, 20, pycore.HISTORY + 60)
    assert warm < 15 * 1024
