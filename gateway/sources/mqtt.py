"""Subscribe to sensor topics on a local MQTT broker and turn messages into readings.

paho-mqtt runs every callback on its network thread, so the callbacks here only parse
and put records into the ingest queue (which never blocks) and return. Subscriptions are
(re)made in ``on_connect`` so they survive reconnects; paho reconnects by itself with a
0.5 s..2 s backoff, and the connection is made asynchronously so an absent broker never
blocks the daemon's start. A lost broker is reported once as ``broker_lost`` and its return
as ``broker_recovered``.

Stream names come from ``Subscription.stream`` templates: ``{topic}`` (the topic with '/'
turned into '.'), ``{0}``, ``{1}``, ... (topic levels) and ``{field}`` (the JSON key).
That mapping is readable but not one-to-one (``a/b.c``, ``a.b/c`` and ``a/b/c`` all give
``a.b.c``; so does a template that leaves a varying level out): the source remembers which
topic and field first gave each stream name, and a later message from another topic or
field that gives the same name is the dead letter ``stream_collision``, never merged into
that stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import MqttSource, Subscription
from gateway.errors import ParseError, SourceError
from gateway.mqtt.security import TlsSetupError, secure
from gateway.records import Reading
from gateway.sources.base import Sink, Source
from gateway.sources.parsers import (
    RecordParser,
    check_template,
    clip_text,
    decode_payload,
    render_stream,
)

log = logging.getLogger(__name__)

RECONNECT_MIN = 0.5
RECONNECT_MAX = 2  # a local broker: back within about 2 s of its return, like the ports
TOPIC_CACHE = 65_536  # topics whose matching routes are remembered
# Stream names one source remembers the origin (topic, field) of: at most this many streams
# per source. A new name beyond it is the dead letter too_many_streams: forgetting an origin
# instead would let the next topic that renders the same name merge into that stream.
MAX_STREAMS = 65_536
# What one PUBLISH holds beside its payload, at most: the fixed header (1) and remaining
# length (4), the topic's length (2) and the longest topic MQTT allows (65,535), a packet
# id (2), the properties' length (4) and 16 KiB of properties (user properties and such).
# Generous on purpose: a payload within max_payload must never be dropped for its topic.
PUBLISH_HEADROOM = 1 + 4 + 2 + 65_535 + 2 + 4 + 16_384


def max_packet_size(section: MqttSource) -> int:
    """The Maximum Packet Size an MQTT 5 source asks for in CONNECT: its largest
    ``max_payload`` and ``PUBLISH_HEADROOM``. The broker then never sends a larger PUBLISH
    (Mosquitto drops it and logs it), so an oversized payload is never read at all; one
    that fits in the headroom is still read and refused as ``payload_too_large``."""
    return max(sub.max_payload for sub in section.subscribe) + PUBLISH_HEADROOM


def callback_filter(topic_filter: str) -> str:
    """The filter paho matches message topics against: a shared subscription
    (``$share/group/plant/#``) delivers messages whose topic is ``plant/...``."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else topic_filter
    return topic_filter


_paho_clock = getattr(mqtt, "time_func", time.monotonic)  # what paho's keepalive compares


class BufferedClient(mqtt.Client):
    """paho's client with buffered socket reads.

    paho reads every packet with at least three ``recv`` calls (type byte, length bytes,
    body) and handles one packet per ``select``. Each of those calls releases and retakes
    the GIL, and while the pipeline thread holds it every retake waits for a switch
    interval: at a few thousand messages/s the source thread spent most of its time there.
    Here one ``recv`` takes up to ``READ_SIZE`` bytes, paho's own packet reader takes its
    bytes from that buffer, and ``loop_read`` carries on until the buffer is empty, so one
    ``select`` and one ``recv`` serve hundreds of small PUBLISH packets. paho's framing,
    protocol checks and callbacks are unchanged: only where the bytes come from differs.

    One ``loop_read`` (a read pass) takes at most one buffer from the socket: a packet cut
    at the buffer's end is finished in the next pass (paho keeps its partial state, and
    select() sees the rest waiting in the socket). Unbounded, a pass under steady load
    never ended, and the readings it held back never reached the pipeline.

    With ``on_publish_qos0`` (MQTT 3.1.1 only) whole QoS 0 PUBLISH packets in the buffer go
    straight to it as (topic, payload), without paho's per-packet state, packet decoding
    and message objects (about half of the source thread's time at 10,000 messages/s).
    Anything else — other packet types, QoS 1/2, a packet cut at the buffer's end, an
    empty or non-UTF-8 topic, a malformed length — is left to paho, which handles it
    exactly as before.
    """

    READ_SIZE = 65536

    def __init__(
        self,
        *args: Any,
        read_pass: Callable[[], AbstractContextManager[object]] = nullcontext,
        on_publish_qos0: Callable[[str, bytes], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._read_pass = read_pass  # wraps each loop_read: the source batches hand-offs
        self._on_publish_qos0 = on_publish_qos0 if self._protocol != mqtt.MQTTv5 else None
        self._read_buffer = b""
        self._read_pos = 0
        self._read_sock: object = None  # the socket the buffered bytes came from
        self._refills_left: int | None = None  # socket reads left in this pass

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_sock is not self._sock:  # a new connection: old bytes are void
            self._read_buffer, self._read_pos, self._read_sock = b"", 0, self._sock
        buffer, pos = self._read_buffer, self._read_pos
        if pos >= len(buffer):
            if self._refills_left is not None:
                if self._refills_left <= 0:
                    raise BlockingIOError  # paho: "try again later"; the pass ends
                self._refills_left -= 1
            buffer = super()._sock_recv(max(bufsize, self.READ_SIZE))
            if not buffer:
                return buffer  # the peer closed the connection
            self._read_buffer, pos = buffer, 0
        chunk = buffer[pos : pos + bufsize]
        self._read_pos = pos + len(chunk)
        return chunk

    def _buffered(self) -> bool:
        return self._read_sock is self._sock and self._read_pos < len(self._read_buffer)

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        # Return only with an empty buffer: select() cannot see bytes already read.
        self._refills_left = 1
        try:
            with self._read_pass():
                rc = super().loop_read(max_packets)
                while rc == mqtt.MQTT_ERR_SUCCESS and self._sock is not None and self._buffered():
                    if self._take_publishes() and not self._buffered():
                        break
                    rc = super().loop_read(max_packets)  # one packet, the paho way
        finally:
            self._refills_left = None
        return rc

    def _take_publishes(self) -> int:
        """Hand whole QoS 0 PUBLISH packets at the head of the buffer to
        ``on_publish_qos0``; stop at the first packet paho should see. Returns how many."""
        deliver = self._on_publish_qos0
        if deliver is None or self._in_packet["command"] != 0:
            return 0  # paho is inside a packet: let it finish that one
        buffer, pos, end = self._read_buffer, self._read_pos, len(self._read_buffer)
        taken = 0
        while pos < end:
            if buffer[pos] & 0xF6 != 0x30:  # PUBLISH (type 3) with QoS 0, any dup/retain
                break
            length, shift, body = 0, 0, pos + 1
            while body < end and body - pos <= 4:
                byte = buffer[body]
                body += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            else:
                break  # the length is cut off or longer than MQTT allows: paho decides
            if buffer[body - 1] & 0x80 or body + length > end or length < 2:
                break
            topic_end = body + 2 + (buffer[body] << 8 | buffer[body + 1])
            if topic_end == body + 2 or topic_end > body + length:
                break
            try:
                topic = buffer[body + 2 : topic_end].decode("utf-8")
            except UnicodeDecodeError:
                break
            pos = body + length
            self._read_pos = pos  # first: whatever the callback does, the packet is taken
            deliver(topic, buffer[topic_end:pos])
            taken += 1
        if taken:
            with self._msgtime_mutex:
                self._last_bytes_received = _paho_clock()
        return taken


@dataclass(frozen=True)
class _Route:
    subscription: Subscription
    template: str
    parser: RecordParser
    max_payload: int
    names: dict[str, _TopicNames] = field(default_factory=dict)  # per topic; paho's thread


class _TopicNames:
    """One topic's stream names per field for one route: ``render_stream`` and the claim
    (``MqttSubscriber._claim``) run once per (topic, field); later messages look the name
    up. Only names that were claimed are kept (a refused one is refused again the next
    time, by the same rules), and a claim is for the life of the source, so a kept name is
    exactly what the rules would give again."""

    __slots__ = ("_source", "_template", "_topic", "_names")

    def __init__(self, source: MqttSubscriber, template: str, topic: str) -> None:
        self._source = source
        self._template = template
        self._topic = topic
        self._names: dict[str, str] = {}

    def __call__(self, field_name: str) -> str:
        name = self._names.get(field_name)
        if name is None:
            topic = self._topic
            stream = render_stream(self._template, topic, field_name)
            name = self._source._claim(stream, topic, field_name)
            self._names[field_name] = name
        return name


class MqttSubscriber(Source):
    def __init__(self, section: MqttSource, sink: Sink) -> None:
        super().__init__(section, sink)
        self.section: MqttSource = section
        self._routes: list[_Route] = []
        for sub in section.subscribe:
            template = sub.stream
            try:
                check_template(template)
            except ValueError as exc:
                raise SourceError(f"source {section.name}: stream {template!r}: {exc}") from exc
            parser = RecordParser(
                source=section.name,
                format=sub.format,
                fields=sub.fields,
                timestamp_field=sub.timestamp_field,
                units=sub.units,
            )
            self._routes.append(_Route(sub, template, parser, sub.max_payload))
        self._client: mqtt.Client | None = None
        self._ever_connected = False
        self._lost = False
        self._pending: dict[int, list[str]] = {}  # subscribe mid -> topic filters
        self._refused: list[str] = []
        self._subscribed = False
        self._messages = 0
        self._held: list[Reading] | None = None  # readings of the current read pass
        self._routes_of_topic: dict[str, tuple[_Route, ...]] = {}
        # stream name -> the (topic, field) that first gave it; paho's thread only.
        self._stream_origin: dict[str, tuple[str, str]] = {}

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._client is not None:
            raise RuntimeError(f"source {self.name} already started")
        client = self._make_client()
        self._client = client
        broker = self.section.broker
        client.connect_async(
            broker.host, broker.port, keepalive=broker.keepalive, properties=self._connect_props()
        )
        client.loop_start()
        # paho names its thread paho-mqtt-client-<id>; name it after the source like the
        # other sources' threads (there is no public hook for this).
        thread = getattr(client, "_thread", None)
        if isinstance(thread, threading.Thread):
            thread.name = f"source-{self.name}"
            self._threads.append(thread)

    def _max_packet_size(self) -> int | None:
        """MQTT 3.1.1 has no way to ask for it: a payload is read whole, then checked."""
        return max_packet_size(self.section) if self.section.broker.protocol == "5" else None

    def _connect_props(self) -> Properties | None:
        """paho sends them again with every reconnect."""
        size = self._max_packet_size()
        if size is None:
            return None
        props = Properties(PacketTypes.CONNECT)
        props.MaximumPacketSize = size
        return props

    def _interrupt(self) -> None:
        client = self._client
        if client is None:
            return
        client.disconnect()
        client.loop_stop()  # returns within about a second: paho polls in 1 s steps
        self._set_connected(False)

    def _make_client(self) -> mqtt.Client:
        broker = self.section.broker
        protocol = mqtt.MQTTv5 if broker.protocol == "5" else mqtt.MQTTv311
        client = BufferedClient(
            read_pass=self._read_pass,
            on_publish_qos0=self._on_publish_qos0,
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=broker.client_id or "",
            protocol=protocol,
        )
        try:
            secure(client, broker)
        except TlsSetupError as exc:
            raise SourceError(f"source {self.name}: TLS setup failed: {exc}") from exc
        client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)  # type: ignore[arg-type]
        client.on_connect = self._guard(self._on_connect)
        client.on_connect_fail = self._guard(self._on_connect_fail)
        client.on_disconnect = self._guard(self._on_disconnect)
        client.on_subscribe = self._guard(self._on_subscribe)
        client.on_message = self._guard(self._on_unrouted)
        for route in self._routes:
            client.message_callback_add(
                callback_filter(route.subscription.topic), self._guard(self._on_message_for(route))
            )
        return client

    def _extra_stats(self) -> dict[str, Any]:
        broker = self.section.broker
        with self._lock:
            return {
                "broker": f"{broker.host}:{broker.port}",
                "messages": self._messages,
                "max_packet_size": self._max_packet_size(),
                "subscribed": self._subscribed,
                "subscriptions_refused": list(self._refused),
                "streams": len(self._stream_origin),
            }

    # --- callbacks (paho's thread: parse, enqueue, return) -------------------------------

    @contextmanager
    def _read_pass(self) -> Iterator[None]:
        """Hold the readings parsed from one drained read buffer and hand them to the
        sink in one go at its end (also when the pass fails): one lock, one wake-up."""
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            super()._emit_readings(held)

    def _emit_readings(self, readings: Sequence[Reading]) -> None:
        if self._held is not None:
            self._held.extend(readings)
        else:
            super()._emit_readings(readings)

    def _guard(self, callback: Callable[..., None]) -> Callable[..., None]:
        """An exception escaping a paho callback ends paho's network thread (unless
        suppress_exceptions is set): catch it here, count it, log it and carry on."""

        def guarded(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as exc:
                self._error(exc)

        return guarded

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self._broker_lost(f"connection refused: {reason}")
            return
        recovered = self._lost
        self._lost = False
        self._set_connected(True, reconnect=self._ever_connected)
        self._ever_connected = True
        broker = self.section.broker
        if recovered:
            log.info("mqtt %s: broker %s:%s recovered", self.name, broker.host, broker.port)
            self._event("broker_recovered", broker=f"{broker.host}:{broker.port}")
        else:
            log.info("mqtt %s: connected to %s:%s", self.name, broker.host, broker.port)
        topics: list[tuple[str, int]] = [
            (r.subscription.topic, r.subscription.qos) for r in self._routes
        ]
        result, mid = client.subscribe(topics)
        if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._pending[mid] = [t for t, _ in topics]

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._broker_lost("cannot connect")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self.stopping:
            return
        self._broker_lost(f"disconnected: {reason}")

    def _broker_lost(self, why: str) -> None:
        self._set_connected(False)
        with self._lock:
            self._subscribed = False
        if self._lost or self.stopping:
            return
        self._lost = True
        broker = self.section.broker
        log.warning("mqtt %s: broker %s:%s lost (%s)", self.name, broker.host, broker.port, why)
        self._event("broker_lost", broker=f"{broker.host}:{broker.port}", error=why)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], props: Any
    ) -> None:
        topics = self._pending.pop(mid, [])
        refused = [t for t, r in zip(topics, reasons, strict=False) if r.is_failure]
        with self._lock:
            self._refused = refused
            self._subscribed = bool(topics) and not refused
        for topic in refused:
            log.error("mqtt %s: the broker refused the subscription %r", self.name, topic)

    def _on_message_for(
        self, route: _Route
    ) -> Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None]:
        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            self._handle(route, message.topic, bytes(message.payload), time.time())

        return on_message

    def _on_publish_qos0(self, topic: str, payload: bytes) -> None:
        """The buffered client's fast path: the routes whose filters match ``topic`` (paho's
        own matching, cached per topic), each handled as paho would call its callback."""
        routes = self._routes_of_topic.get(topic)
        if routes is None:
            routes = tuple(
                r
                for r in self._routes
                if mqtt.topic_matches_sub(callback_filter(r.subscription.topic), topic)
            )
            if len(self._routes_of_topic) >= TOPIC_CACHE:
                self._routes_of_topic.clear()  # junk topics cannot grow it without bound
            self._routes_of_topic[topic] = routes
        if not routes:
            self._guarded_dead_letter(topic, payload)
            return
        received = time.time()
        for route in routes:
            try:
                self._handle(route, topic, payload, received)
            except Exception as exc:  # as _guard does for paho's callbacks
                self._error(exc)

    def _guarded_dead_letter(self, topic: str, payload: bytes) -> None:
        try:
            self._dead_letter(
                "no_route", payload, f"topic {clip_text(topic, 200)} matches no filter"
            )
        except Exception as exc:
            self._error(exc)

    def _on_unrouted(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._dead_letter(
            "no_route",
            bytes(message.payload),
            f"topic {clip_text(message.topic, 200)} matches no filter",
        )

    def _handle(self, route: _Route, topic: str, payload: bytes, received: float) -> None:
        self._messages += 1  # paho's thread is the only writer; stats() reads it
        names = route.names.get(topic)
        if names is None:
            if len(route.names) >= TOPIC_CACHE:
                route.names.clear()  # junk topics cannot grow it without bound
            names = route.names[topic] = _TopicNames(self, route.template, topic)
        try:
            text = decode_payload(payload, route.max_payload)
            parsed = route.parser.parse(text, received, names)
        except ParseError as exc:
            self._dead_letter(exc.reason, payload, f"topic {clip_text(topic, 200)}: {exc.detail}")
            return
        if parsed.rejects:
            self._emit(parsed, payload, f"topic {clip_text(topic, 200)}: ")
        else:
            self._emit_readings(parsed.readings)

    def _claim(self, stream: str, topic: str, field: str) -> str:
        """``stream``, if no other topic or field gave that name first (ParseError if one
        did: ``stream_collision``, naming both); the first one to give a name owns it for
        the life of the source."""
        origin = self._stream_origin.get(stream)
        if origin is None:
            if len(self._stream_origin) >= MAX_STREAMS:
                raise ParseError(
                    "too_many_streams", f"{stream}: this source has {MAX_STREAMS} streams already"
                )
            self._stream_origin[stream] = (topic, field)
        elif origin[0] != topic or origin[1] != field:
            raise ParseError(
                "stream_collision",
                f"stream {stream} is already topic {clip_text(origin[0], 200)} field "
                f"{clip_text(origin[1], 64)}, not topic {clip_text(topic, 200)} field "
                f"{clip_text(field, 64)}",
            )
        return stream
