"""Small test helpers shared across the suite: a sink that keeps what it gets, one polling
helper, the one MQTT subscriber, and one way to start the daemon as its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.records import DeadLetter, Event, Reading, Record

if TYPE_CHECKING:
    from tests.conftest import Broker


class ListSink:
    """Stands where the ingest queue stands: records what a source puts."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def put(self, record: Record) -> None:
        self.records.append(record)

    def readings(self, stream: str | None = None) -> list[Reading]:
        return [
            r
            for r in self.records
            if isinstance(r, Reading) and (stream is None or r.stream == stream)
        ]

    def dead(self) -> list[DeadLetter]:
        return [r for r in self.records if isinstance(r, DeadLetter)]

    def events(self, kind: str | None = None) -> list[Event]:
        return [
            r for r in self.records if isinstance(r, Event) and (kind is None or r.kind == kind)
        ]

    def count(self, kind: str) -> int:
        return len(self.events(kind))


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, what: str = "", every: float = 0.005
) -> Any:
    """Poll until ``predicate`` returns something truthy; generous, never a timing check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")


REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    user_properties: dict[str, str]


class Subscriber:
    """A paho client subscribed to ``topic`` (a filter) that keeps every message it gets.
    It returns once the broker confirmed the subscription, so nothing published after that
    is missed, and subscribes again after a reconnect (a broker restart). ``persistent``: a
    session the broker keeps for 5 minutes (QoS 1 messages wait for it while it is away)."""

    def __init__(
        self, broker: Broker, topic: str = "#", *, persistent: bool = False, qos: int = 1
    ) -> None:
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"watcher-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=qos)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.2)
        session = Properties(PacketTypes.CONNECT)
        session.SessionExpiryInterval = 300 if persistent else 0
        self.client.connect(
            broker.host, broker.port, clean_start=not persistent, properties=session
        )
        self.client.loop_start()
        assert self._subscribed.wait(10), f"no SUBACK for {topic}"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        props = dict(getattr(msg.properties, "UserProperty", None) or [])
        with self._lock:
            self._received.append(Received(msg.topic, msg.payload, bool(msg.retain), props))

    @property
    def messages(self) -> list[Received]:
        """Everything received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._received)

    def on_topic(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    def wait(
        self, predicate: Callable[[Received], Any], timeout: float = 30.0, what: str = ""
    ) -> list[Received]:
        """Wait until a message matches ``predicate``; returns what came until then."""

        def upto_match() -> list[Received] | None:
            got = self.messages
            for n, message in enumerate(got):
                if predicate(message):
                    return got[: n + 1]
            return None

        try:
            return wait_for(upto_match, timeout, what=what)  # type: ignore[no-any-return]
        except AssertionError as exc:
            topics = [m.topic for m in self.messages]
            raise AssertionError(f"{exc}; received {topics[-20:]}") from None

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Stop a server a fixture started: SIGTERM, then SIGKILL if it does not go in time."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def start_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``liquid-gateway run -c CONFIG`` in its own process, from this tree, its log (stderr)
    appended to ``log``; the caller stops it (SIGTERM) and waits."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
