"""Load-side processes for ``tools/bench_e2e.py``: a paced MQTT publisher and a paho counter.

They run in their own processes (``multiprocessing``, spawn), so the load generator never
shares a GIL with what it measures. Everything talks to 127.0.0.1 only.

The publisher is not paho: paho costs about 40 us per message, which at 1,000 streams halved
the rate the benchmark measured (#16 item 1). It is a raw-socket MQTT 3.1.1 client that sends
CONNECT, waits for CONNACK, then writes QoS 0 PUBLISH packets built from bytes prepared up
front (per stream: fixed header, topic and the payload's opening; per value: the payload's
end), so each message costs two byte concatenations, and a pacing step goes out in one
``sendall``. Keep-alive is 0 (MQTT's "no keep-alive"): it never needs to read again.

It sends ``{"ts": <publish time>, "v": <value>}`` to ``load/sNNNNN`` at a fixed total rate.
The first ``probes`` streams are latency probes: they publish at their own rate and, from
``fault_from`` seconds on, take a level shift of ``shift`` for ``fault_len`` seconds every
``fault_every`` seconds. Each faulty value is unique per stream, so an alert's ``observed``
value names the reading that raised it; the publisher returns the publish time of every
faulty reading and of the start of every fault episode, and its own CPU time.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

HOST = "127.0.0.1"
TOPIC_PREFIX = "load"
NOISE_SD = 0.5
BASE = 50.0
MAX_BURST = 5000  # messages written per pacing step at most
PACE_S = 0.001  # sleep between pacing steps when nothing is due
TS_FORMAT = b"%.6f"  # 17 characters for any time between 2001 and 2286
VALUE_FORMAT = b"%.6f"


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
    cpu_s: float = 0.0  # the publisher process's own CPU time while it published


# --- MQTT 3.1.1 packets ------------------------------------------------------------------------


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer (1-4 bytes, 7 bits each, low bits first)."""
    if not 0 <= n <= 268_435_455:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, keepalive: int = 0) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, no will, no credentials."""
    body = _utf8_string("MQTT") + b"\x04\x02" + keepalive.to_bytes(2, "big")
    body += _utf8_string(client_id)
    return b"\x10" + remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes) -> bytes:
    """PUBLISH, QoS 0, not retained."""
    body = _utf8_string(topic) + payload
    return b"\x30" + remaining_length(len(body)) + body


def payload_of(ts: float, value: float) -> bytes:
    return b'{"ts":' + TS_FORMAT % ts + b',"v":' + VALUE_FORMAT % value + b"}"


class PacketBuilder:
    """Pre-encoded QoS 0 PUBLISH packets for ``{"ts":T,"v":V}``: the bytes for a stream's
    header and topic and for each value are built once; a packet is head + ts + tail.

    That needs every payload to have one length: the time and every value in ``values`` must
    format to ``ts_width`` and ``value_width`` characters (ValueError otherwise)."""

    def __init__(self, topics: dict[int, str], values: list[float], ts_width: int = 17) -> None:
        widths = {len(VALUE_FORMAT % v) for v in values}
        if len(widths) != 1:
            raise ValueError(f"values format to several widths: {sorted(widths)}")
        self.ts_width = ts_width
        value_width = widths.pop()
        payload_len = len(b'{"ts":') + ts_width + len(b',"v":') + value_width + 1
        self.heads = {
            i: b"\x30"
            + remaining_length(2 + len(t.encode()) + payload_len)
            + _utf8_string(t)
            + b'{"ts":'
            for i, t in topics.items()
        }
        self.tails = [b',"v":' + VALUE_FORMAT % v + b"}" for v in values]

    def stamp(self, ts: float) -> bytes:
        stamp = TS_FORMAT % ts
        if len(stamp) != self.ts_width:
            raise ValueError(f"time {ts} does not format to {self.ts_width} characters")
        return stamp


def open_connection(port: int, client_id: str, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the broker with CONNECT sent and CONNACK (accepted) read."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.sendall(connect_packet(client_id))
    ack = b""
    while len(ack) < 4:
        chunk = sock.recv(4 - len(ack))
        if not chunk:
            raise RuntimeError(f"broker {HOST}:{port} closed the connection before CONNACK")
        ack += chunk
    if ack[0] != 0x20 or ack[1] != 2 or ack[3] != 0:
        raise RuntimeError(f"broker {HOST}:{port} refused CONNECT: {ack.hex()}")
    sock.settimeout(None)  # sendall blocks when the broker's socket is full: back-pressure
    return sock


def noise_values(seed: int, n: int = 4099) -> list[float]:
    """Background values: BASE plus clipped normal noise, rounded to 6 decimals (one width)."""
    rng = np.random.default_rng(seed)
    noise = np.clip(rng.normal(0.0, NOISE_SD, n), -8 * NOISE_SD, 8 * NOISE_SD)
    return [round(BASE + float(v), 6) for v in noise]


def publish(plan: LoadPlan, results: Any) -> None:
    """Publish per ``plan``, then put a ``LoadResult`` on ``results``."""
    sock = open_connection(plan.port, f"bench-pub-{plan.first_stream}-{time.monotonic_ns()}")
    values = noise_values(plan.seed)
    mine = list(range(plan.first_stream, plan.streams, plan.stride))
    probes = [i for i in mine if i < plan.probes]
    background = [i for i in mine if i >= plan.probes] or probes
    topics = {i: topic_of(i, plan.groups) for i in mine}
    builder = PacketBuilder(topics, values)
    heads = [builder.heads[i] for i in background]
    tails = builder.tails
    share = len(mine) / plan.streams
    probe_rate = plan.probe_hz * len(probes) if background is not probes else 0.0
    bg_rate = max(plan.rate * share - probe_rate, 0.0)
    result = LoadResult()
    k_bg = 0
    k_probe = dict.fromkeys(probes, 0)
    in_fault = dict.fromkeys(probes, False)
    fault_tag = dict.fromkeys(probes, 0)
    n_bg, n_values = len(background), len(tails)
    cpu0 = time.process_time()
    start = result.started = time.time()
    end = start + plan.duration
    while True:
        now = time.time()
        if now >= end:
            break
        elapsed = now - start
        due = min(int(bg_rate * elapsed) - k_bg, MAX_BURST)
        out: list[bytes] = []
        if due > 0:
            stamp = builder.stamp(now)
            if background is probes:  # one stream (or only probes): every value may be a fault
                for _ in range(due):
                    i = background[k_bg % n_bg]
                    value = values[k_bg % n_values]
                    k_bg += 1
                    value = _probe_value(plan, i, value, elapsed, now, in_fault, fault_tag, result)
                    out.append(publish_packet(topics[i], payload_of(now, value)))
            else:
                out = [
                    heads[k % n_bg] + stamp + tails[k % n_values] for k in range(k_bg, k_bg + due)
                ]
                k_bg += due
        if probe_rate:
            due_probe = int(plan.probe_hz * elapsed)
            for i in probes:
                while k_probe[i] < due_probe:
                    value = values[(k_probe[i] + 7 * i) % n_values]
                    k_probe[i] += 1
                    value = _probe_value(plan, i, value, elapsed, now, in_fault, fault_tag, result)
                    out.append(publish_packet(topics[i], payload_of(now, value)))
        if out:
            sock.sendall(b"".join(out))
        else:
            time.sleep(PACE_S)
    result.elapsed = time.time() - start
    result.sent = k_bg + sum(k_probe.values())
    result.cpu_s = time.process_time() - cpu0
    try:
        sock.sendall(b"\xe0\x00")  # DISCONNECT: the broker drops the session quietly
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        while sock.recv(4096):  # the broker closes once it has read everything
            pass
    except OSError:
        pass
    finally:
        sock.close()
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
