"""Ten real gateway processes share one upstream broker without interfering.

Each has its own id, data dir and client id; every message under ``{prefix}/{id}/`` must come
from that gateway (its payload names it), each alert id appears under exactly one gateway and
matches that gateway's own outbox, and every gateway's presence goes online and then offline.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import Subscriber, wait_for
from tools.soak_kill import PREFIX, gateway_config

if TYPE_CHECKING:
    from tests.conftest import Broker

ROOT = Path(__file__).resolve().parents[2]
FLEET = 10


@pytest.mark.slow
def test_ten_gateways_share_one_broker(broker: Broker, tmp_path: Path) -> None:
    watcher = Subscriber(broker, f"{PREFIX}/#")

    def by_topic() -> dict[str, list[bytes]]:
        found: dict[str, list[bytes]] = defaultdict(list)
        for m in watcher.messages:
            found[m.topic].append(m.payload)
        return found

    ids = [f"gw-{n:02d}" for n in range(FLEET)]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for gw in ids:
            folder = tmp_path / gw
            folder.mkdir()
            # Lighter sensors (ten gateways share two cores here), faults as rare per stream.
            config = gateway_config(
                folder, broker.host, broker.port, gateway_id=gw, streams=4, rate_hz=50,
                fault_every=0.4, fault_length=0.2,
            )  # fmt: skip
            with (folder / "gateway.log").open("wb") as log:
                procs[gw] = subprocess.Popen(
                    [sys.executable, "-m", "gateway", "run", "-c", str(config)],
                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )  # fmt: skip

        def all_alerted() -> bool:
            seen = by_topic()
            return all(alerts_of_final(seen, gw) for gw in ids)

        wait_for(all_alerted, timeout=120, what="alerts from all", every=0.1)
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for gw, proc in procs.items():
            assert proc.wait(60) == 0, gw
        wait_for(
            lambda: all(by_topic().get(f"{PREFIX}/{gw}/status", [])[-1:] == [b"offline"] for gw in ids),
            what="every gateway offline", every=0.1,
        )  # fmt: skip
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        watcher.close()

    final = by_topic()
    seen_ids: dict[str, str] = {}
    for topic, payloads in final.items():
        gw = topic.split("/")[1]
        assert gw in ids, topic
        if topic.endswith("/status"):
            assert payloads[0] == b"online" and payloads[-1] == b"offline", topic
            continue
        for payload in payloads:
            body = json.loads(payload)
            assert body["gateway"] == gw, f"{topic} carried a message of {body['gateway']}"
            assert seen_ids.setdefault(body["id"], gw) == gw, "one id under two gateways"
    for gw in ids:
        conn = sqlite3.connect(tmp_path / gw / "data" / "gateway.db")
        delivered = {r[0] for r in conn.execute(
            "SELECT msg_id FROM outbox WHERE kind = 'alert' AND delivered_ts IS NOT NULL")}  # fmt: skip
        conn.close()
        assert delivered <= {a["id"] for a in alerts_of_final(final, gw)}, gw


def alerts_of_final(by_topic: dict[str, list[bytes]], gw: str) -> list[dict]:
    return [
        json.loads(p)
        for t, ps in by_topic.items()
        if t.startswith(f"{PREFIX}/{gw}/alerts/")
        for p in ps
    ]
