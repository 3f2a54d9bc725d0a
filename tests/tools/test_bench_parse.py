"""tools/bench_parse.py measures the real parse path: every message it times became one
reading, and the hand-off it compares with carries the same readings."""

from __future__ import annotations

import pickle

from gateway.pipeline.ingest import IngestQueue
from tools.bench_parse import PASS, measure, messages, source


def test_the_timed_messages_become_one_reading_each_with_its_topic_stream() -> None:
    msgs = messages(3, 7)
    queue = IngestQueue()
    src = source(queue)
    with src._read_pass():
        for topic, payload in msgs:
            src._on_publish_qos0(topic, payload)
    readings, side = queue.get_batch(100, 0)
    assert side == []  # no dead letters
    assert [r.stream for r in readings] == ["s00000", "s00001", "s00002"] * 2 + ["s00000"]
    assert pickle.loads(pickle.dumps(readings)) == readings  # what the hand-off would carry


def test_a_run_reports_both_sides_per_message() -> None:
    row = measure(streams=2, n=2 * PASS, rounds=1)
    assert row["messages"] == 2 * PASS and row["streams"] == 2
    for key in ("parse in place us/msg", "hand-off receive us/msg", "hand-off send us/msg"):
        assert row[key] > 0
    assert 20 < row["bytes/reading pickled"] < 200
