"""The Alertmanager output: each alert change as a Prometheus Alertmanager alert.

POST ``<url>/api/v2/alerts`` with one alert per record, so an operator's Alertmanager
silences, groups, inhibits and routes them (email, Slack, PagerDuty) like any other:

- labels (what Alertmanager tells alerts apart by, the same for both ends of one alert):
  ``alertname="LiquidGatewayAnomaly"``, ``gateway``, ``stream`` (what the alert is about,
  as in the MQTT topic), ``asset`` (the same, when it is an asset of several channels),
  ``severity`` (from the config), ``alert_id``;
- annotations: ``summary``, ``observed``, ``expected``, ``band``, ``explanation`` (each
  channel that counted, its reading against what was expected and why), ``score``, ``model``;
- ``startsAt`` when raised; ``endsAt`` ``raised_for`` after sending when raised (Alertmanager
  resolves an alert nobody re-sends), and the clear time on clear, which resolves it.

Alertmanager's client contract is to re-send the alerts that are still firing (Prometheus
does it every ``--rules.alert.resend-delay``, 1 minute, with ``endsAt`` four evaluation
intervals ahead): every ``resend_interval`` the delivery loop hands this output the alerts
still active and it POSTs them again with ``endsAt`` ``raised_for`` (default four intervals)
ahead, so an alert lasts as long as the fault, and resolves itself soon after the gateway
stops sending (dead, unplugged) instead of a day later.

Events have no Alertmanager form: they count as delivered without a request. The answers
mean what they mean to the webhook output (400: this alert is malformed, quarantined).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from gateway.config import AlertmanagerOutputSection
from gateway.outputs.base import Down
from gateway.outputs.webhook import WebhookOutput
from gateway.records import AlertChange, alert_payload, iso_utc
from gateway.store import OutboxRow

log = logging.getLogger(__name__)

ALERTNAME = "LiquidGatewayAnomaly"
RESEND_BATCH = 200  # alerts per re-send request


def _number(value: Any, unit: str | None) -> str:
    if value is None:
        return "unknown"
    text = f"{value:g}" if isinstance(value, float | int) else str(value)
    return f"{text} {unit}" if unit else text


def _band(band: Any, unit: str | None) -> str:
    if not isinstance(band, list) or len(band) != 2:
        return "unknown"
    return f"{_number(band[0], None)} to {_number(band[1], unit)}"


def to_alert(
    record: dict[str, Any], severity: str, raised_for: float, now: float
) -> dict[str, Any]:
    """One outbox alert record as an Alertmanager alert."""
    stream = str(record["stream"])
    contributors = [c for c in record.get("contributors") or [] if isinstance(c, dict)]
    channels = {str(c.get("stream")) for c in contributors}
    labels = {
        "alertname": ALERTNAME,
        "gateway": str(record["gateway"]),
        "stream": stream,
        "severity": severity,
        "alert_id": str(record["alert_id"]),
    }
    if channels - {stream}:
        labels["asset"] = stream
    unit = record.get("unit")
    explanation = "; ".join(
        f"{c.get('stream')} read {_number(c.get('observed'), c.get('unit'))}, expected "
        f"{_number(c.get('expected'), c.get('unit'))} (band {_band(c.get('band'), c.get('unit'))}"
        f", {c.get('reason', 'level')}, {round(float(c.get('share') or 0.0) * 100)} % of the score)"
        for c in contributors
    )
    annotations = {
        "summary": f"{stream} on {record['gateway']} is anomalous",
        "observed": _number(record.get("observed"), unit),
        "expected": _number(record.get("expected"), unit),
        "band": _band(record.get("band"), unit),
        "explanation": explanation or "no channel detail",
        "score": f"{record.get('score')}",
        "model": str(record.get("model")),
    }
    ts = str(record["ts"])
    alert: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": ts}
    if record.get("state") == "cleared":
        alert["endsAt"] = ts
    else:
        alert["endsAt"] = iso_utc(now + raised_for)
    return alert


class AlertmanagerOutput(WebhookOutput):
    def __init__(self, section: AlertmanagerOutputSection, gateway_id: str) -> None:
        super().__init__(section, gateway_id)
        self._severity = section.severity
        self._raised_for = section.ends_after
        self.resend_interval = section.resend_interval
        self._resend_refused = ""  # the last refusal of a re-send, logged once
        self._stats.update(resent=0, resend_failures=0)

    @classmethod
    def from_section(cls, section: Any, gateway_id: str) -> AlertmanagerOutput:
        return cls(section, gateway_id)

    def url(self, section: Any) -> str:
        return str(section.url).rstrip("/") + "/api/v2/alerts"

    def render(self, row: OutboxRow) -> bytes | None:
        if row.kind != "alert":
            return None
        record = json.loads(row.payload)
        alert = to_alert(record, self._severity, self._raised_for, time.time())
        return json.dumps([alert], separators=(",", ":"), allow_nan=False).encode("utf-8")

    def resend(self, alerts: Sequence[AlertChange]) -> Down | None:
        """POST the active alerts again, ``RESEND_BATCH`` per request. A refusal is counted
        and logged (once per reason) and waits for the next interval, like the rest."""
        now = time.time()
        for start in range(0, len(alerts), RESEND_BATCH):
            chunk = [
                to_alert(alert_payload(a, self._gateway_id), self._severity, self._raised_for, now)
                for a in alerts[start : start + RESEND_BATCH]
            ]
            body = json.dumps(chunk, separators=(",", ":"), allow_nan=False).encode("utf-8")
            answer = self.exchange("resend", body)
            if isinstance(answer, Down):
                return answer
            reason = answer[1]
            with self._lock:
                if reason is None:
                    self._stats["resent"] += len(chunk)
                else:
                    self._stats["resend_failures"] += 1
            if reason is not None and reason != self._resend_refused:
                log.warning("alertmanager %s: re-sending active alerts: %s", self.name, reason)
            self._resend_refused = reason or ""
        return None
