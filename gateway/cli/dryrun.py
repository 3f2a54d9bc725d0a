"""`liquid-gateway test`: a dry run of a config's sources, like `telegraf --test`.

Every configured source is built and started exactly as the daemon does it (the same source
classes, so the same framing, parsing, stream naming and dead letters) and hands its records
to the daemon's own ingest queue; readings then pass the pipeline's time guard, as they
would before the detector. After a few seconds the sources are stopped and what they
produced is reported per source: the streams the daemon would create, a sample of parsed
readings, dead letters counted by reason (with an example), and whether the source could
connect at all. Nothing is written: no database, no data directory, no upstream link, no
metrics listener — only sources are started, and they only read.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Config
from gateway.errors import GatewayError
from gateway.pipeline.clock import TimeGuard
from gateway.pipeline.ingest import IngestQueue
from gateway.records import DeadLetter, Event, Reading, json_number
from gateway.sources import build_source
from gateway.sources.base import Source
from gateway.times import iso, shown

POLL_S = 0.1  # how often the queue is drained and the sources' health looked at
MAX_BATCH = 5000
JOIN_S = 3.0  # per source, to let its threads finish after stop()
LOST_EVENTS = ("port_lost", "broker_lost", "server_lost")
EXAMPLE_CHARS = 160  # of a dead letter's detail in the report
STREAMS_SHOWN = 50  # per source in the text report; the JSON report has them all
# Dead letters that the end of the dry run itself causes: a serial source flushes the line
# it was in the middle of when its port is closed. Not the device's fault: left out.
CUT_BY_STOP = frozenset({"partial_line"})


@dataclass
class StreamReport:
    stream: str
    unit: str | None
    readings: int = 0
    first: tuple[float, float] | None = None  # (ts, value)
    last: tuple[float, float] | None = None


@dataclass
class SourceReport:
    name: str
    type: str
    where: str  # the port, broker or simulated signal it reads
    connected: bool = False  # at any moment of the run
    error: str | None = None  # why it could not connect or open, when it never did
    refused_subscriptions: list[str] = field(default_factory=list)
    readings: int = 0
    streams: dict[str, StreamReport] = field(default_factory=dict)
    sample: list[Reading] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> one detail
    events: Counter[str] = field(default_factory=Counter)

    def trouble(self) -> str | None:
        """Why this source would not work in the daemon, or None."""
        if not self.connected and self.error is not None:
            verb = "connect to" if self.type in ("mqtt", "opcua") else "open"
            return f"cannot {verb} {self.where}: {self.error}"
        if self.refused_subscriptions:
            server = "server" if self.type == "opcua" else "broker"
            refused = ", ".join(self.refused_subscriptions)
            return f"the {server} refused the subscription {refused}"
        return None

    def problem(self) -> str | None:
        """``trouble``, naming the source."""
        trouble = self.trouble()
        return None if trouble is None else f"source {self.name} ({self.type}): {trouble}"


@dataclass
class DryRun:
    seconds: float
    sources: list[SourceReport]
    dropped_readings: int = 0  # by the ingest queue's overflow policy
    max_streams: int = 0

    @property
    def problems(self) -> list[str]:
        if not self.sources:
            return ["the config has no sources: nothing to read"]
        return [p for s in self.sources if (p := s.problem()) is not None]

    @property
    def stream_count(self) -> int:
        return sum(len(s.streams) for s in self.sources)


def _where(section: Any) -> str:
    if section.type == "modbus":
        return str(section.where)  # the device, or host:port on TCP
    if section.type == "serial":
        return str(section.port)
    if section.type == "mqtt":
        return f"broker {section.broker.host}:{section.broker.port}"
    if section.type == "opcua":
        return str(section.endpoint)
    if section.type == "simulate":
        return f"{section.streams} simulated streams at {section.rate_hz:g} Hz"
    return section.type


class _Collector:
    """Takes the queue's records into the per-source reports (keeping bounded samples)."""

    def __init__(self, reports: dict[str, SourceReport], guard: TimeGuard, samples: int) -> None:
        self.reports = reports
        self.guard = guard
        self.samples = samples
        self.stream_source: dict[str, str] = {}
        self.stopped = False  # the sources were told to stop: what comes now is the tail

    def take(self, readings: list[Reading], side: list[DeadLetter | Event]) -> None:
        kept, quarantined = self.guard.check(readings)
        for reading in kept:
            self._reading(reading)
        for record in [*side, *quarantined]:
            if isinstance(record, DeadLetter):
                self._dead_letter(record)
            else:
                self._event(record)

    def _reading(self, r: Reading) -> None:
        report = self.reports.get(r.source)
        if report is None:
            return
        report.readings += 1
        stream = report.streams.get(r.stream)
        if stream is None:
            stream = report.streams[r.stream] = StreamReport(r.stream, r.unit)
            self.stream_source[r.stream] = r.source
        stream.readings += 1
        stream.first = stream.first or (r.ts, r.value)
        stream.last = (r.ts, r.value)
        if len(report.sample) < self.samples:
            report.sample.append(r)

    def _dead_letter(self, letter: DeadLetter) -> None:
        report = self.reports.get(letter.source)
        if report is None or (self.stopped and letter.reason in CUT_BY_STOP):
            return
        report.dead_letters[letter.reason] += 1
        report.examples.setdefault(letter.reason, (letter.detail or letter.payload)[:EXAMPLE_CHARS])

    def _event(self, event: Event) -> None:
        name = event.subject if event.subject in self.reports else None
        name = name or self.stream_source.get(event.subject)
        report = self.reports.get(name) if name else None
        if report is None:
            return
        report.events[event.kind] += 1
        if event.kind in LOST_EVENTS:
            report.error = str(event.detail.get("error") or event.kind)


def dry_run(config: Config, seconds: float, samples: int = 5) -> DryRun:
    """Run every source of ``config`` for ``seconds`` and report what it produced.

    Stops early when every source has failed to connect: waiting longer tells nothing new.
    """
    queue = IngestQueue.from_section(config.ingest)
    reports: dict[str, SourceReport] = {}
    sources: dict[str, Source] = {}
    collector = _Collector(reports, TimeGuard(config.ingest.max_clock_skew), samples)
    try:
        for section in config.sources:
            report = reports[section.name] = SourceReport(
                section.name, section.type, _where(section)
            )
            try:
                source = build_source(section, queue)
                source.start()
            except (GatewayError, OSError, ValueError) as exc:
                report.error = str(exc)
                continue
            sources[section.name] = source
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            collector.take(*queue.get_batch(MAX_BATCH, POLL_S))
            _look_at(sources, reports)
            if all(r.error is not None and not r.connected for r in reports.values()):
                break  # also with no sources at all
    finally:
        collector.take(*queue.get_batch(MAX_BATCH, 0.0))  # all that came before the stop
        collector.stopped = True
        for source in sources.values():
            source.stop()
        for source in sources.values():
            source.join(JOIN_S)
    while len(queue):  # what the sources handed over while they stopped
        collector.take(*queue.get_batch(MAX_BATCH, 0.0))
    _look_at(sources, reports)
    return DryRun(
        seconds=seconds,
        sources=list(reports.values()),
        dropped_readings=queue.dropped_readings,
        max_streams=config.limits.max_streams,
    )


def _look_at(sources: dict[str, Source], reports: dict[str, SourceReport]) -> None:
    for name, source in sources.items():
        stats = source.stats()
        report = reports[name]
        if stats.get("connected") or stats.get("readings"):
            report.connected = True
        refused = stats.get("subscriptions_refused") or [
            f"{node} ({status})" for node, status in (stats.get("nodes_refused") or {}).items()
        ]
        if refused:
            report.refused_subscriptions = list(refused)


# --- the report ----------------------------------------------------------------------------


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _value(value: float, unit: str | None) -> str:
    return f"{value:.6g}" + (f" {unit}" if unit else "")


def render_text(run: DryRun, local: bool = False) -> str:
    lines: list[str] = []
    for s in run.sources:
        if s.type == "mqtt":
            health = "connected" if s.connected else "NOT CONNECTED"
        else:
            health = "open" if s.connected else "NOT OPEN"
        dead = sum(s.dead_letters.values())
        lines.append(
            f"source {s.name} ({s.type}, {s.where}): {health}; {_count(s.readings, 'reading')}, "
            f"{_count(len(s.streams), 'stream')}, {_count(dead, 'dead letter')}"
        )
        if (trouble := s.trouble()) is not None:
            lines.append(f"  error: {trouble}")
        elif not s.readings and not dead:
            lines.append(
                f"  nothing arrived in {run.seconds:g} s: is the device sending, and are "
                "the port settings, topics and format right?"
            )
        if s.streams:
            rows = [
                (
                    st.stream,
                    str(st.readings),
                    st.unit or "-",
                    f"{st.first[1]:.6g}" if st.first else "-",
                    f"{st.last[1]:.6g}" if st.last else "-",
                )
                for st in list(s.streams.values())[:STREAMS_SHOWN]
            ]
            header = ("STREAM", "READINGS", "UNIT", "FIRST", "LAST")
            widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
            lines.append("  streams it would create:")
            for row in [header, *rows]:
                cells = (c.ljust(w) for c, w in zip(row, widths, strict=True))
                lines.append("    " + "  ".join(cells).rstrip())
            if len(s.streams) > STREAMS_SHOWN:
                lines.append(f"    ... and {len(s.streams) - STREAMS_SHOWN} more")
        if s.sample:
            lines.append("  sample readings:")
            for r in s.sample:
                lines.append(f"    {shown(r.ts, local)}  {r.stream} = {_value(r.value, r.unit)}")
        for reason, count in s.dead_letters.most_common():
            lines.append(f"  dead letters {reason}: {count} (e.g. {s.examples.get(reason, '')!r})")
        if s.events:
            events = ", ".join(f"{k} {n}" for k, n in sorted(s.events.items()))
            lines.append(f"  events: {events}")
    if run.dropped_readings:
        lines.append(f"ingest queue: {run.dropped_readings} readings dropped (queue full)")
    if run.stream_count > run.max_streams:
        lines.append(
            f"note: {run.stream_count} streams, more than limits.max_streams "
            f"({run.max_streams}): the daemon would refuse readings of the others"
        )
    readings = sum(s.readings for s in run.sources)
    dead = sum(sum(s.dead_letters.values()) for s in run.sources)
    verdict = "FAILED" if run.problems else "ok"
    lines.append(
        f"{verdict}: {_count(len(run.sources), 'source')} read for {run.seconds:g} s: "
        f"{_count(run.stream_count, 'stream')}, {_count(readings, 'reading')}, "
        f"{_count(dead, 'dead letter')}; "
        "nothing was written"
    )
    return "\n".join(lines)


def as_json(run: DryRun, local: bool = False) -> dict[str, Any]:
    def point(p: tuple[float, float] | None) -> dict[str, Any] | None:
        return (
            None
            if p is None
            else {"ts": p[0], "time": iso(p[0], local), "value": json_number(p[1])}
        )

    return {
        "ok": not run.problems,
        "seconds": run.seconds,
        "problems": run.problems,
        "dropped_readings": run.dropped_readings,
        "sources": [
            {
                "name": s.name,
                "type": s.type,
                "reads": s.where,
                "connected": s.connected,
                "error": s.trouble(),
                "readings": s.readings,
                "streams": [
                    {
                        "stream": st.stream,
                        "unit": st.unit,
                        "readings": st.readings,
                        "first": point(st.first),
                        "last": point(st.last),
                    }
                    for st in s.streams.values()
                ],
                "sample": [
                    {
                        "stream": r.stream,
                        "ts": r.ts,
                        "time": iso(r.ts, local),
                        "value": json_number(r.value),
                        "unit": r.unit,
                    }
                    for r in s.sample
                ],
                "dead_letters": dict(s.dead_letters),
                "dead_letter_examples": dict(s.examples),
                "events": dict(s.events),
            }
            for s in run.sources
        ],
    }
