"""The webhook output (#15 item 3) against a real ``http.server`` on 127.0.0.1: signed JSON
bodies, a retry after 503, 4xx refused for good, delivery resumed after an outage, and an
MQTT output that a webhook which is down does not hold back."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gateway.config import ConfigError, parse_config
from gateway.outputs import DeliveryLoop, delivery_loop
from gateway.outputs.webhook import SIGNATURE_HEADER
from gateway.records import Batch, Event
from gateway.store import Store
from tests.conftest import free_port
from tests.helpers import wait_for
from tests.upstream import GW, PREFIX, Subscriber, alert

if TYPE_CHECKING:
    from tests.conftest import Broker

SECRET = b"s3cret-key-for-tests"


class Receiver:
    """An HTTP server on a loopback port that records each POST and answers as scripted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []  # statuses to give first, then 200
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(free_port())
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "data" / "gateway.db", gateway_id=GW)
    yield s
    s.close()


def config_text(port: int, secret: Path | None, extra: str = "") -> str:
    signed = f", secret_file: {secret}" if secret else ""
    return (
        "outputs:\n"
        f"  - {{type: webhook, name: hook, url: 'http://127.0.0.1:{port}/in?site=a'{signed},"
        f" timeout: 2s, retry_min_delay: 0.2s, retry_max_delay: 0.5s,"
        f" reconnect_min_delay: 0.2s, reconnect_max_delay: 0.5s}}\n" + extra
    )


def hook_loop(store: Store, port: int, secret: Path | None, outputs: list[str]) -> DeliveryLoop:
    [section] = [o for o in parse_config(config_text(port, secret)).outputs]
    loop = delivery_loop(section, GW, store.path, "normal", outputs)
    loop._poll_interval = 0.1  # noqa: SLF001 - a test does not wait a second per round
    return loop


def test_records_are_posted_signed_and_delivered(
    receiver: Receiver, store: Store, tmp_path: Path
) -> None:
    secret = tmp_path / "hook.key"
    secret.write_bytes(SECRET + b"\n")
    store.outputs = ("hook",)
    change = alert("pump-1")
    store.write_batch(Batch(alerts=[change], events=[Event("port_lost", "line-a", 1.7e9)]))
    loop = hook_loop(store, receiver.port, secret, ["hook"])
    loop.start()
    try:
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="both delivered")
        (headers_a, body_a), (_, body_e) = receiver.requests
        expected = "sha256=" + hmac.new(SECRET, body_a, hashlib.sha256).hexdigest()
        assert headers_a[SIGNATURE_HEADER] == expected
        assert headers_a["Content-Type"] == "application/json"
        first, second = json.loads(body_a), json.loads(body_e)
        assert (first["type"], first["gateway"]) == ("alert", GW)
        assert first["id"] == headers_a["X-Gateway-Delivery"] == f"{change.alert_id}:raised"
        assert (first["record"]["stream"], first["record"]["state"]) == ("pump-1", "raised")
        assert second["type"] == "event" and second["record"]["kind"] == "port_lost"
        assert loop.stats()["delivered"] == 2
    finally:
        loop.stop(2)


def test_a_503_is_retried_and_a_400_is_refused_for_good(receiver: Receiver, store: Store) -> None:
    store.outputs = ("hook",)
    receiver.answers = [503, 400]  # first row: 503 then 200; second row: 400
    store.write_batch(Batch(events=[Event("note", s, 1.7e9) for s in ("busy", "bad", "ok")]))
    loop = hook_loop(store, receiver.port, None, ["hook"])
    loop.start()
    try:
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="every row settled")
        subjects = [b["record"]["subject"] for b in receiver.bodies()]
        # busy: 503 (parked); bad: 400 (quarantined); ok; then busy again after its back-off.
        assert subjects == ["busy", "bad", "ok", "busy"]
        share = store.output_backlog("hook")
        assert (share["delivered"], share["quarantined"]) == (2, 1)
        wait_for(lambda: loop.stats()["quarantined"] == 1, what="quarantine in stats")
        stats = loop.stats()
        assert stats["failures"] == 1 and stats["dead_letters"] == 1
        (error,) = store.db.execute(
            "SELECT last_error FROM deliveries WHERE quarantined_ts IS NOT NULL"
        ).fetchone()
        assert error.startswith("HTTP 400 from http://127.0.0.1:")
        assert "site=a" not in error  # the query (a token, perhaps) is never shown
    finally:
        loop.stop(2)


def test_a_clear_is_posted_only_after_its_raise(receiver: Receiver, store: Store) -> None:
    """#15 item 3: the raise got a 503 and waited for its retry; the clear went out first."""
    store.outputs = ("hook",)
    receiver.answers = [503]  # the raise, once
    change = alert("pump.temp")
    store.write_batch(Batch(alerts=[change], events=[Event("note", "other", 1.7e9)]))
    store.write_batch(Batch(alerts=[alert("pump.temp", "cleared", change.alert_id)]))
    loop = hook_loop(store, receiver.port, None, ["hook"])
    loop.start()
    try:
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="every row settled")
        posted = [b["record"]["id"] for b in receiver.bodies()]
        raised, cleared = f"{change.alert_id}:raised", f"{change.alert_id}:cleared"
        assert posted[0] == raised and posted[2:] == [raised, cleared], posted
        assert receiver.bodies()[1]["record"]["subject"] == "other"  # not held back
    finally:
        loop.stop(2)


def test_delivery_resumes_after_an_outage_and_mqtt_is_not_held_back(
    broker: Broker, receiver: Receiver, store: Store, tmp_path: Path
) -> None:
    config = parse_config(
        config_text(
            receiver.port,
            None,
            f"upstream: {{broker: {{host: {broker.host}, port: {broker.port}}}, "
            f"topic_prefix: {PREFIX}}}\n",
        )
    )
    names = [o.name for o in config.delivery_outputs()]
    assert names == ["upstream", "hook"]
    store.outputs = tuple(names)
    receiver.stop()  # the webhook's server is down from the start
    watcher = Subscriber(broker)
    loops = [delivery_loop(o, GW, store.path, "normal", names) for o in config.delivery_outputs()]
    for loop in loops:
        loop._poll_interval = 0.1  # noqa: SLF001
        loop.start()
    try:
        changes = [alert(f"pump-{i}") for i in range(5)]
        store.write_batch(Batch(alerts=changes))
        for loop in loops:
            loop.notify()
        wait_for(lambda: len(watcher.alerts()) == 5, what="MQTT delivered while the hook is down")
        wait_for(lambda: loops[1].stats()["backlog"] == 5, what="the hook's backlog")
        assert not loops[1].stats()["connected"]
        assert "no answer from http://127.0.0.1" in (loops[1].stats()["last_error"] or "")
        assert store.outbox_backlog()[0] == 5  # not prunable while the hook owes them
        wait_for(lambda: loops[0].stats()["backlog"] == 0, what="upstream's backlog empty")
        receiver.start()
        wait_for(lambda: store.outbox_backlog()[0] == 0, timeout=20, what="the hook caught up")
        ids = [b["id"] for b in receiver.bodies()]
        assert ids == [f"{c.alert_id}:raised" for c in changes]  # in order, each once
        assert len(watcher.alerts()) == 5  # MQTT sent nothing twice
    finally:
        for loop in loops:
            loop.stop(2)
        watcher.close()


def test_webhook_config_is_checked() -> None:
    for bad, message in (
        ("ftp://host/x", "http:// or https://"),
        ("http://user:pw@host/x", "must not hold credentials"),
        ("http:///x", "with a host"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config(f"outputs: [{{type: webhook, name: h, url: '{bad}'}}]\n")


def test_the_daemon_runs_each_output_reports_it_and_reloads_it(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The daemon starts a delivery thread per output; status, the status line, metrics and
    the CLI's status table show each; a reload that removes the output stops its thread."""
    from gateway.cli.app import _status_table
    from gateway.config import load_config
    from gateway.ops.daemon import Gateway

    config = tmp_path / "gw.yaml"
    config.write_text(
        f"gateway: {{id: {GW}, data_dir: {tmp_path / 'data'}}}\n"
        "metrics: {listen: null}\n" + config_text(receiver.port, None)
    )
    gateway = Gateway(load_config(config), config)
    gateway.start()
    try:
        assert list(gateway.outputs) == ["hook"] and gateway.forwarder is None
        with Store.open(tmp_path / "data" / "gateway.db", gateway_id=GW) as store:
            store.write_batch(Batch(alerts=[alert("pump-1")]))
        gateway._notify_forwarder()  # noqa: SLF001 - what the pipeline calls after a commit
        wait_for(lambda: len(receiver.requests) == 1, what="posted by the daemon's output")
        wait_for(lambda: gateway.outputs["hook"].stats()["backlog"] == 0, what="stats")
        status = gateway._component_status()  # noqa: SLF001
        assert status["upstream"] is None and status["outputs"]["hook"]["delivered"] == 1
        assert not [f for f in status["degraded"] if "hook" in f]
        readout = gateway.metrics_readout()
        assert readout.outputs["hook"]["delivered"] == 1
        shown = {**status, "running": True, "uptime_s": 1, "open_alerts": 0}
        table = _status_table({**shown, "dead_letters_stored": {}}, 0, None)
        assert "output    hook: connected; backlog 0" in table
        receiver.stop()
        with Store.open(tmp_path / "data" / "gateway.db", gateway_id=GW) as store:
            store.write_batch(Batch(alerts=[alert("pump-2")]))
        gateway._notify_forwarder()  # noqa: SLF001
        wait_for(
            lambda: "output hook disconnected" in gateway._component_status()["degraded"],  # noqa: SLF001
            what="the hook's outage in degraded",
        )
        config.write_text(config.read_text().split("outputs:")[0])
        gateway.reload()
        assert gateway.outputs == {}
    finally:
        gateway.shutdown()


def test_the_secret_is_never_logged(
    receiver: Receiver, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "hook.key"
    secret.write_bytes(SECRET)
    store.outputs = ("hook",)
    receiver.answers = [500, 400]
    store.write_batch(Batch(events=[Event("note", s, 1.7e9) for s in ("a", "b")]))
    caplog.set_level("DEBUG")
    loop = hook_loop(store, receiver.port, secret, ["hook"])
    loop.start()
    try:
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="settled")
    finally:
        loop.stop(2)
    assert "signed" in caplog.text
    assert SECRET.decode() not in caplog.text
    assert SECRET.decode() not in json.dumps(loop.stats())
