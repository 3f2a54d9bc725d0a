"""Load-side processes for ``tools/bench_e2e.py``: a paced MQTT publisher and two counters.

They run in their own processes (``multiprocessing``, spawn), so the load generator never
shares a GIL with what it measures. Everything talks to 127.0.0.1 only.

The publisher sends ``{"ts": <publish time>, "v": <value>}`` to ``load/sNNNNN`` at a fixed
total rate. The first ``probes`` streams are latency probes: they publish at their own rate
and, from ``fault_from`` seconds on, take a level shift of ``shift`` for ``fault_len`` seconds
every ``fault_every`` seconds. Each faulty value is unique per stream, so an alert's
``observed`` value names the reading that raised it; the publisher returns the publish time
of every faulty reading and of the start of every fault episode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

HOST = "127.0.0.1"
TOPIC_PREFIX = "load"
NOISE_SD = 0.5
BASE = 50.0
MAX_BURST = 2000  # messages published per pacing iteration at most


def stream_name(i: int) -> str:
    return f"s{i:05d}"


def topic_of(i: int, groups: int = 1) -> str:
    if groups > 1:
        return f"{TOPIC_PREFIX}/g{i % groups}/{stream_name(i)}"
    return f"{TOPIC_PREFIX}/{stream_name(i)}"


@dataclass(frozen=True)
class LoadPlan:
    port: int
    streams: int
    rate: float  # total messages/s, probes included
    duration: float
    probes: int = 0
    probe_hz: float = 0.0
    fault_from: float = 0.0
    fault_every: float = 3.0
    fault_len: float = 0.5
    shift: float = 10 * NOISE_SD
    seed: int = 0
    first_stream: int = 0  # for several publisher processes sharing one plan
    stride: int = 1
    groups: int = 1  # > 1: topics load/g<i % groups>/sNNNNN, one group per gateway of a fleet


@dataclass
class LoadResult:
    sent: int = 0
    started: float = 0.0  # wall clock, time.time()
    elapsed: float = 0.0
    faulty: list[tuple[str, float, float]] = field(default_factory=list)  # stream, value, t
    episodes: list[tuple[str, float]] = field(default_factory=list)  # stream, start t


def _connect(port: int, client_id: str) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_queued_messages_set(0)
    client.connect(HOST, port, keepalive=60)
    deadline = time.monotonic() + 10
    while not client.is_connected():
        client.loop(timeout=0.05)
        if time.monotonic() > deadline:
            raise RuntimeError(f"publisher cannot connect to {HOST}:{port}")
    return client


def publish(plan: LoadPlan, results: Any) -> None:
    """Publish per ``plan``, then put a ``LoadResult`` on ``results``."""
    client = _connect(plan.port, f"bench-pub-{plan.first_stream}-{time.monotonic_ns()}")
    rng = np.random.default_rng(plan.seed)
    noise = [round(float(v), 6) for v in rng.normal(0.0, NOISE_SD, 4099)]
    mine = list(range(plan.first_stream, plan.streams, plan.stride))
    probes = [i for i in mine if i < plan.probes]
    background = [i for i in mine if i >= plan.probes] or probes
    topics = {i: topic_of(i, plan.groups) for i in mine}
    share = len(mine) / plan.streams
    probe_rate = plan.probe_hz * len(probes) if background is not probes else 0.0
    bg_rate = max(plan.rate * share - probe_rate, 0.0)
    result = LoadResult()
    k_bg = 0
    k_probe = dict.fromkeys(probes, 0)
    in_fault = dict.fromkeys(probes, False)
    fault_tag = dict.fromkeys(probes, 0)
    pub = client.publish
    start = result.started = time.time()
    end = start + plan.duration
    while True:
        now = time.time()
        if now >= end:
            break
        elapsed = now - start
        due = min(int(bg_rate * elapsed) - k_bg, MAX_BURST)
        for _ in range(due):
            i = background[k_bg % len(background)]
            value = BASE + noise[k_bg % 4099]
            k_bg += 1
            if background is probes:
                value = _probe_value(plan, i, value, elapsed, now, in_fault, fault_tag, result)
            pub(topics[i], f'{{"ts":{now:.6f},"v":{value:.6f}}}')
        if probe_rate:
            due_probe = int(plan.probe_hz * elapsed)
            for i in probes:
                while k_probe[i] < due_probe:
                    value = BASE + noise[(k_probe[i] + 7 * i) % 4099]
                    k_probe[i] += 1
                    value = _probe_value(plan, i, value, elapsed, now, in_fault, fault_tag, result)
                    pub(topics[i], f'{{"ts":{now:.6f},"v":{value:.6f}}}')
        result.sent = k_bg + sum(k_probe.values())
        client.loop(timeout=0.0)
        time.sleep(0.0005)
    result.elapsed = time.time() - start
    result.sent = k_bg + sum(k_probe.values())
    for _ in range(20):  # let paho write what it still holds
        client.loop(timeout=0.01)
    client.disconnect()
    results.put(result)


def _probe_value(
    plan: LoadPlan,
    i: int,
    value: float,
    elapsed: float,
    now: float,
    in_fault: dict[int, bool],
    fault_tag: dict[int, int],
    result: LoadResult,
) -> float:
    """A probe's value at ``elapsed``: shifted inside a fault episode, and then unique."""
    phase = elapsed - plan.fault_from
    # Stagger the probes so their faults do not all start in the same tick.
    phase -= plan.fault_every * (i / max(plan.probes, 1))
    faulty = phase >= 0 and phase % plan.fault_every < plan.fault_len
    if faulty and not in_fault[i]:
        result.episodes.append((stream_name(i), now))
    in_fault[i] = faulty
    if not faulty:
        return value
    fault_tag[i] += 1
    value = round(value + plan.shift + 1e-6 * (fault_tag[i] % 997), 6)
    result.faulty.append((stream_name(i), value, now))
    return value


def count_paho(port: int, counter: Any, ready: Any) -> None:
    """A plain paho subscriber that only counts messages (the transport's own limit)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-count-{port}")

    def on_connect(c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        c.subscribe(f"{TOPIC_PREFIX}/+", qos=0)

    def on_subscribe(c: mqtt.Client, u: Any, mid: int, rc: Any, p: Any) -> None:
        ready.set()

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        counter.value += 1

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(HOST, port, keepalive=60)
    client.loop_forever()
