"""The records that flow from sources to the pipeline, and on to the store.

Sources produce three kinds of record and put them on the ingest queue:
``Reading`` (one numeric value of one stream), ``DeadLetter`` (input we could not use,
kept for the operator with the reason) and ``Event`` (something worth recording that is
not a reading: a port lost, a stream gone stale, a fault injected by the simulator).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# Dead-letter payloads are truncated to this many characters before they are stored.
DEAD_LETTER_MAX_PAYLOAD = 512


class Reading(NamedTuple):
    """One value of one stream. A named tuple, not a dataclass: the hot paths make one per
    value (a frozen dataclass's ``__init__`` costs 1.3 us, a named tuple's 0.3 us)."""

    stream: str
    ts: float  # seconds since the Unix epoch (device time when present, else receive time)
    value: float
    source: str
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: str
    reason: str  # short stable code, e.g. "not_a_number", "bad_json", "line_too_long"
    payload: str  # already truncated to DEAD_LETTER_MAX_PAYLOAD
    payload_len: int  # length of the original payload, in bytes or characters
    ts: float = field(default_factory=time.time)
    detail: str = ""

    @classmethod
    def of(cls, source: str, reason: str, payload: bytes | str, detail: str = "") -> DeadLetter:
        if isinstance(payload, bytes):
            text = payload[: DEAD_LETTER_MAX_PAYLOAD * 4].decode("utf-8", errors="replace")
        else:
            text = payload
        return cls(
            source=source,
            reason=reason,
            payload=text[:DEAD_LETTER_MAX_PAYLOAD],
            payload_len=len(payload),
            detail=detail[:DEAD_LETTER_MAX_PAYLOAD],
        )


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # e.g. "port_lost", "port_recovered", "drift", "gap_reset", "fault_injected"
    subject: str  # the source or stream it is about
    ts: float = field(default_factory=time.time)
    detail: dict[str, Any] = field(default_factory=dict)
    upstream: bool = True  # False: recorded locally only (over the upstream event rate)


Record = Reading | DeadLetter | Event


class ScoredReading(NamedTuple):
    """A reading after the detector: what the store keeps in ``readings``."""

    stream: str
    ts: float
    value: float
    expected: float | None  # None while the model has no prediction yet (first reading)
    score: float  # anomaly likelihood of the stream's asset, in [0, 1]
    alert: bool  # the asset's alert state after this reading


@dataclass(frozen=True, slots=True)
class Contribution:
    """One channel's part in an alert: what it read, what was expected, how much it counted."""

    stream: str
    observed: float
    expected: float
    band: tuple[float, float]
    share: float  # fraction of the asset's raw score due to this channel, 0..1
    unit: str | None = None
    # Which test the reading failed: "level" (far from the baseline), "prediction" (far from
    # what the model expected next), "stuck" (the same value far longer than usual).
    reason: str = "level"


@dataclass(frozen=True, slots=True)
class AlertChange:
    """An alert raised or cleared. ``alert_id`` is the same for both ends of one alert."""

    alert_id: str  # uuid4 hex: unique, the upstream de-duplication key
    stream: str  # the asset (or lone stream) the alert is about
    state: str  # "raised" | "cleared"
    ts: float
    score: float
    observed: float
    expected: float
    band: tuple[float, float]
    unit: str | None
    model: str  # model id and short hash, e.g. "cfc-default@3f2a9c1e"
    contributors: tuple[Contribution, ...] = ()


@dataclass(slots=True)
class Batch:
    """Everything one pipeline iteration writes, in ONE transaction."""

    readings: list[ScoredReading] = field(default_factory=list)
    alerts: list[AlertChange] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # stream -> its checkpoint row (gateway.statecodec); only the streams of this slice
    states: dict[str, bytes] | None = None
    state_model_hash: str | None = None
    status: dict[str, Any] | None = None  # the daemon's status snapshot, for `status`


def iso_utc(ts: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, as sent upstream (the rule in ``times``)."""
    from gateway.times import iso

    return iso(ts)


def json_number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return value


def alert_condition(active: bool) -> str:
    """The first of an alert's two dimensions, named the same in the CLI, its JSON and CSV and
    the upstream payload: ``active`` while the fault lasts, ``cleared`` once it is over. The
    second, ``acknowledged``, is whether an operator has seen it; it is independent (a cleared
    alert may still want a look, an acknowledged one may still be active)."""
    return "active" if active else "cleared"


def alert_message_id(alert_id: str, state: str) -> str:
    """The ``id`` of the message about one change of an alert: receivers de-duplicate on it."""
    return f"{alert_id}:{state}"


def alert_of_message(message_id: str) -> str:
    """The alert an ``alert_message_id`` is about (alert ids may hold ``:``, states do not)."""
    return message_id.rpartition(":")[0]


def alert_payload(change: AlertChange, gateway_id: str) -> dict[str, Any]:
    """The JSON body published to ``{prefix}/{gateway}/alerts/{stream}``."""
    return {
        "id": alert_message_id(change.alert_id, change.state),
        "alert_id": change.alert_id,
        "gateway": gateway_id,
        "ts": iso_utc(change.ts),
        "stream": change.stream,
        "state": change.state,  # what happened: raised or cleared
        "condition": alert_condition(change.state == "raised"),  # how it stands after that
        "score": round(change.score, 6),
        "observed": json_number(change.observed),
        "expected": json_number(change.expected),
        "band": [json_number(b) for b in change.band],
        "unit": change.unit,
        "model": change.model,
        "contributors": [
            {
                "stream": c.stream,
                "observed": json_number(c.observed),
                "expected": json_number(c.expected),
                "band": [json_number(b) for b in c.band],
                "share": round(c.share, 4),
                "unit": c.unit,
                "reason": c.reason,
            }
            for c in change.contributors
        ],
    }


def event_payload(event: Event, gateway_id: str, event_id: str) -> dict[str, Any]:
    """The JSON body published to ``{prefix}/{gateway}/events``."""
    return {
        "id": event_id,
        "gateway": gateway_id,
        "ts": iso_utc(event.ts),
        "kind": event.kind,
        "subject": event.subject,
        "detail": event.detail,
    }
