"""The OPC UA source against a real asyncua server on a loopback port (tests/opcua_server.py)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opcua_server import NAMESPACE, OpcuaServer, make_certificate

from gateway.cli.dryrun import dry_run
from gateway.config import (
    SOURCE_TAGS,
    ConfigError,
    IngestSection,
    OpcuaSource,
    load_located,
    parse_config,
    redacted,
)
from gateway.config.checks import offline_issues
from gateway.pipeline.staleness import StalenessTracker
from gateway.records import Reading, Record
from gateway.sources import SOURCE_TYPES, Source, build_source, source_class
from gateway.sources.opcua import OpcuaSubscriber
from tests.conftest import free_port
from tests.helpers import ListSink, wait_for


@pytest.fixture(scope="module")
def running_server() -> Iterator[OpcuaServer]:
    """One server for the module (building its address space takes a second or two)."""
    server = OpcuaServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def server(running_server: OpcuaServer) -> OpcuaServer:
    running_server.reset()  # each test starts from the initial values, server up
    return running_server


def section(endpoint: str, nodes: list[dict[str, Any]], **extra: Any) -> OpcuaSource:
    return OpcuaSource.model_validate(settings(endpoint, nodes, **extra))


def settings(endpoint: str, nodes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A source's YAML as a dict: quick to reconnect, so tests need not wait long."""
    return {
        "type": "opcua",
        "name": "press-1",
        "endpoint": endpoint,
        "publishing_interval": 0.05,
        "timeout": 1.0,
        "reconnect_min": 0.05,
        "reconnect_max": 0.2,
        "stream_prefix": "p1.",
        "nodes": nodes,
        **extra,
    }


def latest(sink: ListSink, stream: str) -> float | None:
    readings = sink.readings(stream)
    return readings[-1].value if readings else None


def ns(server: OpcuaServer, name: str) -> str:
    return f"ns={server.ns};s={name}"


def test_data_changes_become_readings_with_the_configured_names(server: OpcuaServer) -> None:
    nodes = [
        {"node": ns(server, "pump.temp"), "stream": "temp", "unit": "degC"},
        {"node": f"nsu={NAMESPACE};s=pump.pressure", "stream": "pressure", "scale": 100},
        {"node": ns(server, "pump.running"), "stream": "running"},
        {"node": ns(server, "pump.count"), "stream": "count"},
    ]
    sink = ListSink()
    source = build_source(section(server.endpoint, nodes), sink)
    assert isinstance(source, OpcuaSubscriber)
    source.start()
    try:
        # Each subscribed node sends its value once at the start.
        wait_for(lambda: len({r.stream for r in sink.readings()}) == 4, what="initial values")
        first = {r.stream: r for r in sink.readings()}
        assert first["p1.temp"].value == 21.5 and first["p1.temp"].unit == "degC"
        assert first["p1.pressure"].value == pytest.approx(120.0)
        assert first["p1.running"].value == 1.0
        assert first["p1.count"].value == 7.0
        assert all(r.source == "press-1" for r in first.values())

        stamp = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        server.write("pump.temp", 22.25, source_ts=stamp)
        server.write("pump.running", False)
        wait_for(lambda: len(sink.readings("p1.temp")) >= 2, what="a changed temperature")
        wait_for(lambda: len(sink.readings("p1.running")) >= 2, what="a changed bool")
        changed = sink.readings("p1.temp")[-1]
        assert changed.value == 22.25
        assert changed.ts == stamp.timestamp()  # the device's time, not the time of receipt
        assert sink.readings("p1.running")[-1].value == 0.0
        stats = source.stats()
        assert stats["connected"] is True and stats["subscribed"] == 4
        assert stats["nodes_refused"] == {} and stats["dead_letters_total"] == 0
    finally:
        source.stop()
        assert source.join(10)


def test_strings_and_bad_status_are_dead_letters_and_a_missing_node_an_event(
    server: OpcuaServer,
) -> None:
    nodes = [
        {"node": ns(server, "pump.temp"), "stream": "temp"},
        {"node": ns(server, "pump.label"), "stream": "label"},
        {"node": ns(server, "no.such.node"), "stream": "ghost"},
        {"node": f"nsu={NAMESPACE};s=pump.temp", "stream": "temp-again"},  # the same node
    ]
    sink = ListSink()
    source = build_source(section(server.endpoint, nodes), sink)
    source.start()
    try:
        wait_for(lambda: sink.readings("p1.temp"), what="the temperature")
        wait_for(lambda: len(sink.events("node_refused")) == 2, what="the refused nodes")
        wait_for(lambda: sink.dead(), what="the string's dead letter")
        refused = {e.detail["node"]: e.detail["status"] for e in sink.events("node_refused")}
        assert refused == {
            ns(server, "no.such.node"): "BadNodeIdUnknown",
            f"nsu={NAMESPACE};s=pump.temp": f"the same node as {ns(server, 'pump.temp')}",
        }
        dead = sink.dead()[0]
        assert dead.reason == "not_a_number" and "P-101" in dead.detail + str(dead.payload)

        server.write("pump.temp", 0.0, status=ua_bad_sensor())
        wait_for(lambda: len(sink.dead()) >= 2, what="the bad status")
        assert sink.dead()[-1].reason == "bad_status"
        assert "BadSensorFailure" in sink.dead()[-1].detail
        server.write("pump.temp", 30.0)  # the good nodes carry on
        wait_for(lambda: latest(sink, "p1.temp") == 30.0, what="the next value")
        stats = source.stats()
        assert stats["dead_letters"] == {"not_a_number": 1, "bad_status": 1}
        assert stats["nodes_refused"] == refused
        assert stats["subscribed"] == 2 and stats["connected"] is True
        assert not sink.readings("p1.temp-again")
    finally:
        source.stop()
        assert source.join(10)


def ua_bad_sensor() -> int:
    from asyncua import ua

    return int(ua.StatusCodes.BadSensorFailure)


class StaleSink(ListSink):
    """A sink that also runs the pipeline's staleness tracker over what arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = StalenessTracker(IngestSection(stale_factor=3.0, stale_min=0.5))

    def put(self, record: Record) -> None:
        super().put(record)
        for event in self.tracker.observe([record] if isinstance(record, Reading) else []):
            super().put(event)

    def check(self) -> bool:
        for event in self.tracker.check():
            super().put(event)
        return True


@pytest.mark.slow
def test_a_restarted_server_is_reconnected_and_readings_resume(server: OpcuaServer) -> None:
    nodes = [{"node": ns(server, "pump.temp"), "stream": "temp"}]
    sink = StaleSink()
    source = build_source(section(server.endpoint, nodes), sink)
    source.start()
    try:
        wait_for(lambda: sink.readings("p1.temp"), what="the first reading")
        for n in range(8):  # a steady stream: the tracker learns its interval
            server.write("pump.temp", 20.0 + n)
            wait_for(lambda n=n: latest(sink, "p1.temp") == 20.0 + n, what="a reading")
            sink.check()
            time.sleep(0.05)
        server.stop()
        wait_for(lambda: sink.events("server_lost"), what="server_lost")
        assert source.stats()["connected"] is False
        wait_for(lambda: sink.check() and sink.events("stale"), what="a stale stream")
        server.start()
        wait_for(lambda: sink.events("server_recovered"), what="server_recovered")
        server.write("pump.temp", 99.0)
        wait_for(lambda: latest(sink, "p1.temp") == 99.0, what="readings again")
        wait_for(lambda: sink.events("recovered"), what="the stream's recovery")
        assert len(sink.events("server_lost")) == 1  # once, however many attempts failed
        stats = source.stats()
        assert stats["connected"] is True and stats["reconnects"] == 1
    finally:
        source.stop()
        assert source.join(10)


def test_every_source_type_of_the_config_has_a_driver() -> None:
    assert set(SOURCE_TYPES) == set(SOURCE_TAGS)
    for kind in SOURCE_TYPES:
        assert issubclass(source_class(kind), Source)
    with pytest.raises(ValueError, match="unknown source type"):
        source_class("kafka")


def test_opcua_config_is_checked_offline(tmp_path: Path) -> None:
    def load(**extra: Any) -> None:
        text = yaml.safe_dump(
            {
                "sources": [
                    {
                        "type": "opcua",
                        "name": "press-1",
                        "endpoint": "opc.tcp://127.0.0.1:4840/",
                        "nodes": [{"node": "ns=2;s=a", "stream": "a"}],
                        **extra,
                    }
                ]
            }
        )
        parse_config(text, "gw.yaml", base=tmp_path)

    load()
    load(nodes=[{"node": "nsu=urn:x:y;i=42", "stream": "a"}, {"node": "i=2258", "stream": "b"}])
    cases = {
        "must be an opc.tcp": {"endpoint": "http://127.0.0.1:4840/"},
        "not an OPC UA node id": {"nodes": [{"node": "ns=2;x=a", "stream": "a"}]},
        "not a valid name": {"nodes": [{"node": "ns=2;s=a", "stream": "a/b"}]},
        "stream_prefix \\+ stream is not a valid name": {"stream_prefix": "bad prefix."},
        "stream names must be unique": {
            "nodes": [{"node": "ns=2;s=a", "stream": "a"}, {"node": "ns=2;s=b", "stream": "a"}]
        },
        "a node is listed twice": {
            "nodes": [{"node": "ns=2;s=a", "stream": "a"}, {"node": "ns=2;s=a", "stream": "b"}]
        },
        "needs cert_file, key_file, server_cert_file": {"security": {"policy": "Basic256Sha256"}},
        "policy None uses no certificates": {"security": {"cert_file": "c.der"}},
        "a password needs a username": {"password_env": "OPC_PASSWORD"},
        "secrets may not be written in the config": {"username": "u", "password": "hunter2"},
        "unknown key": {"browse": "Objects/Pump"},
    }
    for message, extra in cases.items():
        with pytest.raises(ConfigError, match=message):
            load(**extra)


def test_certificate_files_are_validated_like_tls_files(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path, "client", "urn:liquid-gateway:test")
    (tmp_path / "garbage.der").write_bytes(b"not a certificate")
    (tmp_path / "secret").write_text("s3cret\n")
    text = yaml.safe_dump(
        {
            "sources": [
                {
                    "type": "opcua",
                    "name": "press-1",
                    "endpoint": "opc.tcp://127.0.0.1:4840/",
                    "nodes": [{"node": "ns=2;s=a", "stream": "a"}],
                    "username": "gateway",
                    "password_file": "secret",
                    "security": {
                        "policy": "Basic256Sha256",
                        "cert_file": cert.name,
                        "key_file": "missing.pem",
                        "server_cert_file": "garbage.der",
                    },
                }
            ]
        }
    )
    (tmp_path / "gw.yaml").write_text(text)
    located = load_located(tmp_path / "gw.yaml")
    source = located.config.sources[0]
    assert isinstance(source, OpcuaSource)
    assert source.password is not None and source.password.get_secret_value() == "s3cret"
    assert "s3cret" not in str(redacted(located.config))
    issues = {i.path: i.message for i in offline_issues(located).issues}
    assert set(issues) == {"sources[0].security.key_file", "sources[0].security.server_cert_file"}
    assert "does not exist" in issues["sources[0].security.key_file"]
    assert "is not a certificate" in issues["sources[0].security.server_cert_file"]
    # The files that are there and load pass: a key that is a certificate does not.
    text = text.replace("missing.pem", cert.name).replace("garbage.der", cert.name)
    (tmp_path / "gw.yaml").write_text(text)
    issues = {i.path: i.message for i in offline_issues(load_located(tmp_path / "gw.yaml")).issues}
    assert set(issues) == {"sources[0].security.key_file"}
    assert "is not a private key" in issues["sources[0].security.key_file"]
    text = text.replace(f"key_file: {cert.name}", f"key_file: {key.name}")
    (tmp_path / "gw.yaml").write_text(text)
    assert offline_issues(load_located(tmp_path / "gw.yaml")).issues == []


@pytest.mark.slow
def test_sign_and_encrypt_with_certificates_and_a_password(tmp_path: Path) -> None:
    server_cert, server_key = make_certificate(tmp_path, "server", "urn:test:server")
    client_cert, client_key = make_certificate(tmp_path, "client", "urn:liquid-gateway:press-1")
    other_cert, _ = make_certificate(tmp_path, "impostor", "urn:test:impostor")
    (tmp_path / "opcua-password").write_text("s3cret\n")
    server = OpcuaServer(
        free_port(), cert=server_cert, key=server_key, username="gateway", password="s3cret"
    )
    server.start()
    try:

        def run(trusted: Path, password_file: str) -> tuple[ListSink, OpcuaSubscriber]:
            text = yaml.safe_dump(
                {
                    "sources": [
                        {
                            **settings(
                                server.endpoint,
                                [{"node": ns(server, "pump.temp"), "stream": "temp"}],
                            ),
                            "username": "gateway",
                            "password_file": password_file,
                            "security": {
                                "policy": "Basic256Sha256",
                                "mode": "SignAndEncrypt",
                                "cert_file": client_cert.name,
                                "key_file": client_key.name,
                                "server_cert_file": trusted.name,
                            },
                        }
                    ]
                }
            )
            config = parse_config(text, "gw.yaml", base=tmp_path)
            sink = ListSink()
            source = build_source(config.sources[0], sink)
            assert isinstance(source, OpcuaSubscriber)
            source.start()
            return sink, source

        sink, source = run(server_cert, "opcua-password")
        try:
            wait_for(
                lambda: latest(sink, "p1.temp") == 21.5, what="a reading over the secure channel"
            )
            assert source.stats()["security"] == "Basic256Sha256"
        finally:
            source.stop()
            assert source.join(10)

        # A server whose certificate is not the one trusted is never talked to.
        sink, source = run(other_cert, "opcua-password")
        try:
            wait_for(lambda: sink.events("server_lost"), what="the refused server")
            assert not sink.readings() and source.stats()["connected"] is False
        finally:
            source.stop()
            assert source.join(10)

        # A wrong password: refused, reported, and never in the event or the log.
        (tmp_path / "wrong").write_text("hunter2\n")
        sink, source = run(server_cert, "wrong")
        try:
            lost = wait_for(lambda: sink.events("server_lost"), what="the refused password")
            assert "hunter2" not in str(lost[0].detail)
            assert not sink.readings()
        finally:
            source.stop()
            assert source.join(10)
    finally:
        server.close()


def test_a_server_that_never_answers_is_lost_and_does_not_hold_up_stop() -> None:
    """A listener that accepts and then says nothing (a hung PLC): the connect waits for the
    source's timeout, and stop() does not wait for that."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        nodes = [{"node": "ns=2;s=pump.temp", "stream": "temp"}]
        config = section(f"opc.tcp://127.0.0.1:{port}/", nodes, timeout=0.3, reconnect_max=0.05)
        sink = ListSink()
        source = build_source(config, sink)
        source.start()
        try:
            wait_for(lambda: sink.events("server_lost"), what="the silent server")
            assert source.stats()["connected"] is False and not sink.readings()
            assert len(sink.events("server_lost")) == 1  # once, however many attempts
        finally:
            source.stop()
            assert source.join(10)
    # Now one that hangs for longer than any test would wait: stop() ends the attempt.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        slow = section(f"opc.tcp://127.0.0.1:{port}/", nodes, timeout=60)
        source = build_source(slow, ListSink())
        source.start()
        conn, _ = listener.accept()  # the source is inside connect(), waiting for an answer
        with conn:
            time.sleep(0.2)  # let its hello go out: the wait is the client's, not the socket's
            source.stop()
            assert source.join(10)


@pytest.mark.slow
def test_repeated_server_restarts_leak_no_descriptors_or_threads(server: OpcuaServer) -> None:
    config = section(server.endpoint, [{"node": ns(server, "pump.temp"), "stream": "temp"}])
    sink = ListSink()
    source = build_source(config, sink)
    source.start()
    try:
        wait_for(lambda: source.stats()["connected"] is True, what="the first connection")
        fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
        for cycle in range(1, 11):
            server.bounce()
            wait_for(lambda c=cycle: source.stats()["reconnects"] == c, what="the reconnect")
        assert len(os.listdir("/proc/self/fd")) <= fds
        assert threading.active_count() <= threads
        stats = source.stats()
        assert stats["errors"] == 0 and stats["connected"] is True
        assert len(sink.events("server_lost")) == len(sink.events("server_recovered")) == 10
    finally:
        source.stop()
        assert source.join(10)


@pytest.mark.slow
def test_liquid_gateway_test_names_a_refused_node_and_an_absent_server(
    server: OpcuaServer, tmp_path: Path
) -> None:
    nodes = [
        {"node": ns(server, "pump.temp"), "stream": "temp"},
        {"node": ns(server, "no.such.node"), "stream": "ghost"},
    ]
    absent = f"opc.tcp://127.0.0.1:{free_port()}/"
    text = yaml.safe_dump(
        {
            "sources": [
                settings(server.endpoint, nodes),
                {**settings(absent, nodes[:1]), "name": "press-2"},
            ]
        }
    )
    report = dry_run(parse_config(text, "gw.yaml", base=tmp_path), seconds=1.0)
    by_name = {s.name: s for s in report.sources}
    assert set(by_name["press-1"].streams) == {"p1.temp"}
    assert report.problems == [
        f"source press-1 (opcua): the server refused the subscription "
        f"{ns(server, 'no.such.node')} (BadNodeIdUnknown)",
        f"source press-2 (opcua): cannot connect to {absent}: " + str(by_name["press-2"].error),
    ]
    assert "cannot connect" in str(by_name["press-2"].error)
