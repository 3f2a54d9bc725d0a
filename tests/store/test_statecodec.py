"""Checkpoint rows (``gateway.statecodec``): binary with a version byte, the old JSON text
still readable, a damaged row an error of its own (the detector quarantines it)."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import statecodec
from gateway.config import parse_config
from gateway.detector import Detector
from gateway.model.runtime import load_model
from gateway.records import Reading

b64 = st.binary(max_size=64).map(lambda raw: base64.b64encode(raw).decode("ascii"))
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | b64
)
trees = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


@given(trees)
def test_every_tree_comes_back_exactly(tree: object) -> None:
    row = statecodec.encode(tree)
    assert row[0] & 0x7F == statecodec.VERSION
    assert statecodec.decode(row) == tree


def test_floats_come_back_bit_for_bit_nan_and_infinities_included() -> None:
    values = [0.1, -0.0, math.inf, -math.inf, 5e-324]
    assert statecodec.decode(statecodec.encode(values)) == values
    (back,) = statecodec.decode(statecodec.encode([math.nan]))
    assert math.isnan(back)


def warm_detector(streams: list[str], n: int = 120) -> Detector:
    cfg = parse_config("detector: {warmup: 50}\n")
    detector = Detector(cfg.detector, load_model(None, "auto"))
    rng = np.random.default_rng(3)
    for t in range(n):
        detector.process(
            [
                Reading(s, 1e6 + t, 20.0 + math.sin(t / 7 + k) + rng.normal(0, 0.1), "x")
                for k, s in enumerate(streams)
            ]
        )
    return detector


def test_a_warm_stream_restores_from_binary_rows_and_they_are_smaller_than_json() -> None:
    first = warm_detector(["a", "b"])
    rows = first.states(["a", "b"])
    assert sorted(rows) == ["a", "asset/a", "asset/b", "b"]
    text = first.snapshot()
    # float32 arrays as raw bytes (4 a value, not base64's 5.3), floats as 8 bytes, then zlib
    assert sum(map(len, rows.values())) < sum(map(len, text.values())) * 0.6
    second = warm_detector([], 0)
    assert second.restore(rows) == 2
    assert second.snapshot() == text  # the same state, to the bit


def test_rows_of_the_json_format_are_still_read() -> None:
    first = warm_detector(["a"])
    old_rows = {k: v.encode() for k, v in first.snapshot().items()}  # as stored before
    second = warm_detector([], 0)
    assert second.restore(old_rows) == 1
    assert second.restore(first.snapshot()) == 1  # and as text
    assert second.unreadable == 0


@pytest.mark.parametrize(
    "row",
    [b"", b"\x07abc", b"\x01\x08\x05", b"\x81not zlib", b"{not json", b"\x01\x00\x00"],
    ids=["empty", "unknown-version", "truncated", "bad-zlib", "bad-json", "trailing"],
)
def test_a_damaged_row_is_an_error_of_its_own(row: bytes) -> None:
    with pytest.raises(statecodec.StateDecodeError):
        statecodec.decode(row)


def test_a_damaged_row_is_quarantined_and_counted_the_others_restore() -> None:
    first = warm_detector(["a", "b"])
    rows = first.states(["a", "b"])
    rows["b"] = rows["b"][: len(rows["b"]) // 2]
    second = warm_detector([], 0)
    assert second.restore(rows) == 1
    assert second.unreadable == 1
    assert [key for key, _ in second.unreadable_keys] == ["b"]
    assert json.loads(second.snapshot()["a"]) == json.loads(first.snapshot()["a"])
