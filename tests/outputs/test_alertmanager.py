"""The Alertmanager output (#15 item 3) against Debian's ``prometheus-alertmanager``, started
on a free loopback port: a raised alert is an active Alertmanager alert with the gateway's
labels and annotations, its clear resolves it, events send nothing, a malformed alert
is quarantined while the rest go on, and an alert still active is re-sent (#15: it resolved
itself after a day) from the store's alerts table, across a restart."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from gateway.outputs import DeliveryLoop, delivery_loop
from gateway.outputs.alertmanager import ALERTNAME
from gateway.records import Batch, Contribution, Event
from gateway.store import Store
from tests.conftest import free_port, wait_for_port
from tests.helpers import stop_process, wait_for
from tests.upstream import GW, alert

EXE = "/usr/bin/prometheus-alertmanager"


class Alertmanager:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "alertmanager.yml"
        config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
        with (workdir / "alertmanager.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    shutil.which("prometheus-alertmanager") or EXE,
                    f"--config.file={config}",
                    f"--storage.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",  # no gossip port: one process, loopback only
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_for_port(self.port)
        wait_for(lambda: self._get("/-/ready") == "OK", what="alertmanager ready")

    def _get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:  # noqa: S310
                return str(response.read().decode())
        except OSError:
            return ""

    def alerts(self) -> list[dict[str, Any]]:
        """The active alerts (a resolved one is no longer listed)."""
        return list(json.loads(self._get("/api/v2/alerts") or "[]"))

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    if not (shutil.which("prometheus-alertmanager") or Path(EXE).exists()):
        pytest.fail(
            "prometheus-alertmanager is not installed: .ci/run installs it "
            "(apt-get install prometheus-alertmanager)"
        )
    server = Alertmanager(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "data" / "gateway.db", gateway_id=GW)
    s.outputs = ("am",)
    yield s
    s.close()


def am_loop(store: Store, url: str, extra: str = "") -> DeliveryLoop:
    config = parse_config(
        f"outputs: [{{type: alertmanager, name: am, url: '{url}', severity: critical,"
        f" retry_min_delay: 0.2s, retry_max_delay: 0.5s, reconnect_min_delay: 0.2s{extra}}}]\n"
    )
    loop = delivery_loop(config.outputs[0], GW, store.path, "normal", ["am"])
    loop._poll_interval = 0.1  # noqa: SLF001 - a test does not wait a second per round
    loop.start()
    return loop


def test_raised_is_active_with_its_labels_and_the_clear_resolves_it(
    alertmanager: Alertmanager, store: Store
) -> None:
    raised = replace(
        alert("line-a-pump"),
        contributors=(
            Contribution("line-a.temperature", 81.5, 60.25, (55.0, 65.5), 0.8, "degC"),
            Contribution("line-a.pressure", 2.1, 2.0, (1.8, 2.2), 0.2, "bar"),
        ),
    )
    store.write_batch(Batch(alerts=[raised], events=[Event("port_lost", "line-a", 1.7e9)]))
    loop = am_loop(store, alertmanager.url)
    try:
        wait_for(lambda: len(alertmanager.alerts()) == 1, what="the alert in alertmanager")
        [active] = alertmanager.alerts()
        assert active["status"]["state"] == "active"
        assert active["labels"] == {
            "alertname": ALERTNAME,
            "gateway": GW,
            "stream": "line-a-pump",
            "asset": "line-a-pump",
            "severity": "critical",
            "alert_id": raised.alert_id,
        }
        notes = active["annotations"]
        assert notes["observed"] == "81.5 degC" and notes["expected"] == "60.25 degC"
        assert notes["band"] == "55 to 65.5 degC"
        assert notes["explanation"].startswith("line-a.temperature read 81.5 degC, expected")
        assert "line-a.pressure" in notes["explanation"]
        assert active["startsAt"].startswith("2023-11-14T22:13:20.5")
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="alert and event settled")
        assert loop.stats()["delivered"] == 2  # the event needs no request
        store.write_batch(Batch(alerts=[replace(raised, state="cleared", ts=1_700_000_100.0)]))
        loop.notify()
        wait_for(lambda: alertmanager.alerts() == [], what="the clear resolved it")
    finally:
        loop.stop(2)


def test_a_lone_stream_has_no_asset_label_and_a_malformed_alert_holds_nothing_back(
    alertmanager: Alertmanager, store: Store
) -> None:
    good = alert("pump-7")
    store.write_batch(Batch(alerts=[good]))
    # A row Alertmanager refuses with 400 (its ts is no time: a foreign writer, a damaged
    # row): quarantined for this output, and the alert behind it still goes.
    store.db.execute(
        "INSERT INTO outbox (msg_id, kind, subject, payload, created_ts) VALUES "
        "('bad:raised', 'alert', 'x', ?, 1.0)",
        [
            json.dumps(
                {
                    "alert_id": "bad",
                    "gateway": GW,
                    "stream": "x",
                    "state": "raised",
                    "ts": "not a time",
                }
            )
        ],
    )
    loop = am_loop(store, alertmanager.url)
    try:
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="both settled")
        [active] = alertmanager.alerts()
        assert active["labels"]["stream"] == "pump-7" and "asset" not in active["labels"]
        assert store.output_backlog("am")["quarantined"] == 1
        (error,) = store.db.execute(
            "SELECT last_error FROM deliveries WHERE quarantined_ts IS NOT NULL"
        ).fetchone()
        assert error.startswith("HTTP 400")
    finally:
        loop.stop(2)


def ends_at(server: Alertmanager, alert_id: str) -> float:
    """The alert's endsAt as a POSIX time; 0 when Alertmanager lists it no longer."""
    found = [a for a in server.alerts() if a["labels"]["alert_id"] == alert_id]
    if not found:
        return 0.0
    return datetime.fromisoformat(found[0]["endsAt"].replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
def test_an_active_alert_is_re_sent_across_a_restart_and_resolves_once_nobody_does(
    alertmanager: Alertmanager, store: Store
) -> None:
    """resend_interval 1 s, so endsAt is 4 s ahead: the alert outlives its first endsAt while
    re-sent (by a second loop too, that never saw its outbox row), a cleared one is not
    re-sent, and with nobody re-sending it resolves itself at its last endsAt."""
    lasting, short = alert("pump-1"), alert("pump-2")
    store.write_batch(Batch(alerts=[lasting, short]))
    loop = am_loop(store, alertmanager.url, ", resend_interval: 1s")
    try:
        wait_for(lambda: ends_at(alertmanager, lasting.alert_id), what="the alert sent")
        first = ends_at(alertmanager, lasting.alert_id)
        assert first < time.time() + 5  # four intervals ahead, not a day
        store.write_batch(Batch(alerts=[replace(short, state="cleared", ts=1_700_000_100.0)]))
        loop.notify()
        wait_for(lambda: ends_at(alertmanager, short.alert_id) == 0, what="the clear")
        wait_for(
            lambda: ends_at(alertmanager, lasting.alert_id) > first + 0.5,
            what="endsAt moved on by a re-send",
        )
        wait_for(lambda: loop.stats()["resent"] >= 2, what="two re-sends")
    finally:
        loop.stop(2)
    # A new process: its outbox holds nothing to send, the alerts table says what is open.
    assert store.outbox_backlog()[0] == 0
    moved = ends_at(alertmanager, lasting.alert_id)
    assert moved > first
    again = am_loop(store, alertmanager.url, ", resend_interval: 1s")
    try:
        wait_for(
            lambda: ends_at(alertmanager, lasting.alert_id) > moved + 0.5,
            what="re-sent by the restarted output",
        )
        assert ends_at(alertmanager, short.alert_id) == 0  # cleared: never re-sent
        assert again.stats()["resend_failures"] == 0
    finally:
        again.stop(2)
    # Nobody re-sends it now (the gateway is gone): Alertmanager resolves it by its endsAt,
    # four intervals after the last re-send rather than a day.
    wait_for(lambda: alertmanager.alerts() == [], timeout=30, what="resolved by its endsAt")


def test_raised_for_is_four_resend_intervals_unless_set_and_must_outlast_one() -> None:
    def section(extra: str) -> Any:
        text = f"outputs: [{{type: alertmanager, name: am, url: 'http://127.0.0.1:9'{extra}}}]\n"
        return parse_config(text).outputs[0]

    assert (section("").resend_interval, section("").ends_after) == (60.0, 240.0)
    assert section(", resend_interval: 10s").ends_after == 40.0
    assert section(", raised_for: 1d").ends_after == 86400.0
    with pytest.raises(ConfigError, match="raised_for must be longer than resend_interval"):
        section(", resend_interval: 5m, raised_for: 5m")
    with pytest.raises(ConfigError):
        section(", resend_interval: 0.1s")
