"""The MQTT source's parse path, per message: in the daemon's process, or in one of its own?

Why (#16 item 2): the daemon is GIL-bound, and the MQTT source's parsing shares the GIL with
scoring. Moving parsing to its own process only helps if what the daemon's process still has
to do per reading — take a batch from the other process and turn it back into readings — is
clearly cheaper than parsing it in place. This script measures both sides in one run, on the
real code:

- ``parse in place``: ``MqttSubscriber._on_publish_qos0`` (what the buffered client calls
  for each QoS 0 PUBLISH) with a real ``IngestQueue``, in read passes of 500 messages;
- ``hand-off, receiving side``: what a parse process would leave the daemon: ``pickle.loads``
  of a pickled batch of 500 readings (as ``multiprocessing`` sends them) and ``put_many``;
- ``hand-off, sending side``: ``pickle.dumps`` of the batch, in the parse process.

CPU time (``time.process_time``), best of several rounds, microseconds per message; no
broker, no sockets (the socket reads would move with the parsing). Usage::

    python tools/bench_parse.py [--streams 1,1000] [--messages 200000] [--out parse.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gateway.config import MqttSource  # noqa: E402
from gateway.pipeline.ingest import IngestQueue  # noqa: E402
from gateway.records import Reading  # noqa: E402
from gateway.sources.mqtt import MqttSubscriber  # noqa: E402
from tools.bench_e2e import format_table  # noqa: E402
from tools.e2e_load import noise_values, payload_of, topic_of  # noqa: E402

PASS = 500  # messages per read pass (one 64 KB socket read holds ~1,000 of these)


def messages(streams: int, n: int) -> list[tuple[str, bytes]]:
    """What the benchmark's publisher sends: ``{"ts": T, "v": V}`` round robin on load/sNNNNN."""
    values = noise_values(1)
    t0 = 1_796_000_000.0
    return [
        (topic_of(i % streams), payload_of(t0 + i * 1e-4, values[i % len(values)]))
        for i in range(n)
    ]


def source(queue: IngestQueue) -> MqttSubscriber:
    section = MqttSource.model_validate(
        {
            "type": "mqtt",
            "name": "load",
            "broker": {"host": "127.0.0.1", "port": 1, "protocol": "3.1.1"},
            "subscribe": [
                {"topic": "load/+", "format": "json", "stream": "{1}", "fields": ["v"],
                 "timestamp_field": "ts"},
            ],
        }
    )  # fmt: skip
    return MqttSubscriber(section, queue)  # not started: fed as the buffered client feeds it


def best_of(rounds: int, run: Callable[[], None], reset: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(rounds):
        reset()
        t0 = time.process_time()
        run()
        best = min(best, time.process_time() - t0)
    return best


def measure(streams: int, n: int, rounds: int) -> dict[str, Any]:
    msgs = messages(streams, n)
    queue = IngestQueue(capacity=n + 1)
    src = source(queue)
    on_publish = src._on_publish_qos0
    passes = [msgs[k : k + PASS] for k in range(0, n, PASS)]

    def parse_in_place() -> None:
        for batch in passes:
            with src._read_pass():
                for topic, payload in batch:
                    on_publish(topic, payload)

    def drain() -> None:
        queue.get_batch(n + 1, 0)

    parse_in_place()  # every stream named and claimed, as in a running daemon
    readings, _ = queue.get_batch(n + 1, 0)
    if len(readings) != n:
        raise RuntimeError(f"parsed {len(readings)} readings of {n} messages")
    in_place = best_of(rounds, parse_in_place, drain)

    batches = [readings[k : k + PASS] for k in range(0, n, PASS)]
    pickled: list[bytes] = []

    def send() -> None:
        pickled[:] = [pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL) for b in batches]

    def receive() -> None:
        for blob in pickled:
            batch: list[Reading] = pickle.loads(blob)
            queue.put_many(batch)

    sending = best_of(rounds, send, lambda: None)
    receiving = best_of(rounds, receive, drain)
    us = 1e6 / n
    return {
        "streams": streams,
        "messages": n,
        "parse in place us/msg": in_place * us,
        "hand-off receive us/msg": receiving * us,
        "hand-off send us/msg": sending * us,
        "bytes/reading pickled": sum(map(len, pickled)) / n,
        "receive / in place": receiving / in_place,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,1000", help="comma-separated topic counts")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench_parse.json"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = [
        measure(int(s), args.messages, args.rounds) for s in args.streams.split(",") if s.strip()
    ]
    print(format_table(rows, list(rows[0])))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    args.out.write_text(json.dumps({"rows": rows, "loadavg": os.getloadavg()}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
