"""Kill the real gateway with SIGKILL at random moments while it forwards, over and over.

Each iteration starts ``python -m gateway run`` (simulated sensors with frequent faults, so
alerts keep coming, and an upstream broker), SIGKILLs it at a random moment of one of three
phases, and checks ``PRAGMA integrity_check`` of its database:

- ``running``: once it is online, while it forwards;
- ``startup``: 0-1.5 s after the process started, online or not (opening and checking the
  database, restoring state, connecting);
- ``drain``: once it is online, SIGTERM, then SIGKILL 0-0.5 s into the drain (the final
  checkpoint, in-flight publishes waiting for their acknowledgements).

At the end one last run drains the outbox and stops with SIGTERM; then every alert ever
committed to the outbox must have reached the upstream subscriber, in outbox order. Prints a
table and writes JSON.

    python tools/soak_kill.py --iterations 1000 --phases running,startup,drain --out soak.json
    python tools/soak_kill.py --iterations 300 --streams 128 --fault-every 0.05   # denser

Without ``--broker HOST:PORT`` it starts its own Mosquitto on a free loopback port.
tests/scenarios/test_kill.py runs the same loop (30 iterations) against the test broker.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "soak"
MAX_INFLIGHT = 20
# The simulated load, see gateway_config: 64 streams at 100 Hz, a fault of 0.8 s every 0.1 s.
STREAMS = 64
FAULT_EVERY = 0.1
FAULT_LENGTH = 0.8


def gateway_config(
    workdir: Path,
    host: str,
    port: int,
    gateway_id: str = "gw-soak",
    *,
    streams: int = STREAMS,
    rate_hz: float = 100.0,
    fault_every: float = FAULT_EVERY,
    fault_length: float = FAULT_LENGTH,
    sensors: bool = True,
) -> Path:
    """A gateway whose simulated sensors keep faults opening on some stream all the time.

    A fault of ``fault_length`` every ``fault_every`` seconds cycles through the streams: with
    the defaults a new fault every 0.1 s somewhere, each stream faulty 0.8 s in every 6.4 s
    (12 %), rare enough for its tail tests to learn what healthy looks like. Each fault lasts
    80 readings, longer than the judge's brief stretch (``BRIEF_BLOCKS`` blocks, 64 readings):
    a brief elevation that recurs within the judge's memory is learned as normal, so short
    faults repeating on a stream every second would soon stop alerting, and the soak would
    kill a gateway that has nothing to forward. The threshold is low (0.5: as rare as one
    healthy block in 10), because this is a delivery soak: it wants many alerts, not only
    the certain ones. The detector checkpoints every 200 ms, so a gateway killed within a
    second keeps what it learned and alerts in its next life.
    ``sensors=False``: the same gateway with no sources (``drain.yaml``), which only forwards
    what its outbox holds.
    """
    config = workdir / ("gw.yaml" if sensors else "drain.yaml")
    source = (
        "sources:\n"
        f"  - {{type: simulate, streams: {streams}, rate_hz: {rate_hz:g}, fault_after: 0.1s,\n"
        f"     fault_every: {fault_every:g}s, fault_length: {fault_length:g}s}}\n"
        if sensors
        else "sources: []\n"
    )
    config.write_text(
        f"gateway: {{id: {gateway_id}, data_dir: {workdir / 'data'}}}\n"
        "detector: {warmup: 10, baseline_halflife: 10s, threshold: 0.5, clear_threshold: 0.4,\n"
        "           min_duration: 1, cooldown: 0s, max_gap: 1h}\n"
        "storage: {checkpoint_every: 200ms}\n"
        + source
        + f"upstream:\n  broker: {{host: {host}, port: {port}, keepalive: 5}}\n"
        f"  topic_prefix: {PREFIX}\n  max_inflight: {MAX_INFLIGHT}\n"
        "  reconnect_min_delay: 100ms\n  reconnect_max_delay: 1s\n  drain_timeout: 5s\n"
    )
    return config


class Watcher:
    """The upstream subscriber: every message under the prefix, in arrival order."""

    def __init__(self, host: str, port: int, gateway_id: str) -> None:
        self.alert_ids: list[str] = []
        self.presence: queue.Queue[bytes] = queue.Queue()
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"soak-watch-{os.getpid()}-{random.random()}"
        )
        topic = f"{PREFIX}/{gateway_id}/#"
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the watcher could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/status"):
            self.presence.put(msg.payload)
        elif "/alerts/" in msg.topic:
            with self._lock:
                self.alert_ids.append(json.loads(msg.payload)["id"])

    def wait_presence(self, state: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.presence.get(timeout=0.1) == state:
                    return
            except queue.Empty:
                pass
        raise TimeoutError(f"no {state.decode()} presence within {timeout} s")

    def forget_presence(self) -> None:
        """Drop presence messages of earlier lives (a start-up kill leaves some unread)."""
        while True:
            try:
                self.presence.get_nowait()
            except queue.Empty:
                return

    def received(self) -> list[str]:
        with self._lock:
            return list(self.alert_ids)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def outbox(db: Path) -> tuple[list[str], int, set[str]]:
    """(alert msg ids in outbox order, undelivered rows, ids of every recorded alert change)."""
    conn = sqlite3.connect(db)
    try:
        ids = [
            r[0]
            for r in conn.execute("SELECT msg_id FROM outbox WHERE kind = 'alert' ORDER BY seq")
        ]
        pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE delivered_ts IS NULL").fetchone()[
            0
        ]
        changes = {f"{r[0]}:raised" for r in conn.execute("SELECT id FROM alerts")}
        changes |= {
            f"{r[0]}:cleared"
            for r in conn.execute("SELECT id FROM alerts WHERE cleared_ts IS NOT NULL")
        }
        return ids, int(pending), changes
    finally:
        conn.close()


def run_soak(
    iterations: int,
    workdir: Path,
    host: str,
    port: int,
    *,
    seed: int = 1,
    max_wait: float = 1.0,
    progress: bool = False,
    phases: tuple[str, ...] = ("running",),
    streams: int = STREAMS,
    fault_every: float = FAULT_EVERY,
    fault_length: float = FAULT_LENGTH,
) -> dict[str, Any]:
    """The kill loop; returns counts. Raises AssertionError on a broken promise."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    config = gateway_config(
        workdir, host, port, streams=streams, fault_every=fault_every, fault_length=fault_length
    )
    kills = dict.fromkeys(phases, 0)
    db = workdir / "data" / "gateway.db"
    log = workdir / "gateway.log"
    watcher = Watcher(host, port, "gw-soak")
    offline_after_kill = 0
    try:
        for i in range(iterations):
            phase = rng.choice(phases)
            watcher.forget_presence()
            proc = start(config, log)
            try:
                if phase == "startup":
                    time.sleep(rng.uniform(0.0, 1.5))
                else:
                    watcher.wait_presence(b"online")
                    time.sleep(rng.uniform(0.0, max_wait))
                    if phase == "drain":
                        proc.send_signal(signal.SIGTERM)
                        time.sleep(rng.uniform(0.0, 0.5))
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
            kills[phase] += 1
            check = integrity(db)
            assert check == "ok", f"integrity_check after kill {i + 1} ({phase}): {check}"
            if phase != "startup":  # a start-up kill may come before it ever connected
                watcher.wait_presence(b"offline", timeout=10)  # the will, or a clean stop's
                offline_after_kill += 1
            if progress and (i + 1) % 50 == 0:
                print(
                    f"  {i + 1} kills, {len(set(watcher.received()))} alerts upstream", flush=True
                )
        # One last, clean run without sensors (they would keep raising alerts up to the very
        # SIGTERM, and those wait in the outbox for the next start): forward everything that
        # is left, then SIGTERM.
        watcher.forget_presence()  # a start-up kill can leave an old `online` unanswered
        proc = start(gateway_config(workdir, host, port, sensors=False), log)
        try:
            watcher.wait_presence(b"online")
            deadline = time.monotonic() + 60
            while outbox(db)[1] and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
        assert code == 0, f"the final SIGTERM exited {code}"
        watcher.wait_presence(b"offline", timeout=10)
        committed, _, changes = outbox(db)
        deadline = time.monotonic() + 30
        while not set(committed) <= set(watcher.received()) and time.monotonic() < deadline:
            time.sleep(0.1)
        received = watcher.received()
    finally:
        watcher.close()
    missing = [c for c in committed if c not in set(received)]
    first_seen = list(dict.fromkeys(r for r in received if r in set(committed)))
    return {
        "iterations": iterations,
        "kills_by_phase": kills,
        "offline_will_seen": offline_after_kill,
        "alerts_committed": len(committed),
        "alert_changes_recorded": len(changes),
        "changes_without_outbox_row": len(changes - set(committed)),
        "alerts_received": len(received),
        "alerts_missing": len(missing),
        "duplicates": len(received) - len(set(received)),
        "duplicate_rate": (len(received) - len(set(received))) / max(1, len(set(received))),
        "in_outbox_order": first_seen == committed,
        "max_inflight": MAX_INFLIGHT,
        "final_exit_code": code,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--broker", help="HOST:PORT of a running broker (default: start one)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("soak_kill.json"))
    parser.add_argument(
        "--phases", default="running", help="comma-separated, from running, startup, drain"
    )
    parser.add_argument("--streams", type=int, default=STREAMS, help="simulated streams")
    parser.add_argument(
        "--fault-every", type=float, default=FAULT_EVERY, help="seconds between faults"
    )
    parser.add_argument(
        "--fault-length", type=float, default=FAULT_LENGTH, help="seconds each fault lasts"
    )
    args = parser.parse_args()
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    unknown = set(phases) - {"running", "startup", "drain"}
    if not phases or unknown:
        parser.error(f"--phases: unknown {', '.join(sorted(unknown)) or '(none given)'}")
    workdir = Path(tempfile.mkdtemp(prefix="soak-kill-"))
    mosquitto = None
    if args.broker:
        host, _, port_text = args.broker.rpartition(":")
        port = int(port_text)
    else:
        host, port = "127.0.0.1", _free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            ("user root\n" if os.geteuid() == 0 else "")
            + f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
        )
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        mosquitto = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    started = time.monotonic()
    try:
        result = run_soak(
            args.iterations,
            workdir / "gw",
            host,
            port,
            seed=args.seed,
            progress=True,
            phases=phases,
            streams=args.streams,
            fault_every=args.fault_every,
            fault_length=args.fault_length,
        )
    finally:
        if mosquitto is not None:
            mosquitto.terminate()
            mosquitto.wait(10)
    result["seconds"] = round(time.monotonic() - started, 1)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(
            f"{key:<{width}}  {value:.4f}"
            if isinstance(value, float)
            else f"{key:<{width}}  {value}"
        )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}; work files in {workdir}")
    ok = result["alerts_missing"] == 0 and result["changes_without_outbox_row"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
