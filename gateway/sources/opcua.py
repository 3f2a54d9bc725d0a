"""Subscribe to variables on an OPC UA server and turn their data changes into readings.

One thread owns the connection: it runs its own asyncio loop (asyncua is asyncio-only; the
rest of the gateway is threads), so the client, its session and its subscription are used
from that thread alone. One session per connection: connect, create one subscription at
``publishing_interval``, add a data-change monitored item per configured node, then wait until
the server goes away or the source stops. A lost server (refused, closed, silent past the
client's watchdog) is reported once as ``server_lost`` and its return as
``server_recovered``; between them the thread tries again after ``reconnect_min``, the wait
doubling up to ``reconnect_max``, as the serial and Modbus sources reopen their ports. Every
new connection subscribes afresh, so a restarted server (new namespace table, no old
subscriptions) is handled like a first one.

A node the server refuses (it does not exist, or may not be read) is reported once per
connection as the event ``node_refused`` naming the node and the status, and logged; the
other nodes carry on. A value whose status is not Good is the dead letter ``bad_status``
(naming the status), a value that is not a number (a string, an array, a structure) is
``not_a_number``, one that is NaN or infinite after scaling is ``non_finite``. Booleans are
1.0 and 0.0, as a Modbus coil.

Callbacks from asyncua (data changes, a lost connection) run on the source's loop and only
convert and hand records to the sink, which never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.crypto.uacrypto import CertProperties

from gateway.config import OpcuaNode, OpcuaSource
from gateway.config.checks import certificate_format
from gateway.records import Reading
from gateway.sources.base import Sink, Source

log = logging.getLogger(__name__)
# asyncua logs a lost connection as a traceback at ERROR from several of its tasks, once per
# attempt: a server down for a night would write thousands of lines. We report the loss and
# the return ourselves, once each; asyncua's own logger only speaks for real failures.
logging.getLogger("asyncua").setLevel(logging.CRITICAL)

# A publishing interval holds this many samples of one node at most (the server's queue).
MAX_QUEUE = 100


@dataclass(frozen=True)
class _Item:
    config: OpcuaNode
    stream: str


class OpcuaSubscriber(Source):
    def __init__(self, section: OpcuaSource, sink: Sink) -> None:
        super().__init__(section, sink)
        self.section: OpcuaSource = section
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None  # set: the session ends (lost or stopping)
        self._backoff = section.reconnect_min
        self._lost = False
        self._ever_connected = False
        self._items: dict[Any, _Item] = {}  # the subscribed NodeId -> what it feeds
        self._refused: dict[str, str] = {}  # node id -> status name, this connection
        self._notifications = 0

    def _bodies(self) -> Sequence[Callable[[], None]]:
        return [self._connect_once]

    def _extra_stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "endpoint": self.section.endpoint,
                "security": self.section.security.policy,
                "notifications": self._notifications,
                "subscribed": len(self._items),
                "nodes_refused": dict(self._refused),
            }

    def _interrupt(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            # RuntimeError: the loop has just closed, the thread is on its way out anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def _cleanup(self) -> None:
        self._set_connected(False)

    # --- one connection (the source's thread) --------------------------------------------

    def _connect_once(self) -> None:
        asyncio.run(self._session())
        if not self.stopping:
            self._stop.wait(self._backoff)
            self._backoff = min(self._backoff * 2, self.section.reconnect_max)

    async def _session(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self.stopping:  # stop() came before the loop existed: nothing would wake it
            return
        section = self.section
        client = Client(
            section.endpoint, timeout=section.timeout, watchdog_intervall=section.timeout
        )
        client.name = client.description = f"Liquid Gateway {section.name}"
        client.connection_lost_callback = self._on_connection_lost
        try:
            await self._secure(client)
        except (OSError, ValueError, TypeError) as exc:
            # A certificate that does not load: said so, and read again at the next attempt
            # (config validate names the file; a replaced file is picked up).
            self._server_lost(f"security setup failed: {exc}")
            return
        try:
            try:
                if not await self._unless_stopped(client.connect()):
                    return
            except (TimeoutError, OSError, ua.UaError) as exc:
                self._server_lost(f"cannot connect: {type(exc).__name__}: {exc}")
                return
            if await self._unless_stopped(self._subscribe(client)):
                self._session_up()
                await self._wake.wait()
        except (TimeoutError, OSError, ua.UaError) as exc:
            self._server_lost(f"{type(exc).__name__}: {exc}")
        finally:
            await self._disconnect(client)
            with self._lock:
                self._items = {}
            self._set_connected(False)

    async def _unless_stopped(self, step: Coroutine[Any, Any, Any]) -> bool:
        """Run one step of the session; False (the step cancelled) if the source is told to
        stop first, so that stop() never waits for a connect timeout."""
        assert self._wake is not None
        task = asyncio.ensure_future(step)
        woken = asyncio.ensure_future(self._wake.wait())
        await asyncio.wait({task, woken}, return_when=asyncio.FIRST_COMPLETED)
        woken.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False
        task.result()  # its exception, if it failed
        return not self.stopping

    async def _secure(self, client: Client) -> None:
        section = self.section
        if section.username:
            client.set_user(section.username)
            if section.password is not None:
                client.set_password(section.password.get_secret_value())
        security = section.security
        if security.policy == "None":
            return
        assert security.cert_file and security.key_file and security.server_cert_file
        cert = security.cert_file.read_bytes()
        uri = _application_uri(cert)
        if uri is not None:  # servers check that the certificate names the client's URI
            client.application_uri = uri
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=_properties(cert),
            private_key=_properties(security.key_file.read_bytes()),
            server_certificate=_properties(security.server_cert_file.read_bytes()),
            mode=ua.MessageSecurityMode[security.mode],
        )

    async def _subscribe(self, client: Client) -> None:
        section = self.section
        items: dict[Any, _Item] = {}
        nodes: list[Node] = []
        refused: dict[str, str] = {}
        for config in section.nodes:
            try:
                node_id = await _resolve(client, config.node)
            except ValueError as exc:
                refused[config.node] = str(exc)
                continue
            if node_id in items:  # ns=2;s=a and nsu=<its uri>;s=a: one node, one stream
                refused[config.node] = f"the same node as {items[node_id].config.node}"
                continue
            nodes.append(client.get_node(node_id))
            items[node_id] = _Item(config, section.stream_prefix + config.stream)
        # Known before the first notification can arrive (the initial values come with the
        # next publish, which could be handled before subscribe_data_change returns here).
        with self._lock:
            self._items = dict(items)
            self._refused = refused
        if nodes:
            publishing = section.publishing_interval
            sampling = section.sampling_interval
            if sampling is None:
                sampling = publishing
            queue = max(1, min(MAX_QUEUE, math.ceil(publishing / sampling))) if sampling else 1
            subscription = await client.create_subscription(publishing * 1000, _Handler(self))
            results = await subscription.subscribe_data_change(
                nodes, queuesize=queue, sampling_interval=ua.Double(sampling * 1000)
            )
            for node, result in zip(nodes, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    refused[items.pop(node.nodeid).config.node] = result.name
            with self._lock:
                self._items = items
                self._refused = refused
        for node_id, why in refused.items():
            log.error("opcua %s: the server refused node %s: %s", self.name, node_id, why)
            self._event("node_refused", node=node_id, status=why, endpoint=section.endpoint)

    async def _disconnect(self, client: Client) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), self.section.timeout)
        except (TimeoutError, OSError, ua.UaError, RuntimeError) as exc:
            log.debug("opcua %s: disconnect: %s", self.name, exc)

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._server_lost(f"connection lost: {type(exc).__name__}: {exc}")
        if self._wake is not None:
            self._wake.set()

    def _session_up(self) -> None:
        self._backoff = self.section.reconnect_min
        recovered = self._lost
        self._lost = False
        self._set_connected(True, reconnect=self._ever_connected)
        self._ever_connected = True
        if recovered:
            log.info("opcua %s: server %s recovered", self.name, self.section.endpoint)
            self._event("server_recovered", endpoint=self.section.endpoint)
        else:
            log.info("opcua %s: connected to %s", self.name, self.section.endpoint)

    def _server_lost(self, why: str) -> None:
        self._set_connected(False)
        if self._lost or self.stopping:
            return
        self._lost = True
        log.warning("opcua %s: server %s lost (%s)", self.name, self.section.endpoint, why)
        self._event("server_lost", endpoint=self.section.endpoint, error=why[:200])

    # --- data changes (the source's loop: convert, hand over, return) --------------------

    def _on_change(self, node_id: Any, value: ua.DataValue, received: float) -> None:
        with self._lock:
            self._notifications += 1
            item = self._items.get(node_id)
        if item is None:
            return  # a late notification of a session that is ending
        reading = self._reading(item, value, received)
        if reading is not None:
            self._emit_readings([reading])

    def _reading(self, item: _Item, value: ua.DataValue, received: float) -> Reading | None:
        config, stream = item.config, item.stream
        status = value.StatusCode
        if status is not None and not status.is_good():
            self._dead_letter(
                "bad_status", f"{config.node}: {status.name}", f"{stream}: {status.name}"
            )
            return None
        raw = value.Value.Value if value.Value is not None else None
        if isinstance(raw, bool):
            number = 1.0 if raw else 0.0
        elif isinstance(raw, int | float):
            number = float(raw)
        else:
            shown = repr(raw)[:200]
            self._dead_letter(
                "not_a_number", shown, f"{stream}: {type(raw).__name__} value from {config.node}"
            )
            return None
        number = number * config.scale + config.offset
        if not math.isfinite(number):
            self._dead_letter("non_finite", repr(number), f"{stream}: value not finite")
            return None
        return Reading(
            stream=stream,
            ts=self._timestamp(value, received),
            value=number,
            source=self.name,
            unit=config.unit,
        )

    def _timestamp(self, value: ua.DataValue, received: float) -> float:
        mode = self.section.timestamps
        if mode == "receipt":
            return received
        stamps = [value.ServerTimestamp] if mode == "server" else []
        if mode == "source":
            stamps = [value.SourceTimestamp, value.ServerTimestamp]
        for stamp in stamps:
            if isinstance(stamp, dt.datetime):
                if stamp.tzinfo is None:  # OPC UA times are UTC
                    stamp = stamp.replace(tzinfo=dt.UTC)
                return stamp.timestamp()
        return received


class _Handler:
    """asyncua's subscription handler: called on the source's loop for each change."""

    def __init__(self, source: OpcuaSubscriber) -> None:
        self._source = source

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        try:
            self._source._on_change(node.nodeid, data.monitored_item.Value, time.time())
        except Exception as exc:  # the top of asyncua's callback: count, log, carry on
            self._source._error(exc)

    def status_change_notification(self, status: Any) -> None:
        """The subscription ended (BadShutdown, BadTimeout): the connection watchdog ends
        the session; nothing to do here."""


async def _resolve(client: Client, text: str) -> Any:
    """The NodeId for ``text``; a namespace URI (nsu=) is looked up on this server, whose
    namespace indexes may change when it restarts. ValueError if it cannot be."""
    try:
        node_id = ua.NodeId.from_string(text)
    except (ValueError, ua.UaError) as exc:
        raise ValueError(f"not a node id: {exc}") from exc
    uri = getattr(node_id, "NamespaceUri", None)
    if uri:
        try:
            index = await client.get_namespace_index(uri)
        except ValueError:
            raise ValueError(f"the server has no namespace {uri}") from None
        node_id = ua.NodeId(node_id.Identifier, ua.Int16(index), node_id.NodeIdType)
    return node_id


def _properties(data: bytes) -> CertProperties:
    return CertProperties(data, extension=certificate_format(data))


def _application_uri(cert: bytes) -> str | None:
    """The URI in the certificate's subjectAltName (OPC UA's application URI), if any."""
    from cryptography import x509

    if certificate_format(cert) == "pem":
        loaded = x509.load_pem_x509_certificate(cert)
    else:
        loaded = x509.load_der_x509_certificate(cert)
    try:
        names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
