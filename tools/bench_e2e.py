"""End-to-end benchmark: the real gateway, fed over MQTT, against the transport's own limit.

Why: a gateway is judged by how many readings it can watch on a small box and how fast an alert
gets out. This script measures that on the real thing: it starts its own Mosquitto on a free
loopback port, writes a config (an MQTT source on ``load/+``, upstream on the same broker, data
in a temporary folder), runs ``python -m gateway run`` as a subprocess and feeds it from a
separate publisher process. Per stream count (1, 1,000, 10,000; ``--streams``) it measures:

- cold start: process start to ``READY=1`` on ``$NOTIFY_SOCKET`` (as systemd would see it);
- latency at 1,000 readings/s: latency probes (10 streams at 20 Hz, or the one stream) get
  level-shift faults after warm-up; the latency is from the publish of the reading that raised
  the alert (the alert's ``observed`` value names it) to the alert's arrival at an upstream
  subscriber; "detect" is from the publish of the first faulty reading (it includes the
  detector's ``min_duration``);
- stepped rates: the highest rate with no backlog growth (everything published was scored, no
  drops, and the rate scored during the step kept up), read from the gateway's own status
  snapshot in its SQLite database;
- CPU (utime+stime from /proc/PID/stat) per step and peak RSS (VmHWM) of the gateway process.

In the same run the same stepped rates go to a plain paho subscriber that only counts messages
and to ``mosquitto_sub`` (writing one byte per message to a file it counts by size): the
transport's limit on this machine, at 1 and at 1,000 streams. The load comes from a raw-socket
publisher of pre-encoded packets (``tools/e2e_load.py``) that offers 100,000 messages/s at a
few per cent of a core, so it is never what a step measures; every step reports what it
achieved and its CPU, and Mosquitto's. Machines are shared and noisy: compare the ratios in one
run, not absolute numbers across runs; the load average is recorded at the start and the end.
Traffic never leaves 127.0.0.1.

Usage (from the repo root)::

    python tools/bench_e2e.py [--quick] [--out results.json] [--streams 1,100]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools.e2e_load import HOST, LoadPlan, LoadResult, count_paho, publish  # noqa: E402

GATEWAY_ID = "bench-gw"
UPSTREAM_PREFIX = "up"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SUSTAIN_FRACTION = 0.93  # scored rate during a step, relative to the published rate
DELIVERED_FRACTION = 0.995  # of everything published, scored by the end of the grace time
PUB_SHORTFALL = 0.95  # below this share of the target the publisher, not the consumer, limits
STOP_TIMEOUT_S = 60.0  # SIGTERM to exit: the daemon drains a full queue in a few seconds
RATE_PER_PUBLISHER = 100_000  # messages/s per publisher process at most (it does ~10x that)
TRANSPORT_STREAMS = (1, 1000)  # stream counts the counters are measured at (the targets')


@dataclass(frozen=True)
class Profile:
    streams: tuple[int, ...]
    rates: tuple[int, ...]
    step_s: float
    latency_s: float
    grace_s: float
    install_size: bool


# Steps fine enough that "sustained" is not rounded down by much, and high enough that
# mosquitto_sub (80,000/s or more here) fails a step before the steps run out.
RATES = (100, 1000, 2000, 4000, 8000, 12000, 16000, 20000, 24000, 28000, 32000, 36000, 40000,
         45000, 50000, 60000, 70000, 80000, 100000, 120000)  # fmt: skip
FULL = Profile((1, 1000, 10000), RATES, 5.0, 20.0, 3.0, True)
QUICK = Profile((1, 1000), (1000, 4000, 8000, 12000, 16000, 20000, 24000, 30000, 38000, 48000,
                            60000, 80000, 100000), 3.5, 10.0, 1.5, False)  # fmt: skip


# --- formatting ------------------------------------------------------------------------------


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table: a header, a rule, one line per row; numbers right-aligned.

    Floats get at most one decimal (none from 100 on), ``None`` prints as ``-``.
    """

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
        return str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(
            row.get(c) is None
            or (isinstance(row.get(c), int | float) and not isinstance(row.get(c), bool))
            for row in rows
        )
        for c in columns
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(columns)), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 100]); ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


# --- processes ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} {HOST}\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\nmax_inflight_messages 100\n"
    )
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def gateway_config(workdir: Path, port: int, code_dir: Path = REPO, streams: int = 1) -> Path:
    config = workdir / "gateway.yaml"
    text = (
        f"gateway: {{id: {GATEWAY_ID}, data_dir: {workdir / 'data'}, log_level: warning}}\n"
        # Short warm-up and cool-down so latency probes alert within a short run.
        "detector: {warmup: 100, baseline_halflife: 10m, cooldown: 1s, max_gap: 1h}\n"
        "sources:\n"
        f"  - type: mqtt\n    name: load\n    broker: {{host: {HOST}, port: {port}}}\n"
        "    subscribe:\n"
        "      - {topic: 'load/+', format: json, stream: '{1}', fields: [v], "
        "timestamp_field: ts}\n"
        f"upstream:\n  broker: {{host: {HOST}, port: {port}}}\n"
        f"  topic_prefix: {UPSTREAM_PREFIX}\n"
        # The steps stop and start the load: without this every stream would go stale in
        # between and flood the outbox with stale/recovered events.
        "ingest: {stale_factor: null}\n"
        "metrics: {listen: null}\n"
        # Room for every stream of the run (the default, 2,000, dead-letters the rest).
        f"limits: {{max_streams: {max(2000, 2 * streams)}}}\n"
    )
    config.write_text(text)
    check = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "validate", str(config)],
        cwd=code_dir, capture_output=True, text=True,
    )  # fmt: skip
    if check.returncode != 0 and "ingest" in check.stdout + check.stderr:
        # An older gateway without the ingest section (and without stale detection).
        config.write_text(text.replace("ingest: {stale_factor: null}\n", ""))
    return config


class Gateway:
    """The real daemon as a subprocess, watched through /proc and its own database."""

    def __init__(self, config: Path, workdir: Path, code_dir: Path = REPO) -> None:
        self.config = config
        self.db = workdir / "data" / "gateway.db"
        self.log_path = workdir / "gateway.log"
        notify_path = workdir / "notify.sock"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "PYTHONUNBUFFERED": "1",
               "PYTHONFAULTHANDLER": "1"}  # fmt: skip
        env.pop("WATCHDOG_USEC", None)
        started = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
                cwd=code_dir,  # python -m gateway imports the package found here
            )
        self.ready_s = self._wait_ready(started)
        self.notifications = 0  # sd_notify datagrams after READY=1
        self._stopping = threading.Event()
        # Read on, as systemd does: the daemon's sd_notify send blocks once the socket's
        # buffer is full (found by a stuck stop: the main thread waited in sendto).
        self._reader = threading.Thread(target=self._read_notify, daemon=True)
        self._reader.start()
        self.published = 0  # readings sent to it so far

    def _wait_ready(self, started: float) -> float:
        self._notify.settimeout(0.5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                data = self._notify.recv(4096)
            except TimeoutError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited: {self.log_tail()}") from None
                continue
            if b"READY=1" in data.split(b"\n"):
                return time.perf_counter() - started
        raise RuntimeError(f"gateway not READY within 60 s: {self.log_tail()}")

    def _read_notify(self) -> None:
        while not self._stopping.is_set():
            try:
                self._notify.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.notifications += 1

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def cpu_s(self) -> float:
        return cpu_seconds(self.proc.pid)

    def memory_mb(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
        return out

    def status(self) -> dict[str, Any]:
        """The pipeline's status snapshot (refreshed every ~2 s by the daemon)."""
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as conn:
                row = conn.execute(
                    "SELECT snapshot, updated_ts FROM status WHERE id = 1"
                ).fetchone()
        except sqlite3.Error:
            return {}
        if not row:
            return {}
        snapshot = json.loads(row[0])
        snapshot["updated_ts"] = row[1]
        return snapshot

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> tuple[int, float]:
        """SIGTERM (the daemon drains its queue first); exit code and seconds to exit. Not
        gone within ``timeout``: SIGABRT, so faulthandler writes every thread's stack to
        the log (kept in the results), then SIGKILL."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            try:
                code = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(10)
        finally:
            self._stopping.set()
            self._reader.join(2)
            self._notify.close()
        return code, time.monotonic() - t0


class AlertListener:
    """The upstream subscriber: arrival time of every alert the gateway forwards."""

    def __init__(self, port: int) -> None:
        self.alerts: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-upstream")
        topic = f"{UPSTREAM_PREFIX}/{GATEWAY_ID}/alerts/#"
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.set()
        client.on_message = self._on_message
        client.connect(HOST, port)
        client.loop_start()
        self._client = client
        if not self._subscribed.wait(10):
            raise RuntimeError("upstream subscriber could not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        arrived = time.time()
        try:
            payload = json.loads(message.payload)
        except ValueError:
            return
        with self._lock:
            self.alerts.append((arrived, payload))

    def take(self) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            alerts, self.alerts = self.alerts, []
        return alerts

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def publishers_for(rate: float) -> int:
    """Publisher processes for a total rate: one paho publisher manages about 26,000-31,000
    messages/s on an idle 2-core VM, so above ``RATE_PER_PUBLISHER`` the load is split and
    the publisher stays ahead of any subscriber it measures. Not more processes than that:
    on two cores they only spread the same work and take CPU from the subscriber."""
    return max(1, math.ceil(rate / RATE_PER_PUBLISHER))


def split_plan(plan: LoadPlan, publishers: int) -> list[LoadPlan]:
    """Each process takes every ``publishers``-th stream (and its share of the rate)."""
    n = max(1, min(publishers, plan.streams))
    return [replace(plan, first_stream=k, stride=n, seed=plan.seed + 1000 * k) for k in range(n)]


def merge_results(parts: Sequence[LoadResult]) -> LoadResult:
    """One result for processes that published side by side."""
    started = min(p.started for p in parts)
    return LoadResult(
        sent=sum(p.sent for p in parts),
        started=started,
        elapsed=max(p.started + p.elapsed for p in parts) - started,
        faulty=[f for p in parts for f in p.faulty],
        episodes=[e for p in parts for e in p.episodes],
        cpu_s=sum(p.cpu_s for p in parts),
    )


def run_load(plan: LoadPlan, publishers: int | None = None) -> LoadResult:
    """Publish ``plan`` from one or more processes (by default ``publishers_for(rate)``)."""
    plans = split_plan(plan, publishers_for(plan.rate) if publishers is None else publishers)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=publish, args=(p, results), daemon=True) for p in plans]
    for proc in procs:
        proc.start()
    try:
        parts: list[LoadResult] = [results.get(timeout=plan.duration + 60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
    return merge_results(parts)


# --- measurements ------------------------------------------------------------------------------


class Sampler:
    """Samples ``read() -> (time, value)`` every ``period`` s on a thread, keeping new times."""

    def __init__(self, read: Any, period: float = 0.1) -> None:
        self.samples: list[tuple[float, float]] = []
        self._read = read
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self._read()
            if sample is not None and (not self.samples or sample[0] > self.samples[-1][0]):
                self.samples.append(sample)
            self._stop.wait(self._period)

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join()
        return self.samples


def window_rate(samples: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    """Rate of a counter inside ``[start + 0.5 s, end]``: what a consumer kept up with
    while the load ran (``None`` when the samples span less than a second)."""
    inside = [s for s in samples if start + 0.5 <= s[0] <= end]
    if len(inside) < 2 or inside[-1][0] - inside[0][0] < 1.0:
        return None
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def wait_scored(gw: Gateway, total: int, timeout: float) -> dict[str, Any]:
    """Wait until the gateway has scored ``total`` readings and its queue is empty."""
    deadline = time.monotonic() + timeout
    snap = gw.status()
    while time.monotonic() < deadline:
        if snap.get("readings", 0) >= total and not snap.get("queue_depth"):
            break
        time.sleep(0.2)
        snap = gw.status()
    return snap


def load_figures(
    load: LoadResult, consumed: int, cpu_s: float, broker_cpu_s: float, wall: float
) -> dict[str, Any]:
    """What every step reports beside its verdict: the publisher's achieved rate and CPU, the
    consumer's CPU per message it consumed, and the broker's CPU (shares of one core)."""
    return {
        "published_per_s": load.sent / load.elapsed if load.elapsed else 0.0,
        "pub_cpu_pct": 100.0 * load.cpu_s / load.elapsed if load.elapsed else None,
        "pub_us_per_msg": 1e6 * load.cpu_s / load.sent if load.sent else None,
        "cpu_pct": 100.0 * cpu_s / wall if wall else None,
        "us_per_msg": 1e6 * cpu_s / consumed if consumed > 0 else None,
        "broker_cpu_pct": 100.0 * broker_cpu_s / wall if wall else None,
    }


def gateway_step(
    gw: Gateway, port: int, streams: int, rate: int, profile: Profile, broker_pid: int
) -> dict:
    before = wait_scored(gw, gw.published, 60)
    cpu0, broker0, t0 = gw.cpu_s(), cpu_seconds(broker_pid), time.monotonic()

    def read() -> tuple[float, float] | None:
        snap = gw.status()
        return (snap["updated_ts"], snap["readings"]) if snap else None

    sampler = Sampler(read, 0.2)
    depth = Sampler(lambda: (time.time(), gw.status().get("queue_depth", 0)), 0.5)
    load = run_load(LoadPlan(port=port, streams=streams, rate=rate, duration=profile.step_s,
                             seed=rate))  # fmt: skip
    gw.published += load.sent
    after = wait_scored(gw, gw.published, profile.grace_s + 2.5)  # +2.5: status refresh
    # CPU up to here: the grace time is when a backlog of this step is still being scored.
    cpu_s, broker_s = gw.cpu_s() - cpu0, cpu_seconds(broker_pid) - broker0
    wall = time.monotonic() - t0
    samples, depths = sampler.stop(), depth.stop()
    scored = after.get("readings", 0) - before.get("readings", 0)
    dropped = after.get("dropped_readings", 0) - before.get("dropped_readings", 0)
    scored_rate = window_rate(samples, load.started, load.started + load.elapsed)
    figures = load_figures(load, scored, cpu_s, broker_s, wall)
    pub_rate = figures["published_per_s"]
    # No measured rate (too few status snapshots inside the step) is not evidence of keeping up.
    kept_up = scored_rate is not None and scored_rate >= SUSTAIN_FRACTION * pub_rate
    return {
        "consumer": "gateway",
        "streams": streams,
        "target": rate,
        **figures,
        "scored_per_s": scored_rate,
        "delivered_pct": 100.0 * scored / load.sent if load.sent else None,
        "dropped": dropped,
        "queue_max": max((d for _, d in depths), default=0),
        "sustained": scored >= DELIVERED_FRACTION * load.sent and dropped == 0 and kept_up,
        "pub_limited": pub_rate < PUB_SHORTFALL * rate,
    }


def latency_phase(
    gw: Gateway, listener: AlertListener, port: int, streams: int, profile: Profile
) -> dict:
    wait_scored(gw, gw.published, 60)
    listener.take()
    probes = min(streams, 10)
    plan = LoadPlan(
        port=port,
        streams=streams,
        rate=1000,
        duration=profile.latency_s,
        probes=probes,
        probe_hz=20.0 if streams > 1 else 0.0,
        fault_from=8.0,
        fault_every=3.0,
        fault_len=0.6,
        seed=7,
    )
    cpu0, t0 = gw.cpu_s(), time.monotonic()
    load = run_load(plan)
    cpu_s, wall = gw.cpu_s() - cpu0, time.monotonic() - t0
    gw.published += load.sent
    time.sleep(2.0)  # the last alerts
    alerts = listener.take()
    faulty = {(s, v): t for s, v, t in load.faulty}
    episodes: dict[str, list[float]] = {}
    for s, t in load.episodes:
        episodes.setdefault(s, []).append(t)
    latencies, detects, unmatched = [], [], 0
    for arrived, alert in alerts:
        if alert.get("state") != "raised":
            continue
        key = (alert.get("stream"), alert.get("observed"))
        t_pub = faulty.get(key)
        if t_pub is None:
            unmatched += 1
            continue
        latencies.append(1000.0 * (arrived - t_pub))
        starts = [t for t in episodes.get(key[0], []) if t <= t_pub]
        if starts:
            detects.append(1000.0 * (arrived - max(starts)))
    return {
        "streams": streams,
        "rate": 1000,
        "published_per_s": load.sent / load.elapsed if load.elapsed else 0.0,
        "episodes": len(load.episodes),
        "alerts": len(latencies),
        "unmatched_alerts": unmatched,
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p99": percentile(latencies, 99),
        "latency_ms_max": max(latencies, default=None),
        "detect_ms_p50": percentile(detects, 50),
        "detect_ms_p99": percentile(detects, 99),
        "cpu_pct": 100.0 * cpu_s / wall,
    }


def paho_step(port: int, streams: int, rate: int, profile: Profile, broker_pid: int) -> dict:
    ctx = mp.get_context("spawn")
    counter = ctx.RawValue("q", 0)
    ready = ctx.Event()
    proc = ctx.Process(target=count_paho, args=(port, counter, ready), daemon=True)
    proc.start()
    try:
        if not ready.wait(15):
            raise RuntimeError("paho counter did not subscribe")
        return _counted_step(
            "paho counter", port, streams, rate, profile, lambda: counter.value,
            proc.pid, broker_pid,
        )  # fmt: skip
    finally:
        proc.terminate()
        proc.join(5)


def mosquitto_sub_step(
    port: int, streams: int, rate: int, profile: Profile, workdir: Path, broker_pid: int
) -> dict:
    """``mosquitto_sub -F x -N``: one byte per message, so the file's size is the count
    (no reading it back, and next to nothing for mosquitto_sub to format)."""
    out = workdir / "mosquitto_sub.out"
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            ["mosquitto_sub", "-h", HOST, "-p", str(port), "-t", "load/+", "-q", "0",
             "-F", "x", "-N"],
            stdout=fh,
        )  # fmt: skip
    time.sleep(0.5)  # mosquitto_sub has no "subscribed" signal

    def count() -> int:
        return out.stat().st_size

    try:
        return _counted_step(
            "mosquitto_sub", port, streams, rate, profile, count, proc.pid, broker_pid
        )
    finally:
        proc.terminate()
        proc.wait(5)
        out.unlink()


def _counted_step(
    name: str, port: int, streams: int, rate: int, profile: Profile, count, pid: int,
    broker_pid: int,
) -> dict:  # fmt: skip
    plan = LoadPlan(port=port, streams=streams, rate=rate, duration=profile.step_s, seed=rate)
    base = count()
    cpu0, broker0, t0 = cpu_seconds(pid), cpu_seconds(broker_pid), time.monotonic()
    sampler = Sampler(lambda: (time.time(), count()), 0.1)
    load = run_load(plan)
    deadline = time.monotonic() + profile.grace_s
    got = count() - base
    while got < load.sent and time.monotonic() < deadline:
        time.sleep(0.1)
        got = count() - base
    cpu_s, broker_s = cpu_seconds(pid) - cpu0, cpu_seconds(broker_pid) - broker0
    figures = load_figures(load, got, cpu_s, broker_s, time.monotonic() - t0)
    samples = sampler.stop()
    pub_rate = figures["published_per_s"]
    in_step = window_rate(samples, load.started, load.started + load.elapsed)
    kept_up = in_step is None or in_step >= SUSTAIN_FRACTION * pub_rate
    return {
        "consumer": name,
        "streams": streams,
        "target": rate,
        **figures,
        "scored_per_s": in_step,
        "delivered_pct": 100.0 * got / load.sent if load.sent else None,
        "sustained": got >= DELIVERED_FRACTION * load.sent and kept_up,
        "pub_limited": pub_rate < PUB_SHORTFALL * rate,
    }


def stepped(run_step, rates: Sequence[int]) -> list[dict]:
    """Run rate steps upwards until one is not sustained (or the publisher cannot keep up)."""
    steps = []
    for rate in rates:
        step = run_step(rate)
        steps.append(step)
        print(f"  {step['consumer']:>13} {step['streams']:>6} streams {rate:>6}/s: "
              f"published {step['published_per_s']:.0f}/s, consumed "
              f"{step['scored_per_s'] or 0:.0f}/s, sustained {step['sustained']}", flush=True)  # fmt: skip
        if not step["sustained"] or step["pub_limited"]:
            break
    return steps


def transport_counts(streams: Sequence[int]) -> list[int]:
    """Stream counts to measure the counters at: those of ``TRANSPORT_STREAMS`` in the run,
    else the largest count up to 1,000 (else the smallest)."""
    chosen = [n for n in TRANSPORT_STREAMS if n in streams]
    return chosen or [max((s for s in streams if s <= 1000), default=min(streams))]


def all_steps(result: dict[str, Any]) -> list[dict]:
    steps = [s for run in result["gateway"] for s in run["steps"]]
    for counters in result["transport"].values():
        steps += counters["paho"] + counters["mosquitto_sub"]
    return steps


def max_offered(result: dict[str, Any]) -> float:
    return max((s["published_per_s"] for s in all_steps(result)), default=0.0)


def best_rate(steps: Sequence[dict]) -> float | None:
    rates = [s["published_per_s"] for s in steps if s["sustained"]]
    return max(rates) if rates else None


def scored_max(steps: Sequence[dict]) -> float | None:
    rates = [s["scored_per_s"] for s in steps if s.get("scored_per_s")]
    return max(rates) if rates else None


def install_size(workdir: Path) -> dict[str, Any]:
    """``du -sm`` of a fresh venv with ``pip install .`` (the daemon's default install)."""
    venv = workdir / "install-venv"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(REPO)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return {"error": done.stderr[-500:]}
    du = subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True, check=True)
    pip_list = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format", "json"], capture_output=True, text=True
    )
    packages = sorted(p["name"] for p in json.loads(pip_list.stdout or "[]"))
    shutil.rmtree(venv, ignore_errors=True)
    return {"venv_mb": int(du.stdout.split()[0]), "seconds": time.monotonic() - t0,
            "packages": packages}  # fmt: skip


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "mosquitto": mosq[0] if mosq else None,
        "loadavg_at_start": os.getloadavg(),
    }


# --- the run -----------------------------------------------------------------------------------


def run_streams(
    streams: int, port: int, profile: Profile, workdir: Path, code_dir: Path, broker_pid: int
) -> dict[str, Any]:
    gw_dir = workdir / f"gw-{streams}"
    gw_dir.mkdir()
    config = gateway_config(gw_dir, port, code_dir, streams)
    listener = AlertListener(port)
    gw = Gateway(config, gw_dir, code_dir)
    print(f"streams={streams}: READY after {gw.ready_s:.2f} s", flush=True)
    loadavg = os.getloadavg()
    try:
        latency = latency_phase(gw, listener, port, streams, profile)
        print(f"  latency: {latency}", flush=True)
        memory_after_latency = gw.memory_mb()  # every stream seen, no overload yet
        steps = stepped(
            lambda r: gateway_step(gw, port, streams, r, profile, broker_pid), profile.rates
        )
        memory = gw.memory_mb()
    finally:
        code, stop_s = gw.stop()
        listener.close()
    return {
        "streams": streams,
        "loadavg_at_start": loadavg,
        "ready_s": gw.ready_s,
        "latency": latency,
        "steps": steps,
        "rss_mb_after_latency": memory_after_latency.get("VmRSS"),
        "peak_rss_mb_after_latency": memory_after_latency.get("VmHWM"),
        "rss_mb": memory.get("VmRSS"),
        "peak_rss_mb": memory.get("VmHWM"),
        "exit_code": code,
        "stop_s": stop_s,
        "notifications": gw.notifications,  # sd_notify datagrams read after READY=1
        "log_tail": gw.log_tail()[-6000:] if code else "",
    }


def top_step(steps: Sequence[dict]) -> dict | None:
    """The sustained step with the highest published rate."""
    good = [s for s in steps if s["sustained"]]
    return max(good, key=lambda s: s["published_per_s"]) if good else None


def reference(transport: dict[int, dict[str, list[dict]]], streams: int) -> float | None:
    """mosquitto_sub's sustained rate at ``streams`` (or at the nearest count measured)."""
    if not transport:
        return None
    nearest = min(transport, key=lambda n: (abs(math.log10(n) - math.log10(streams)), n))
    return best_rate(transport[nearest]["mosquitto_sub"])


def consumer_row(name: str, streams: int, steps: Sequence[dict], ref: float | None) -> dict:
    """One line of the table: the consumer's sustained rate and its CPU per message there;
    the most the publisher offered (the last step) and what the consumer managed of it."""
    top = top_step(steps)
    best = top["published_per_s"] if top else None
    last = steps[-1] if steps else {}
    return {
        "consumer": name,
        "streams": streams,
        "sustained/s": best,
        "% of mosquitto_sub": 100.0 * best / ref if best and ref else None,
        "CPU us/msg": top.get("us_per_msg") if top else None,
        "offered/s": last.get("published_per_s"),
        "consumed/s": last.get("scored_per_s"),
        "pub CPU %": last.get("pub_cpu_pct"),
    }


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    transport = {int(k): v for k, v in result["transport"].items()}
    rows = []
    for streams in sorted(transport):
        ref = reference(transport, streams)
        rows.append(consumer_row("mosquitto_sub", streams, transport[streams]["mosquitto_sub"],
                                 ref))  # fmt: skip
        rows.append(consumer_row("paho counter", streams, transport[streams]["paho"], ref))
    for run in result["gateway"]:
        lat = run["latency"]
        row = consumer_row("gateway", run["streams"], run["steps"],
                           reference(transport, run["streams"]))  # fmt: skip
        row.update(
            {
                "p50 ms": lat["latency_ms_p50"],
                "p99 ms": lat["latency_ms_p99"],
                "alerts": f"{lat['alerts']}/{lat['episodes']}",
                "CPU% @1k/s": lat["cpu_pct"],
                "peak RSS MB": run["peak_rss_mb_after_latency"],
                "READY s": run["ready_s"],
            }
        )
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return [{c: row.get(c) for c in columns} for row in rows]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, about 3 minutes")
    parser.add_argument("--out", type=Path, default=Path("bench_e2e.json"), help="JSON results")
    parser.add_argument("--streams", help="comma-separated stream counts (default per mode)")
    parser.add_argument("--install-size", action=argparse.BooleanOptionalAction, default=None,
                        help="measure a fresh venv with pip install . (default: full mode only)")  # fmt: skip
    parser.add_argument("--gateway-dir", type=Path, default=REPO,
                        help="run the gateway package found in this folder (e.g. an export "
                        "of a commit: git archive HEAD | tar -x -C DIR)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.streams:
        profile = replace(profile, streams=tuple(int(s) for s in args.streams.split(",")))
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_sub") is None:
        print("needs mosquitto and mosquitto_sub (apt-get install mosquitto mosquitto-clients)")
        return 2
    started = time.monotonic()
    result: dict[str, Any] = {"machine": machine(), "profile": asdict(profile), "gateway": [],
                              "gateway_dir": str(args.gateway_dir)}  # fmt: skip
    model = REPO / "models" / "cfc-default.tflite"
    result["model_bytes"] = model.stat().st_size if model.exists() else None
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        workdir = Path(tmp)
        broker, port = start_broker(workdir)
        try:
            for streams in profile.streams:
                result["gateway"].append(
                    run_streams(streams, port, profile, workdir, args.gateway_dir, broker.pid)
                )
            result["transport"] = {}
            for n in transport_counts(profile.streams):
                print(f"transport, {n} topics:", flush=True)
                result["transport"][n] = {
                    "loadavg_at_start": os.getloadavg(),
                    "mosquitto_sub": stepped(
                        lambda r, n=n: mosquitto_sub_step(port, n, r, profile, workdir, broker.pid),
                        profile.rates,
                    ),
                    "paho": stepped(
                        lambda r, n=n: paho_step(port, n, r, profile, broker.pid), profile.rates
                    ),
                }
        finally:
            broker.terminate()
            broker.wait(10)
        want_install = profile.install_size if args.install_size is None else args.install_size
        if want_install:
            print("install size: fresh venv + pip install . ...", flush=True)
            result["install"] = install_size(workdir)
    result["elapsed_s"] = time.monotonic() - started
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    runs = {r["streams"]: r for r in result["gateway"]}
    if 1 in runs and 10000 in runs:
        result["kb_per_stream"] = (
            1024 * (runs[10000]["rss_mb_after_latency"] - runs[1]["rss_mb_after_latency"]) / 9999
        )
    rows = summarise(result)
    result["summary"] = rows
    print()
    print(format_table(rows, list(rows[0])))
    print()
    limited = [s for s in all_steps(result) if s["pub_limited"]]
    print(
        f"publisher: the last step offered up to {max_offered(result):.0f}/s; "
        + (
            f"{len(limited)} step(s) fell short of the target (pub_limited in the JSON)"
            if limited
            else "every step reached its target"
        )  # fmt: skip
    )
    ready = [r["ready_s"] for r in result["gateway"]]
    print(f"cold start to READY: median {statistics.median(ready):.2f} s over {len(ready)} starts")
    print(f"model: {result['model_bytes']} bytes", end="")
    if "kb_per_stream" in result:
        print(f"; memory per stream (RSS 10,000 vs 1 streams): {result['kb_per_stream']:.1f} KB")
    else:
        print()
    if "install" in result:
        print(f"install (fresh venv, pip install .): {result['install'].get('venv_mb')} MB")
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['mosquitto']}")
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}, at end: {:.2f} {:.2f} "
          "{:.2f}".format(*m["loadavg_at_start"], *m["loadavg_at_end"]))  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out} ({result['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
