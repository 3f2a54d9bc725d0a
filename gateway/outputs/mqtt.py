"""The MQTT output: outbox rows published upstream, PUBACK-checked; paho is never the buffer.

The delivery loop (``gateway.outputs.base``) reads the rows, keeps the window, parks and
quarantines; this module publishes them and says what became of each. A row is acknowledged
only when ``on_publish`` reports a successful PUBACK. paho calls ``on_publish`` for refusals
too (MQTT 5 reason code >= 128), so a refusal is reported as one and retried later, with a
back-off. On a disconnect everything in flight is forgotten here and in paho
(``drop_out_messages`` in ``on_connect``), and re-sent from the outbox once connected again.

A row that can never be published is quarantined: one whose topic is not a valid MQTT topic
name (``gateway.mqtt.topics``), checked before it is handed to paho, and one the broker drops
the connection for each time it is sent. After a connection is lost with rows in flight, the
next connection sends one row at a time (``window``) until one is acknowledged; a row that
was alone in flight when the connection dropped, within seconds of being sent,
``_POISON_DROPS`` times in a row, is quarantined.

The loop, not paho, reconnects (``reconnect_on_failure=False``): ``connect`` is synchronous,
so a TLS failure (unknown CA, wrong host name) surfaces as a clear error instead of paho's
silent retry. A TLS configuration never falls back to plaintext.

paho's callbacks run on paho's network thread; they only put a tuple on a queue and wake the
loop, whose thread drains it in ``poll``.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import MqttOutputSection, UpstreamSection, check_name, is_name
from gateway.mqtt.security import TlsSetupError, secure
from gateway.mqtt.topics import topic_problem
from gateway.outputs.base import (
    BUSY,
    SENT,
    Ack,
    DeliveryLoop,
    Down,
    Outcome,
    Output,
    Refusal,
    SendResult,
    Timing,
    Up,
)
from gateway.store import DEFAULT_OUTPUT, Durability, OutboxRow

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 5.0
# A row alone in flight when the broker dropped the connection, this many times in a row and
# each time within _POISON_WINDOW_S of sending it, is one the broker will never take.
_POISON_DROPS = 3
_POISON_WINDOW_S = 5.0


def _close_sockets_left_in(exc: BaseException) -> None:
    """paho leaves the socket of a failed TLS handshake to the garbage collector; close it."""
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, socket.socket):
                value.close()
        tb = tb.tb_next


# paho 2.x (2.2.0 checked, see tests/outputs/test_refusals.py) ignores the reason code of a
# PUBREC: a QoS 2 publish the broker refuses there ("Not authorized", 0x87) goes on to PUBREL
# and a PUBCOMP "Success", and on_publish reports a success. There is no public callback or
# property that carries the PUBREC reason, so PahoClient reads it in the one private method
# that decodes PUBREC, then lets paho carry on exactly as before (its bookkeeping untouched).
# Only for the paho major version it was written against: elsewhere it stays out of the way.
_PUBREC_HOOK = paho.mqtt.__version__.split(".")[0] == "2" and callable(
    getattr(mqtt.Client, "_handle_pubrec", None)
)


class PahoClient(mqtt.Client):
    """A paho client that also reports a refused PUBREC (MQTT 5, reason >= 0x80) to
    ``on_pubrec_refused(mid, reason)``, on paho's network thread, before paho goes on."""

    on_pubrec_refused: Callable[[int, ReasonCode], None] | None = None

    def _handle_pubrec(self) -> MQTTErrorCode:
        if _PUBREC_HOOK and self.on_pubrec_refused is not None and self._protocol == mqtt.MQTTv5:
            packet = _packet.decode_pubrec(
                self._in_packet["command"], self._in_packet["packet"], self._protocol
            )
            if packet.reason.is_failure:
                self.on_pubrec_refused(packet.mid, packet.reason)
        return super()._handle_pubrec()


@dataclass(slots=True)
class _InFlight:
    seq: int | None  # None: the presence message
    sent_at: float


def timing_of(upstream: UpstreamSection) -> Timing:
    return Timing(
        max_inflight=upstream.max_inflight,
        reconnect_min_delay=upstream.reconnect_min_delay,
        reconnect_max_delay=upstream.reconnect_max_delay,
        retry_min_delay=upstream.retry_min_delay,
        retry_max_delay=upstream.retry_max_delay,
        drain_timeout=upstream.drain_timeout,
    )


class MqttOutput(Output):
    """Rows published to ``{topic_prefix}/{gateway}/alerts/{stream}`` and ``.../events``, with
    a retained ``online``/``offline`` presence on ``.../status``."""

    def __init__(self, upstream: UpstreamSection, gateway_id: str, name: str = DEFAULT_OUTPUT):
        super().__init__()
        self.name = name
        self.timing = timing_of(upstream)
        self._upstream = upstream
        self._broker = upstream.broker
        self._gateway_id = gateway_id
        self._v5 = self._broker.protocol == "5"
        self._prefix = f"{upstream.topic_prefix}/{gateway_id}"
        self._status_topic = f"{self._prefix}/status"
        self._echo = upstream.confirm == "echo"
        # With confirm: echo a row is acknowledged when seen back, or refused at
        # confirm_timeout: the loop must not forget it before that.
        base_timeout = max(30.0, 2.0 * self._broker.keepalive)
        self.ack_timeout = base_timeout
        if self._echo:
            self.ack_timeout = max(base_timeout, upstream.confirm_timeout + 5.0)
        # Filled by paho's thread (callbacks); drained by the loop's thread only.
        self._events: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()
        # confirm: echo. Messages seen on our own topics (bounded: a flood on them is counted
        # and dropped, which at worst makes one of ours expire and be sent again).
        self._echoes: queue.Queue[tuple[str, bytes]] = queue.Queue(4 * upstream.max_inflight + 16)
        # Owned by the loop's thread.
        self._client: PahoClient | None = None
        self._connected = False  # CONNACK received and the link not lost since
        self._linked = False  # a socket is open and paho's network thread runs
        self._inflight: dict[int, _InFlight] = {}  # mid -> what it carries
        # confirm: echo. (topic, payload) -> (seq, deadline) of rows sent but not seen back.
        # Publishing waits for the subscription's SUBACK.
        self._awaiting: dict[tuple[str, bytes], tuple[int, float]] = {}
        self._echo_ready = not self._echo
        self._echo_sub_mid: int | None = None
        # After a connection was lost with rows in flight: one row at a time until one is
        # acknowledged, counting the drops each lone row was in flight for.
        self._isolating = False
        self._drops: dict[int, int] = {}  # seq -> consecutive drops while alone in flight
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "awaiting_echo": 0,  # confirm: echo, acknowledged but not seen back yet
            "echo_unmatched": 0,  # messages on our topics that match nothing awaited
            "echo_dropped": 0,  # ... that arrived faster than the loop took them
        }

    @classmethod
    def from_section(cls, section: MqttOutputSection, gateway_id: str) -> MqttOutput:
        return cls(section, gateway_id, section.name)

    @property
    def linked(self) -> bool:
        return self._linked

    @property
    def ready(self) -> bool:
        return self._connected and self._echo_ready

    def window(self) -> int:
        return 1 if self._isolating else self._upstream.max_inflight

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._stats)

    # --- paho callbacks: enqueue and return -------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._events.put(("connect_failed", str(reason), None))
        else:
            # paho would re-send its own unacknowledged messages now; the outbox does that.
            client.drop_out_messages()
            self._events.put(("connected", None, None))
        self.wake()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._events.put(("disconnected", str(reason), None))
        self.wake()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        self._events.put(("published", mid, reason))
        self.wake()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        self._events.put(("subscribed", mid, reasons))
        self.wake()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._echoes.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            with self._lock:
                self._stats["echo_dropped"] += 1
        self.wake()

    def _on_pubrec_refused(self, mid: int, reason: ReasonCode) -> None:
        # The refusal is the outcome: the PUBCOMP paho still gets later finds nothing in flight.
        self._events.put(("published", mid, reason))
        self.wake()

    # --- the loop's side ----------------------------------------------------------------

    def prepare(self) -> bool:
        """A configured client, or False (error reported) if it must not connect at all."""
        try:
            check_name(self._gateway_id, "gateway id")
        except ValueError as exc:
            self.report(f"not forwarding: {exc}")
            return False
        broker = self._broker
        client = PahoClient(
            CallbackAPIVersion.VERSION2,
            client_id=broker.client_id or f"{self._gateway_id}-upstream",
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            clean_session=None if self._v5 else True,
            reconnect_on_failure=False,
        )
        client.connect_timeout = _CONNECT_TIMEOUT_S
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_pubrec_refused = self._on_pubrec_refused
        if self._echo:
            client.on_subscribe = self._on_subscribe
            client.on_message = self._on_message
        if warning := self._upstream.refusal_warning():
            log.warning("%s", warning)
        if self._upstream.qos == 2 and self._v5 and not _PUBREC_HOOK:
            log.warning(
                "paho-mqtt %s: QoS 2 refusals (PUBREC reason codes) cannot be seen; a refused "
                "alert would be marked delivered. Use upstream.qos: 1",
                paho.mqtt.__version__,
            )
        client.max_inflight_messages_set(self._upstream.max_inflight + 1)
        client.max_queued_messages_set(self._upstream.max_inflight + 2)
        client.will_set(self._status_topic, "offline", qos=1, retain=True)
        try:
            secure(client, broker)
        except TlsSetupError as exc:
            # Never fall back to plaintext: without TLS we do not connect at all.
            self.report(f"TLS setup failed, not connecting: {exc}")
            return False
        log.info(
            "forwarding the outbox to %s:%d%s as %s",
            broker.host,
            broker.port,
            " over TLS" if broker.tls is not None else "",
            self._prefix,
        )
        self._client = client
        return True

    def connect(self) -> Down | None:
        """One connection attempt (TCP, TLS handshake, CONNECT)."""
        assert self._client is not None
        broker = self._broker
        # A clean session each time: the outbox, not the broker session, holds what is unsent.
        clean_start = True if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        try:
            try:
                self._client.connect(
                    broker.host, broker.port, broker.keepalive, clean_start=clean_start
                )
            except BaseException as exc:
                _close_sockets_left_in(exc)
                raise
        except ssl.SSLCertVerificationError as exc:
            return Down(
                f"TLS certificate verify failed for {broker.host}:{broker.port}: "
                f"{exc.verify_message or exc.reason} (is tls.ca_file the CA that signed the "
                "broker's certificate, and is host the name in it?); not connecting"
            )
        except ssl.SSLError as exc:
            return Down(
                f"TLS handshake with {broker.host}:{broker.port} failed, not connecting: "
                f"{exc.reason or exc}"
            )
        except (OSError, ValueError) as exc:
            return Down(f"cannot connect to {broker.host}:{broker.port}: {exc}")
        self._linked = True
        self._client.loop_start()
        return None

    def _unlink(self) -> None:
        """End paho's network thread (it has ended or is ending after a lost connection)."""
        if self._client is None:
            return
        self._client.loop_stop()
        # loop_start() makes a new wake-up socket pair each time and nothing closes the old.
        reset = getattr(self._client, "_reset_sockets", None)
        if reset is not None:
            reset(sockpair_only=True)
        self._linked = False

    def poll(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        while True:
            try:
                kind, arg, reason = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "published":
                entry = self._inflight.pop(arg, None)
                if entry is None or entry.seq is None:
                    continue  # a presence message, or one from a connection we gave up on
                self._drops.pop(entry.seq, None)
                if reason.is_failure:
                    self._forget_awaiting(entry.seq)
                    outcomes.append(Refusal(entry.seq, f"refused by the broker: {reason}"))
                else:
                    if not self._echo:  # with echo, delivered when seen back
                        outcomes.append(Ack(entry.seq))
                    self._isolating = False
            elif kind == "subscribed":
                if arg == self._echo_sub_mid:
                    failed = [str(r) for r in reason if r.is_failure]
                    self._echo_ready = not failed
                    if failed:
                        self.report(
                            f"confirm: echo, but the broker refused our subscription to "
                            f"{self._prefix}/alerts/+ and /events ({', '.join(failed)}); "
                            "nothing is sent until it allows reading them"
                        )
            elif kind == "connected":
                log.info("upstream broker connected")
                self._connected = True
                outcomes.append(Up())
                self._inflight.clear()
                self._awaiting.clear()
                assert self._client is not None
                if self._echo:
                    self._echo_ready = False
                    _, self._echo_sub_mid = self._client.subscribe(
                        [(f"{self._prefix}/alerts/+", 1), (f"{self._prefix}/events", 1)]
                    )
                info = self._client.publish(self._status_topic, "online", qos=1, retain=True)
                self._inflight[info.mid] = _InFlight(None, time.monotonic())
            elif kind == "disconnected":
                if self._connected:
                    log.warning("upstream broker disconnected: %s", arg)
                    outcomes.extend(self._suspect_rows_in_flight())
                    outcomes.append(Down(f"upstream broker disconnected: {arg}", lost=True))
                else:
                    hint = ""
                    if self._broker.tls is not None:
                        hint = " (over TLS this is usually our client certificate being "
                        hint += "rejected: check tls.cert_file and tls.key_file)"
                    outcomes.append(
                        Down(
                            "upstream broker closed the connection before accepting it: "
                            f"{arg}{hint}"
                        )
                    )
                self._connected = False
                self._inflight.clear()
                self._awaiting.clear()
                if self._linked:
                    self._unlink()
            elif kind == "connect_failed":
                outcomes.append(Down(f"upstream broker refused the connection: {arg}"))
        outcomes.extend(self._take_echoes())
        with self._lock:
            self._stats["awaiting_echo"] = len(self._awaiting)
        return outcomes

    def _take_echoes(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        while True:
            try:
                key = self._echoes.get_nowait()
            except queue.Empty:
                break
            seen = self._awaiting.pop(key, None)
            if seen is None:  # a duplicate, a late echo, or not ours
                with self._lock:
                    self._stats["echo_unmatched"] += 1
            else:
                outcomes.append(Ack(seen[0]))
        now = time.monotonic()
        unseen = [(k, seq) for k, (seq, deadline) in self._awaiting.items() if deadline < now]
        for key, seq in unseen:
            del self._awaiting[key]
            reason = (
                f"not seen back within {self._upstream.confirm_timeout:g} s (confirm: echo): "
                "refused by the broker, or lost"
            )
            outcomes.append(Refusal(seq, reason))
        return outcomes

    def _suspect_rows_in_flight(self) -> list[Outcome]:
        """The connection dropped: if one row was alone in flight and sent just before, it
        may be what the broker dropped us for; after ``_POISON_DROPS`` such drops it is."""
        rows = [entry for entry in self._inflight.values() if entry.seq is not None]
        if not rows:
            return []
        outcomes: list[Outcome] = []
        if self._isolating and len(rows) == 1:
            entry = rows[0]
            assert entry.seq is not None
            if time.monotonic() - entry.sent_at <= _POISON_WINDOW_S:
                drops = self._drops.get(entry.seq, 0) + 1
                self._drops[entry.seq] = drops
                if drops >= _POISON_DROPS:
                    self._drops.pop(entry.seq, None)
                    reason = (
                        f"the broker closed the connection each time it was sent ({drops} "
                        "times in a row)"
                    )
                    outcomes.append(Refusal(entry.seq, reason, final=True))
        self._isolating = True
        return outcomes

    def send(self, row: OutboxRow) -> SendResult:
        """Hand one row to paho; BUSY when paho cannot take more right now."""
        assert self._client is not None
        if row.problem is not None:
            return Refusal(row.seq, f"not published: {row.problem}", final=True)
        if row.kind == "alert":
            if not is_name(row.subject):
                reason = f"not published: {row.subject[:200]!r} is not a valid stream name"
                return Refusal(row.seq, reason, final=True)
            topic = f"{self._prefix}/alerts/{row.subject}"
        else:
            topic = f"{self._prefix}/events"
        problem = topic_problem(topic)
        if problem is not None:
            return Refusal(row.seq, f"not published: {problem}", final=True)
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = [("id", row.msg_id)]
            properties.ContentType = "application/json"
            properties.PayloadFormatIndicator = 1
        # The outbox holds this output's wire format: the JSON of gateway.records' payloads.
        payload = row.payload.encode("utf-8")
        try:
            info = self._client.publish(
                topic, payload, qos=self._upstream.qos, properties=properties
            )
        except ValueError as exc:  # e.g. a payload over MQTT's size limit
            return Refusal(row.seq, f"not published: {exc}")
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # NO_CONN: paho holds it until the next connect, where on_connect drops it and
            # the "disconnected" event has already made us forget it.
            now = time.monotonic()
            self._inflight[info.mid] = _InFlight(row.seq, now)
            if self._echo:  # the payload carries the row's unique id: no two are alike
                self._awaiting[(topic, payload)] = (row.seq, now + self._upstream.confirm_timeout)
            return SENT
        log.debug("paho did not take seq %d: %s", row.seq, mqtt.error_string(info.rc))
        return BUSY

    def _forget_awaiting(self, seq: int) -> None:
        for key, (waiting, _) in list(self._awaiting.items()):
            if waiting == seq:
                del self._awaiting[key]

    def forget(self, seqs: Sequence[int]) -> None:
        gone = set(seqs)
        for mid, entry in list(self._inflight.items()):
            if entry.seq in gone:
                del self._inflight[mid]
        for seq in gone:
            self._forget_awaiting(seq)

    def close(self, deadline: float | None) -> None:
        """Publish ``offline`` (retained) when still connected, and disconnect."""
        client = self._client
        if client is None:
            return
        if deadline is not None and self._connected:
            self._inflight.clear()
            self._awaiting.clear()
            info = client.publish(self._status_topic, "offline", qos=1, retain=True)
            self._inflight[info.mid] = _InFlight(None, time.monotonic())
            start = time.monotonic()
            until = deadline - 0.1 * max(0.0, deadline - start)
            while self._inflight and self._connected and time.monotonic() < until:
                time.sleep(0.01)
                self.poll()
            client.disconnect()
        elif deadline is not None:
            client.disconnect()
        self._unlink()
        self._client = None


class Forwarder(DeliveryLoop):
    """The delivery loop of one MQTT output: ``start()``, ``notify()``, ``stats()``, ``stop()``."""

    def __init__(
        self,
        upstream: UpstreamSection,
        gateway_id: str,
        database: Path,
        durability: Durability = "normal",
        *,
        name: str = DEFAULT_OUTPUT,
        outputs: Sequence[str] | None = None,
        poll_interval: float = 1.0,
        reconnect_max_delay: float | None = None,
    ) -> None:
        super().__init__(
            MqttOutput(upstream, gateway_id, name),
            database,
            durability,
            outputs=outputs,
            poll_interval=poll_interval,
            reconnect_max_delay=reconnect_max_delay,
        )
