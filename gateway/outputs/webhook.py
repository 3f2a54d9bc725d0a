"""The webhook output: each alert and event POSTed as JSON to one URL, HMAC-signed.

The wire format is this module's own: ``{"type": "alert"|"event", "id", "gateway",
"record"}``, where ``record`` is the alert or event as the MQTT output publishes it and
``id`` is unique per record (receivers de-duplicate on it; it is also the
``X-Gateway-Delivery`` header). With a ``secret_file`` the body is signed:
``X-Gateway-Signature: sha256=<hex HMAC-SHA256 of the body>``. The key is read once at start
and never logged.

What the answer means: 2xx, delivered; 408 and 429, try again later (retried with the
delivery loop's back-off); any other 4xx, the receiver will never take this record
(quarantined for this output, counted in ``dead_letters``); 3xx (not followed) and 5xx,
retried. No answer (refused connection, time-out, a broken reply) is the server being
down: the loop backs off and tries the same record again.

stdlib ``http.client``, one connection per request: a record every few seconds at most
does not need a pool, and no redirect is ever followed with the signed body.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.config import WebhookOutputSection
from gateway.config.documents import read_bounded
from gateway.config.schema import MAX_SECRET_BYTES, secret_path
from gateway.outputs.base import Ack, Down, Outcome, Output, Refusal, SendResult, Timing, Up
from gateway.store import OutboxRow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Gateway-Signature"
_MAX_REPLY = 4096  # what is read of a reply's body, for the reason of a refusal


def render(row: OutboxRow, gateway_id: str) -> bytes:
    """The body POSTed for one outbox row."""
    body = {
        "type": row.kind,
        "id": row.msg_id,
        "gateway": gateway_id,
        "record": json.loads(row.payload),
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Gateway-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookOutput(Output):
    """POST per record. Subclasses (an HTTP API such as Alertmanager's) change ``render``
    and ``url``; the answers mean the same."""

    def __init__(self, section: Any, gateway_id: str) -> None:
        super().__init__()
        self.name = section.name
        self.timing = Timing(
            max_inflight=20,
            reconnect_min_delay=section.reconnect_min_delay,
            reconnect_max_delay=section.reconnect_max_delay,
            retry_min_delay=section.retry_min_delay,
            retry_max_delay=section.retry_max_delay,
            drain_timeout=section.drain_timeout,
        )
        self._section = section
        self._gateway_id = gateway_id
        self._url = urllib.parse.urlsplit(self.url(section))
        self._secret: bytes | None = None
        self._up = False
        self._answered = True  # answered since the last connect (nothing to report yet)
        self._report_up = False
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {"dead_letters": 0, "last_status": None}

    @classmethod
    def from_section(cls, section: WebhookOutputSection, gateway_id: str) -> WebhookOutput:
        return cls(section, gateway_id)

    def url(self, section: Any) -> str:
        """Where records are POSTed."""
        return str(section.url)

    def render(self, row: OutboxRow) -> bytes | None:
        """The body for one row; None: nothing to send for it (it counts as delivered)."""
        return render(row, self._gateway_id)

    @property
    def linked(self) -> bool:
        return self._up

    @property
    def ready(self) -> bool:
        return self._up

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats = dict(self._stats)
        # Up once it has answered since the last (re)connect, not merely when it may send.
        return {**stats, "connected": self._up and self._answered}

    def prepare(self) -> bool:
        if getattr(self._section, "secret_file", None) is None:
            log.info("webhook %s: %s, unsigned", self.name, self._where())
            return True
        path = secret_path(Path(self._section.secret_file), Path.cwd())
        try:
            secret = read_bounded(path, MAX_SECRET_BYTES).rstrip(b"\r\n")
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            self.report(f"webhook {self.name}: cannot read its secret_file {path}: {reason}")
            return False
        if not secret:
            self.report(f"webhook {self.name}: its secret_file {path} is empty; not sending")
            return False
        self._secret = secret
        log.info("webhook %s: %s, signed (%s)", self.name, self._where(), SIGNATURE_HEADER)
        return True

    def _where(self) -> str:
        # The URL without its query: a token in it is as good as a password.
        return f"{self._url.scheme}://{self._url.netloc}{self._url.path}"

    def connect(self) -> Down | None:
        """Nothing to open: one connection per request. The next answer says it is up."""
        self._up = True
        self._answered = False
        return None

    def poll(self) -> list[Outcome]:
        if self._report_up:  # the loop's reconnect back-off starts again from the minimum
            self._report_up = False
            return [Up()]
        return []

    def send(self, row: OutboxRow) -> SendResult:
        if row.problem is not None:
            return Refusal(row.seq, f"not sent: {row.problem}", final=True)
        try:
            body = self.render(row)
        except (ValueError, KeyError, TypeError) as exc:
            return Refusal(row.seq, f"not sent: its payload cannot be rendered ({exc})", final=True)
        if body is None:
            return Ack(row.seq)
        answer = self.exchange(row.msg_id, body)
        if isinstance(answer, Down):
            return answer
        status, reason = answer
        if reason is None:
            return Ack(row.seq)
        if 400 <= status < 500 and status not in (408, 429):
            with self._lock:
                self._stats["dead_letters"] += 1
            return Refusal(row.seq, reason, final=True)
        return Refusal(row.seq, reason)

    def exchange(self, delivery: str, body: bytes) -> Down | tuple[int, str | None]:
        """POST ``body``: ``Down`` when there is no answer, else the status and, unless it is
        2xx, why it is not a success (the reply's start, the URL without its query)."""
        try:
            status, reply = self._post(delivery, body)
        except (OSError, http.client.HTTPException) as exc:
            self._up = False
            reason = "timed out" if isinstance(exc, TimeoutError | socket.timeout) else str(exc)
            return Down(f"webhook {self.name}: no answer from {self._where()}: {reason}")
        with self._lock:
            self._stats["last_status"] = status
        if not self._answered:
            self._answered = self._report_up = True
            log.info("webhook %s: %s answers", self.name, self._where())
        if 200 <= status < 300:
            return status, None
        return status, f"HTTP {status} from {self._where()}" + (f": {reply}" if reply else "")

    def _post(self, delivery: str, body: bytes) -> tuple[int, str]:
        url = self._url
        timeout = self._section.timeout
        connection: http.client.HTTPConnection
        if url.scheme == "https":
            context = ssl.create_default_context()
            connection = http.client.HTTPSConnection(
                url.hostname or "", url.port, timeout=timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=timeout)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"liquid-gateway/{__version__}",
            "X-Gateway-Delivery": delivery,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = signature(self._secret, body)
        target = url.path or "/"
        if url.query:
            target += "?" + url.query
        try:
            connection.request("POST", target, body=body, headers=headers)
            response = connection.getresponse()
            reply = response.read(_MAX_REPLY)
            return response.status, reply.decode("utf-8", "replace").strip()[:200]
        finally:
            connection.close()

    def close(self, deadline: float | None) -> None:
        self._up = False
