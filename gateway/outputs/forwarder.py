"""Forward the SQLite outbox upstream over MQTT, losing nothing while the uplink is down.

The outbox is the buffer, not paho: this thread reads undelivered rows in ``seq`` order,
keeps at most ``max_inflight`` of them unacknowledged, and marks a row delivered only when
``on_publish`` reports a successful PUBACK. paho calls ``on_publish`` for refusals too
(MQTT 5 reason code >= 128), so a refusal is recorded on the row and retried later, with a
back-off; until then it is "parked" (counted in ``stats()``, its reason in ``last_error``).
On a disconnect everything in flight is forgotten here and in paho (``drop_out_messages`` in
``on_connect``), and re-sent from the outbox once connected again: at-least-once, with
duplicates only within the in-flight window — upstream de-duplicates on the payload ``id``.

A row that can never be published is quarantined (kept in the outbox with its reason, no
longer sent), so it cannot hold back the rows behind it: one whose topic is not a valid MQTT
topic name (``gateway.mqtt.topics``), checked before it is handed to paho, and one the broker drops
the connection for each time it is sent. After a connection is lost with rows in flight, the
next connection sends one row at a time until one is acknowledged; a row that was alone in
flight when the connection dropped, within seconds of being sent, ``_POISON_DROPS`` times in a
row, is quarantined.

This thread, not paho, reconnects (``reconnect_on_failure=False``): it connects synchronously,
so a TLS failure (unknown CA, wrong host name) surfaces as a clear error instead of paho's
silent retry, and waits an exponential, jittered, capped delay between attempts. A TLS
configuration never falls back to plaintext.

paho's callbacks run on paho's network thread; they only put a tuple on a queue and wake
this thread, which owns the Store connection and does all the work.
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
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

from gateway.config import UpstreamSection, check_name, is_name
from gateway.errors import StorageError
from gateway.mqtt.security import TlsSetupError, secure
from gateway.mqtt.topics import topic_problem
from gateway.store import Durability, OutboxRow, Store

log = logging.getLogger(__name__)

# How many undelivered rows one round looks at to fill the in-flight window; rows in back-off
# after a refusal are skipped, so a few poison rows never block the ones behind them.
_SCAN_LIMIT = 2000
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


def backoff(attempt: int, low: float, high: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1, 2, ...): ``low * 2**(attempt-1)`` capped at
    ``high``, then jittered to 50-100 % of that (never below ``low``)."""
    capped = min(high, low * 2.0 ** max(0, attempt - 1))
    return max(low, capped * (rng or random).uniform(0.5, 1.0))


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


class Forwarder(threading.Thread):
    """The outbox -> upstream MQTT thread. ``start()``, ``notify()`` on new rows, ``stop()``."""

    def __init__(
        self,
        upstream: UpstreamSection,
        gateway_id: str,
        database: Path,
        durability: Durability = "normal",
        *,
        poll_interval: float = 1.0,
        reconnect_max_delay: float | None = None,
    ) -> None:
        super().__init__(name="forwarder", daemon=True)
        self._upstream = upstream
        self._broker = upstream.broker
        self._gateway_id = gateway_id
        self._database = Path(database)
        self._durability: Durability = durability
        self._poll_interval = poll_interval
        self._reconnect_min_delay = upstream.reconnect_min_delay
        self._reconnect_max_delay = reconnect_max_delay or upstream.reconnect_max_delay
        self._reconnect_min_delay = min(self._reconnect_min_delay, self._reconnect_max_delay)
        self._v5 = self._broker.protocol == "5"
        self._prefix = f"{upstream.topic_prefix}/{gateway_id}"
        self._status_topic = f"{self._prefix}/status"
        self._ack_timeout = max(30.0, 2.0 * self._broker.keepalive)
        # Filled by paho's thread (callbacks) and by notify(); drained by this thread only.
        self._events: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()
        # confirm: echo. Messages seen on our own topics (bounded: a flood on them is counted
        # and dropped, which at worst makes one of ours expire and be sent again).
        self._echo = upstream.confirm == "echo"
        self._echoes: queue.Queue[tuple[str, bytes]] = queue.Queue(4 * upstream.max_inflight + 16)
        self._wake = threading.Event()
        self._stop_deadline: float | None = None
        # Owned by this thread.
        self._store: Store | None = None
        self._connected = False  # CONNACK received and the link not lost since
        self._linked = False  # a socket is open and paho's network thread runs
        self._connect_failures = 0
        self._next_connect = 0.0  # monotonic time of the next connection attempt
        self._inflight: dict[int, _InFlight] = {}
        self._retry_at: dict[int, tuple[int, float]] = {}  # seq -> (refusals, monotonic time)
        # confirm: echo. (topic, payload) -> (seq, deadline) of rows sent but not seen back;
        # they count against max_inflight. Publishing waits for the subscription's SUBACK.
        self._awaiting: dict[tuple[str, bytes], tuple[int, float]] = {}
        self._echo_ready = not self._echo
        self._echo_sub_mid: int | None = None
        # After a connection was lost with rows in flight: one row at a time until one is
        # acknowledged, counting the drops each lone row was in flight for.
        self._isolating = False
        self._drops: dict[int, int] = {}  # seq -> consecutive drops while alone in flight
        self._backlog_checked = 0.0
        self._last_logged_error = ""
        # Rows the broker acknowledged whose delivery could not be recorded (a full disk):
        # never sent again by this process, recorded again after a growing delay.
        self._unrecorded: set[int] = set()
        self._record_failures = 0
        self._record_retry_at = 0.0
        # Read by stats() from other threads.
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "connected": False,
            "delivered": 0,
            "failures": 0,
            "parked": 0,
            "quarantined": 0,
            "connects": 0,
            "backlog": None,
            "oldest_pending_ts": None,
            "inflight": 0,
            "unrecorded": 0,  # acknowledged, but the store could not record it yet
            "awaiting_echo": 0,  # confirm: echo, acknowledged but not seen back yet
            "echo_unmatched": 0,  # messages on our topics that match nothing awaited
            "echo_dropped": 0,  # ... that arrived faster than this thread took them
            "last_error": None,
        }

    # --- called from other threads ----------------------------------------------------------

    def notify(self) -> None:
        """New outbox rows were committed: send them now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Let in-flight publishes finish, publish ``offline``, disconnect — within ``timeout``."""
        self._stop_deadline = time.monotonic() + timeout
        self._wake.set()
        if self.is_alive():
            self.join(max(0.0, self._stop_deadline - time.monotonic()))
            if self.is_alive():
                log.warning("forwarder did not stop within %.1f s", timeout)

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
        self._wake.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._events.put(("disconnected", str(reason), None))
        self._wake.set()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        self._events.put(("published", mid, reason))
        self._wake.set()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        self._events.put(("subscribed", mid, reasons))
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._echoes.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            with self._lock:
                self._stats["echo_dropped"] += 1
        self._wake.set()

    def _on_pubrec_refused(self, mid: int, reason: ReasonCode) -> None:
        # The refusal is the outcome: the PUBCOMP paho still gets later finds nothing in flight.
        self._events.put(("published", mid, reason))
        self._wake.set()

    # --- the thread -------------------------------------------------------------------------

    def run(self) -> None:
        client: mqtt.Client | None = None
        try:
            self._store = self._open_store()
            if self._store is None:
                return
            client = self._make_client()
            if client is None:
                self._wait_for_stop()
                return
            self._forward(client)
            self._shutdown(client)
        except Exception as exc:  # the top of the thread: record it rather than die silently
            self._error(f"the forwarder stopped on an unexpected error: {exc}", exc_info=True)
        finally:
            if client is not None:
                self._unlink(client)
            if self._store is not None:
                self._store.close()
            self._set_stats(connected=False, inflight=0)

    def _open_store(self) -> Store | None:
        while self._stop_deadline is None:
            try:
                return Store.open(self._database, self._durability, outbox=False)
            except StorageError as exc:
                self._error(f"cannot open the outbox: {exc}")
            self._wake.wait(self._poll_interval)
            self._wake.clear()
        return None

    def _make_client(self) -> PahoClient | None:
        """A configured client, or None (error recorded) if it must not connect at all."""
        try:
            check_name(self._gateway_id, "gateway id")
        except ValueError as exc:
            self._error(f"not forwarding: {exc}")
            return None
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
            self._error(f"TLS setup failed, not connecting: {exc}")
            return None
        log.info(
            "forwarding the outbox to %s:%d%s as %s",
            broker.host,
            broker.port,
            " over TLS" if broker.tls is not None else "",
            self._prefix,
        )
        return client

    def _connect(self, client: mqtt.Client) -> None:
        """One connection attempt (TCP, TLS handshake, CONNECT); on failure schedule the next."""
        broker = self._broker
        # A clean session each time: the outbox, not the broker session, holds what is unsent.
        clean_start = True if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        try:
            try:
                client.connect(broker.host, broker.port, broker.keepalive, clean_start=clean_start)
            except BaseException as exc:
                _close_sockets_left_in(exc)
                raise
        except ssl.SSLCertVerificationError as exc:
            self._connect_failed(
                f"TLS certificate verify failed for {broker.host}:{broker.port}: "
                f"{exc.verify_message or exc.reason} (is tls.ca_file the CA that signed the "
                "broker's certificate, and is host the name in it?); not connecting"
            )
            return
        except ssl.SSLError as exc:
            self._connect_failed(
                f"TLS handshake with {broker.host}:{broker.port} failed, not connecting: "
                f"{exc.reason or exc}"
            )
            return
        except (OSError, ValueError) as exc:
            self._connect_failed(f"cannot connect to {broker.host}:{broker.port}: {exc}")
            return
        self._linked = True
        client.loop_start()

    def _unlink(self, client: mqtt.Client) -> None:
        """End paho's network thread (it has ended or is ending after a lost connection)."""
        client.loop_stop()
        # loop_start() makes a new wake-up socket pair each time and nothing closes the old.
        reset = getattr(client, "_reset_sockets", None)
        if reset is not None:
            reset(sockpair_only=True)
        self._linked = False

    def _connect_failed(self, message: str) -> None:
        self._connect_failures += 1
        delay = backoff(
            self._connect_failures, self._reconnect_min_delay, self._reconnect_max_delay
        )
        self._next_connect = time.monotonic() + delay
        self._error(f"{message} (next attempt in {delay:.1f} s)", key=message)

    def _forward(self, client: mqtt.Client) -> None:
        while self._stop_deadline is None:
            try:
                if not self._linked and time.monotonic() >= self._next_connect:
                    self._connect(client)
            except Exception as exc:  # the top of the thread's loop: log once, count, carry on
                self._connect_failed(f"connecting failed: {exc}")
            wait = self._poll_interval
            if not self._linked:
                wait = min(wait, max(0.0, self._next_connect - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()
            try:
                self._handle_events(client)
                if self._stop_deadline is not None:
                    return
                self._expire_stale()
                if self._connected:
                    self._publish_pending(client)
                self._refresh_backlog()
            except Exception as exc:  # the top of the thread's loop: log once, count, carry on
                self._error(f"forwarding failed: {exc}", exc_info=True)

    def _shutdown(self, client: mqtt.Client) -> None:
        deadline = self._stop_deadline or time.monotonic()
        total = max(0.0, deadline - time.monotonic())
        # Keep a share of the bound for the offline message and the disconnect.
        drain_until = deadline - 0.3 * total
        # The pipeline's last batch (alerts raised in the final moments before a stop) is
        # committed just before stop() is called: send one window of it, rather than leave it
        # for the next start.
        self._handle_events(client)
        if self._connected:
            self._publish_pending(client)
        self._wait_inflight(client, drain_until)
        if self._connected:
            self._inflight.clear()
            info = client.publish(self._status_topic, "offline", qos=1, retain=True)
            self._inflight[info.mid] = _InFlight(None, time.monotonic())
            self._wait_inflight(client, deadline - 0.1 * total)
        client.disconnect()
        if self._inflight:
            log.info(
                "stopping with %d publishes unacknowledged; they stay in the outbox",
                len(self._inflight),
            )

    def _wait_inflight(self, client: mqtt.Client, until: float) -> None:
        while (self._inflight or self._awaiting) and self._connected and time.monotonic() < until:
            self._wake.wait(max(0.0, until - time.monotonic()))
            self._wake.clear()
            self._handle_events(client)

    def _wait_for_stop(self) -> None:
        while self._stop_deadline is None:
            self._wake.wait(self._poll_interval)
            self._wake.clear()

    # --- work -------------------------------------------------------------------------------

    def _handle_events(self, client: mqtt.Client) -> None:
        delivered: list[int] = []
        refused: list[tuple[int, str]] = []
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
                    refused.append((entry.seq, f"refused by the broker: {reason}"))
                else:
                    if not self._echo:  # with echo, delivered when seen back
                        delivered.append(entry.seq)
                    self._isolating = False
            elif kind == "subscribed":
                if arg == self._echo_sub_mid:
                    failed = [str(r) for r in reason if r.is_failure]
                    self._echo_ready = not failed
                    if failed:
                        self._error(
                            f"confirm: echo, but the broker refused our subscription to "
                            f"{self._prefix}/alerts/+ and /events ({', '.join(failed)}); "
                            "nothing is sent until it allows reading them"
                        )
            elif kind == "connected":
                log.info("upstream broker connected")
                self._connected = True
                self._connect_failures = 0
                self._last_logged_error = ""
                self._set_stats(last_error=None, connects=self._stats["connects"] + 1)
                self._inflight.clear()
                self._awaiting.clear()
                if self._echo:
                    self._echo_ready = False
                    _, self._echo_sub_mid = client.subscribe(
                        [(f"{self._prefix}/alerts/+", 1), (f"{self._prefix}/events", 1)]
                    )
                info = client.publish(self._status_topic, "online", qos=1, retain=True)
                self._inflight[info.mid] = _InFlight(None, time.monotonic())
            elif kind == "disconnected":
                if self._connected:
                    log.warning("upstream broker disconnected: %s", arg)
                    self._suspect_rows_in_flight()
                    self._next_connect = time.monotonic() + backoff(
                        1, self._reconnect_min_delay, self._reconnect_max_delay
                    )
                elif self._next_connect <= time.monotonic():  # not already scheduled
                    hint = ""
                    if self._broker.tls is not None:
                        hint = " (over TLS this is usually our client certificate being "
                        hint += "rejected: check tls.cert_file and tls.key_file)"
                    self._connect_failed(
                        f"upstream broker closed the connection before accepting it: {arg}{hint}"
                    )
                self._connected = False
                self._inflight.clear()
                self._awaiting.clear()
                if self._linked:
                    self._unlink(client)
            elif kind == "connect_failed":
                self._connect_failed(f"upstream broker refused the connection: {arg}")
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
                delivered.append(seen[0])
        assert self._store is not None
        self._record_delivered(delivered)
        for seq, error in refused:
            self._fail(seq, error)
        with self._lock:
            self._stats["delivered"] += len(delivered)
            self._stats["connected"] = self._connected
            self._stats["inflight"] = len(self._inflight)
            self._stats["awaiting_echo"] = len(self._awaiting)

    def _record_delivered(self, delivered: list[int]) -> None:
        """Mark acknowledged rows delivered. When the store cannot commit that (disk full),
        the rows are held in memory as sent: re-sending them every round would flood the
        broker with duplicates (659 messages for 20 alerts in 40 s once). Only a restart
        before the store recovers sends them again, within the usual bound."""
        assert self._store is not None
        for seq in delivered:
            self._retry_at.pop(seq, None)
        self._unrecorded.update(delivered)
        if not self._unrecorded or time.monotonic() < self._record_retry_at:
            return
        try:
            self._store.mark_delivered(sorted(self._unrecorded))
        except StorageError as exc:
            self._record_failures += 1
            delay = backoff(self._record_failures, 1.0, 60.0)
            self._record_retry_at = time.monotonic() + delay
            self._error(
                f"cannot record {len(self._unrecorded)} delivered rows ({exc}); they are not "
                f"sent again, next attempt in {delay:.0f} s",
                key="record-delivered",
            )
        else:
            self._unrecorded.clear()
            self._record_failures = 0
            self._record_retry_at = 0.0
        with self._lock:
            self._stats["unrecorded"] = len(self._unrecorded)

    def _suspect_rows_in_flight(self) -> None:
        """The connection dropped: if one row was alone in flight and sent just before, it
        may be what the broker dropped us for; after ``_POISON_DROPS`` such drops it is."""
        rows = [entry for entry in self._inflight.values() if entry.seq is not None]
        if not rows:
            return
        if self._isolating and len(rows) == 1:
            entry = rows[0]
            assert entry.seq is not None
            if time.monotonic() - entry.sent_at <= _POISON_WINDOW_S:
                drops = self._drops.get(entry.seq, 0) + 1
                self._drops[entry.seq] = drops
                if drops >= _POISON_DROPS:
                    self._drops.pop(entry.seq, None)
                    self._quarantine(
                        entry.seq,
                        f"the broker closed the connection each time it was sent ({drops} "
                        "times in a row)",
                    )
        self._isolating = True

    def _publish_pending(self, client: mqtt.Client) -> None:
        assert self._store is not None
        if not self._echo_ready:
            return
        window = 1 if self._isolating else self._upstream.max_inflight
        held = {entry.seq for entry in self._inflight.values() if entry.seq is not None}
        held |= {seq for seq, _ in self._awaiting.values()}
        free = window - len(held)
        busy = held | self._unrecorded
        now = time.monotonic()
        after, scanned = 0, 0
        while free > 0 and scanned < _SCAN_LIMIT:
            rows = self._store.pending(limit=self._upstream.max_inflight * 2, after_seq=after)
            if not rows:
                return
            for row in rows:
                after, scanned = row.seq, scanned + 1
                if row.seq in busy or self._retry_at.get(row.seq, (0, 0.0))[1] > now:
                    continue
                if not self._publish_row(client, row):
                    return
                free -= 1
                if free == 0:
                    return

    def _publish_row(self, client: mqtt.Client, row: OutboxRow) -> bool:
        """Hand one row to paho; False when paho cannot take more right now."""
        if row.problem is not None:
            self._quarantine(row.seq, f"not published: {row.problem}")
            return True
        if row.kind == "alert":
            if not is_name(row.subject):
                reason = f"not published: {row.subject[:200]!r} is not a valid stream name"
                self._quarantine(row.seq, reason)
                return True
            topic = f"{self._prefix}/alerts/{row.subject}"
        else:
            topic = f"{self._prefix}/events"
        problem = topic_problem(topic)
        if problem is not None:
            self._quarantine(row.seq, f"not published: {problem}")
            return True
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = [("id", row.msg_id)]
            properties.ContentType = "application/json"
            properties.PayloadFormatIndicator = 1
        payload = row.payload.encode("utf-8")
        try:
            info = client.publish(topic, payload, qos=self._upstream.qos, properties=properties)
        except ValueError as exc:  # e.g. a payload over MQTT's size limit
            self._fail(row.seq, f"not published: {exc}")
            return True
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # NO_CONN: paho holds it until the next connect, where on_connect drops it and
            # the "disconnected" event has already made us forget it.
            now = time.monotonic()
            self._inflight[info.mid] = _InFlight(row.seq, now)
            if self._echo:  # the payload carries the row's unique id: no two are alike
                self._awaiting[(topic, payload)] = (row.seq, now + self._upstream.confirm_timeout)
            return True
        log.debug("paho did not take seq %d: %s", row.seq, mqtt.error_string(info.rc))
        return False

    def _fail(self, seq: int, error: str) -> None:
        """Park a refused row: record why, count it, retry after a growing, jittered delay."""
        assert self._store is not None
        self._store.record_failure(seq, error)
        refusals = self._retry_at.get(seq, (0, 0.0))[0] + 1
        up = self._upstream
        delay = backoff(refusals, up.retry_min_delay, up.retry_max_delay)
        self._retry_at[seq] = (refusals, time.monotonic() + delay)
        with self._lock:
            self._stats["failures"] += 1
            self._stats["last_error"] = error
        log.warning("outbox row %d: %s (retry in %.0f s)", seq, error, delay)

    def _quarantine(self, seq: int, reason: str) -> None:
        """Never send this row again: it stays in the outbox with ``reason``, counted."""
        assert self._store is not None
        self._store.quarantine(seq, reason)
        self._retry_at.pop(seq, None)
        with self._lock:
            self._stats["quarantined"] += 1
            self._stats["last_error"] = reason
        log.error("outbox row %d quarantined: %s", seq, reason)

    def _forget_awaiting(self, seq: int) -> None:
        for key, (waiting, _) in list(self._awaiting.items()):
            if waiting == seq:
                del self._awaiting[key]

    def _expire_stale(self) -> None:
        """Forget publishes never acknowledged on a live connection; the outbox re-sends them.
        With confirm: echo, a row not seen back in time is parked and retried like a refusal."""
        now = time.monotonic()
        unseen = [(k, seq) for k, (seq, deadline) in self._awaiting.items() if deadline < now]
        for key, seq in unseen:
            del self._awaiting[key]
            self._fail(
                seq,
                f"not seen back within {self._upstream.confirm_timeout:g} s (confirm: echo): "
                "refused by the broker, or lost",
            )
        limit = time.monotonic() - self._ack_timeout
        stale = [mid for mid, entry in self._inflight.items() if entry.sent_at < limit]
        for mid in stale:
            del self._inflight[mid]
        if stale:
            log.warning(
                "%d publishes unacknowledged for %.0f s; re-sending", len(stale), self._ack_timeout
            )

    def _refresh_backlog(self) -> None:
        now = time.monotonic()
        if now - self._backlog_checked < 1.0 or self._store is None:
            return
        self._backlog_checked = now
        count, oldest = self._store.outbox_backlog()
        parked = self._store.outbox_parked()
        quarantined = self._store.outbox_quarantined()
        self._set_stats(
            backlog=count, oldest_pending_ts=oldest, parked=parked, quarantined=quarantined
        )

    def _error(self, message: str, exc_info: bool = False, key: str | None = None) -> None:
        """Record the last error; log it once per distinct ``key`` (default: the message)."""
        with self._lock:
            self._stats["last_error"] = message
        key = key or message
        if key != self._last_logged_error:
            log.error("%s", message, exc_info=exc_info)
            self._last_logged_error = key

    def _set_stats(self, **values: Any) -> None:
        with self._lock:
            self._stats.update(values)
