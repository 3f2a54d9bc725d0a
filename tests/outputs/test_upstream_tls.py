"""Upstream security against a real Mosquitto TLS listener, with certificates made by the test.

The listener wants a client certificate from the test CA and a user name and password; the
password reaches the gateway only through a file in ``$CREDENTIALS_DIRECTORY``. A wrong CA,
a wrong host name or a missing client certificate must fail with a clear error, never fall
back to plaintext, and never show the password in logs or status.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.config import Config, ConfigError, parse_config, redacted
from gateway.outputs.mqtt import Forwarder
from gateway.records import Batch
from gateway.store import Store
from tests.helpers import wait_for
from tests.upstream import GW, PREFIX, Subscriber, alert

if TYPE_CHECKING:
    from tests.conftest import TlsBroker


def tls_config(
    broker: TlsBroker,
    tmp_path: Path,
    *,
    host: str = "localhost",
    ca: Path | None = None,
    client_cert: bool = True,
) -> Config:
    cert, key = broker.client
    lines = [
        f"gateway: {{id: {GW}, data_dir: {tmp_path / 'data'}}}",
        "upstream:",
        f"  topic_prefix: {PREFIX}",
        "  reconnect_min_delay: 200ms",
        "  reconnect_max_delay: 1s",
        f"  broker: {{host: {host}, port: {broker.tls_port}, keepalive: 5,",
        f"           username: {broker.USER}, password_file: mqtt-upstream,",
        f"           tls: {{ca_file: {ca or broker.ca[0]}"
        + (f", cert_file: {cert}, key_file: {key}" if client_cert else "")
        + "}}",
    ]
    return parse_config("\n".join(lines) + "\n", "gw.yaml", base=tmp_path)


@pytest.fixture
def credentials(tls_broker: TlsBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A systemd-style credentials folder holding the upstream password."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / "mqtt-upstream").write_text(tls_broker.PASSWORD + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    return folder


def start(config: Config) -> tuple[Store, Forwarder]:
    assert config.upstream is not None
    store = Store.open(config.database_path, gateway_id=GW)
    store.write_batch(Batch(alerts=[alert("pump-1"), alert("pump-2")]))
    forwarder = Forwarder(config.upstream, GW, config.database_path, poll_interval=0.1)
    forwarder.start()
    return store, forwarder


def assert_never_leaks(secret: str, caplog: pytest.LogCaptureFixture, *texts: object) -> None:
    assert secret not in caplog.text
    for text in texts:
        assert secret not in str(text)


def test_tls_client_certificate_and_credential_file_deliver(
    tls_broker: TlsBroker, credentials: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = tls_config(tls_broker, tmp_path)
    watcher = Subscriber(tls_broker)  # on the plaintext listener: sees what the gateway sent
    store, forwarder = start(config)
    try:
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="delivery over TLS")
        wait_for(lambda: len(watcher.alerts()) == 2, what="both alerts upstream")
        assert [m.payload for m in watcher.on("status")] == [b"online"]
        stats = forwarder.stats()
        assert stats["connected"] and stats["last_error"] is None
    finally:
        forwarder.stop(5)
        watcher.close()
        store.close()
    assert_never_leaks(tls_broker.PASSWORD, caplog, forwarder.stats(), redacted(config), config)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong-ca", "certificate verify failed"),
        ("wrong-host", "mismatch"),
        ("no-client-cert", "client certificate"),
        ("bad-password", "refused the connection"),
    ],
)
@pytest.mark.slow
def test_tls_failures_are_clear_and_never_plaintext(
    tls_broker: TlsBroker,
    credentials: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: str,
    expected: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    if case == "bad-password":
        (credentials / "mqtt-upstream").write_text("not-the-password")
    config = tls_config(
        tls_broker,
        tmp_path,
        host="127.0.0.1" if case == "wrong-host" else "localhost",
        ca=tls_broker.other_ca[0] if case == "wrong-ca" else None,
        client_cert=case != "no-client-cert",
    )
    watcher = Subscriber(tls_broker)
    store, forwarder = start(config)
    try:
        wait_for(
            lambda: expected in (forwarder.stats()["last_error"] or ""),
            what=f"a clear {case} error",
        )
        # Several attempts later (back-off 0.2-1 s), still nothing went anywhere.
        wait_for(lambda: caplog.text.count(expected) >= 1, what="the error in the log")
        time.sleep(1.5)
        assert not forwarder.stats()["connected"]
        assert store.outbox_backlog()[0] == 2
        assert watcher.messages == []  # no presence, no alert: nothing reached the broker
    finally:
        forwarder.stop(5)
        watcher.close()
        store.close()
    assert_never_leaks(tls_broker.PASSWORD, caplog, forwarder.stats())
    assert "not-the-password" not in caplog.text


def test_password_in_the_yaml_body_is_refused(tmp_path: Path) -> None:
    text = "upstream:\n  broker: {host: localhost, username: u, password: hunter2}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "gw.yaml", base=tmp_path)
    assert "upstream.broker.password" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("gateway_id", ["gw/7", "gw+", "gw#", "", "a b", "x" * 200])
def test_gateway_ids_that_would_break_topics_are_refused(tmp_path: Path, gateway_id: str) -> None:
    with pytest.raises(ConfigError, match=r"gateway\.id"):
        parse_config(f"gateway: {{id: '{gateway_id}'}}\n", "gw.yaml", base=tmp_path)
