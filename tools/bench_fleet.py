"""Fleet mode: several real gateways on one machine against one broker.

Each gateway subscribes to its own share of the load (``load/g<k>/+``), forwards to the same
upstream broker under its own id, and must score exactly its share, raise the alerts of its
own fault probes, and publish them only under its own topics; presence (online, then
offline) is per gateway. Prints one table and writes JSON. Loopback only.

    python tools/bench_fleet.py [--gateways 10] [--streams 1000] [--rate 2000] [--out fleet.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.bench_e2e import REPO, Gateway, format_table, machine, run_load, start_broker  # noqa: E402
from tools.e2e_load import HOST, LoadPlan  # noqa: E402

PREFIX = "fleet"


def fleet_config(workdir: Path, k: int, port: int) -> Path:
    config = workdir / "gateway.yaml"
    config.write_text(
        f"gateway: {{id: gw-{k:02d}, data_dir: {workdir / 'data'}, log_level: warning}}\n"
        "detector: {warmup: 100, baseline_halflife: 10m, cooldown: 1s, max_gap: 1h}\n"
        "sources:\n"
        f"  - type: mqtt\n    name: load\n    broker: {{host: {HOST}, port: {port}}}\n"
        "    subscribe:\n"
        f"      - {{topic: 'load/g{k}/+', format: json, stream: '{{2}}', fields: [v], "
        "timestamp_field: ts}\n"
        f"upstream:\n  broker: {{host: {HOST}, port: {port}}}\n  topic_prefix: {PREFIX}\n"
        "ingest: {stale_factor: null}\nmetrics: {listen: null}\n"
    )
    return config


class Upstream:
    """Everything the fleet publishes upstream: alerts and presence, by topic."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-upstream")
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{PREFIX}/#", qos=1)
        client.on_subscribe = lambda c, u, mid, rc, p: ready.set()
        client.on_message = self._on_message
        client.connect(HOST, port)
        client.loop_start()
        self._client = client
        if not ready.wait(10):
            raise RuntimeError("upstream subscriber could not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload))

    def take(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def check(gateways: int, streams: int, sent: int, counts: list[int],
          messages: list[tuple[str, bytes]]) -> dict[str, Any]:  # fmt: skip
    """What must hold for the fleet not to interfere, as counts (0 problems = pass)."""
    problems: list[str] = []
    expected = [len(range(k, streams, gateways)) for k in range(gateways)]  # streams each
    if sum(counts) != sent:
        problems.append(f"scored {sum(counts)} readings of {sent} sent")
    alerts: dict[int, int] = dict.fromkeys(range(gateways), 0)
    presence: dict[int, list[str]] = {k: [] for k in range(gateways)}
    for topic, payload in messages:
        parts = topic.split("/")
        k = int(parts[1].removeprefix("gw-"))
        if parts[2] == "status":
            presence[k].append(payload.decode())
        elif parts[2] == "alerts":
            body = json.loads(payload)
            stream_index = int(body["stream"].removeprefix("s"))
            if body["gateway"] != parts[1] or stream_index % gateways != k:
                problems.append(f"{topic}: alert for {body['stream']} from {body['gateway']}")
            if body["state"] == "raised":
                alerts[k] += 1
    for k in range(gateways):
        if alerts[k] == 0:
            problems.append(f"gw-{k:02d} raised no alert for its fault probe")
        if "online" not in presence[k] or presence[k][-1] != "offline":
            problems.append(f"gw-{k:02d} presence {presence[k]}")
    return {"expected_share": expected, "alerts": alerts, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=10)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=2000, help="total readings/s")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--out", type=Path, default=Path("bench_fleet.json"))
    args = parser.parse_args(argv)
    n = args.gateways
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        broker, port = start_broker(work)
        upstream = Upstream(port)
        fleet: list[Gateway] = []
        try:
            for k in range(n):
                gw_dir = work / f"gw-{k:02d}"
                gw_dir.mkdir()
                fleet.append(Gateway(fleet_config(gw_dir, k, port), gw_dir, REPO))
            cpu0 = [gw.cpu_s() for gw in fleet]
            # The first n streams are fault probes, one per gateway (stream k -> group k).
            plan = LoadPlan(port=port, streams=args.streams, rate=args.rate,
                            duration=args.duration, probes=n, probe_hz=10.0, fault_from=12.0,
                            fault_every=4.0, fault_len=1.0, groups=n)  # fmt: skip
            load = run_load(plan)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                counts = [gw.status().get("readings", 0) for gw in fleet]
                if sum(counts) >= load.sent:
                    break
                time.sleep(0.5)
            cpu = [100.0 * (gw.cpu_s() - c0) / max(load.elapsed, 1e-9)
                   for gw, c0 in zip(fleet, cpu0, strict=True)]  # fmt: skip
            memory = [gw.memory_mb().get("VmHWM") for gw in fleet]
        finally:
            exits = [gw.stop()[0] for gw in fleet]
            time.sleep(1.0)
            messages = upstream.take()
            upstream.close()
            broker.terminate()
            broker.wait(10)
    verdict = check(n, args.streams, load.sent, counts, messages)
    rows = [
        {
            "gateway": f"gw-{k:02d}",
            "readings": counts[k],
            "streams": verdict["expected_share"][k],
            "alerts": verdict["alerts"][k],
            "CPU %": cpu[k],
            "peak RSS MB": memory[k],
            "exit": exits[k],
        }  # fmt: skip
        for k in range(n)
    ]
    print(format_table(rows, list(rows[0])))
    total_rate = load.sent / load.elapsed if load.elapsed else 0.0
    print(f"\n{n} gateways, {args.streams} streams, {total_rate:,.0f} readings/s published, "
          f"{sum(counts):,} of {load.sent:,} scored; problems: {verdict['problems'] or 'none'}")  # fmt: skip
    args.out.write_text(json.dumps({"machine": machine(), "args": vars(args) | {"out": str(args.out)},
                                    "sent": load.sent, "rate": total_rate, "gateways": rows,
                                    **verdict}, indent=2))  # fmt: skip
    print(f"wrote {args.out}")
    return 0 if not verdict["problems"] and not any(exits) else 1


if __name__ == "__main__":
    raise SystemExit(main())
