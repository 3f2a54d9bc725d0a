"""The Prometheus endpoint: the gateway's counters, read at scrape time.

Nothing here keeps its own copy of a counter. Each scrape asks the daemon for a `Readout`
(plain numbers gathered from the sources', the pipeline's and the forwarder's own counters)
and turns it into samples, so the endpoint can never drift from what `status` shows. The one
thing measured here is inference time: `TimedModel` wraps the step model and feeds a
histogram. The server is prometheus-client's, on its own daemon thread, loopback by default.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.config import UPSTREAM_OUTPUT

log = logging.getLogger(__name__)

PREFIX = "liquid_gateway"
# One batched CfC step costs microseconds (DESIGN.md); the tail is there for slow boards.
INFERENCE_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


@dataclass(frozen=True)
class Readout:
    """What one scrape reports; gathered by the daemon from its components' counters."""

    gateway_id: str
    model_id: str
    started_at: float
    database_path: Path
    sources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # Source.stats()
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # DeliveryLoop.stats()
    alerts: Mapping[str, int] = field(default_factory=dict)  # raised / cleared
    dead_letters: Mapping[str, int] = field(default_factory=dict)  # "source/reason" -> n
    dropped_readings: int = 0
    queue_depth: int = 0
    write_errors: int = 0
    over_cap_bytes: int = 0  # in use past max_db_size with no readings left to delete
    # Channel views: at most limits.max_streams, which bounds the per-stream series.
    streams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_streams: int = 0
    refused_readings: int = 0  # readings of new streams past max_streams
    pipeline_times: Mapping[str, Any] = field(default_factory=dict)  # PhaseTimes.status()


def database_bytes(path: Path) -> int:
    """The database with its WAL and shared-memory files: what it takes on disk."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += path.with_name(path.name + suffix).stat().st_size
    return total


class GatewayCollector(Collector):
    def __init__(self, readout: Callable[[], Readout]) -> None:
        self._readout = readout

    def collect(self) -> Iterator[Metric]:
        r = self._readout()
        now = time.time()

        def gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)

        def counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)

        info = gauge(
            "build_info", "Version and model of the running gateway.", ["version", "model"]
        )
        info.add_metric([__version__, r.model_id], 1)
        yield info
        start = gauge("start_time_seconds", "When the daemon started (Unix time).")
        start.add_metric([], r.started_at)
        yield start

        readings = counter("source_readings", "Readings accepted per source.", ["source"])
        parse_errors = counter(
            "source_parse_errors", "Records a source could not parse (dead letters).", ["source"]
        )
        up = gauge("source_connected", "1 if the source's port or broker is connected.", ["source"])
        age = gauge(
            "source_last_reading_age_seconds",
            "Seconds since the source's last reading.",
            ["source"],
        )
        mqtt = gauge("mqtt_connected", "1 if the MQTT connection is up.", ["link"])
        for name, stats in sorted(r.sources.items()):
            readings.add_metric([name], float(stats.get("readings", 0)))
            parse_errors.add_metric([name], float(stats.get("dead_letters_total", 0)))
            up.add_metric([name], 1.0 if stats.get("connected") else 0.0)
            if stats.get("last_reading_ts") is not None:
                age.add_metric([name], max(0.0, now - float(stats["last_reading_ts"])))
            if stats.get("type") == "mqtt":
                mqtt.add_metric([f"source:{name}"], 1.0 if stats.get("connected") else 0.0)
        upstream = r.outputs.get(UPSTREAM_OUTPUT)
        if upstream is not None:
            mqtt.add_metric(["upstream"], 1.0 if upstream.get("connected") else 0.0)
        yield from (readings, parse_errors, up, age, mqtt)

        dead = counter(
            "dead_letters", "Quarantined records by source and reason.", ["source", "reason"]
        )
        for key, count in sorted(r.dead_letters.items()):
            source, _, reason = key.partition("/")
            dead.add_metric([source, reason], float(count))
        yield dead

        alerts = counter("alerts", "Alert changes by state (raised, cleared).", ["state"])
        for state in ("raised", "cleared"):
            alerts.add_metric([state], float(r.alerts.get(state, 0)))
        yield alerts

        score = gauge(
            "anomaly_score", "The latest anomaly score per stream, in [0, 1].", ["stream"]
        )
        active = gauge("alert_active", "1 while the stream's alert is raised.", ["stream"])
        for stream, view in sorted(r.streams.items()):
            if view.get("score") is not None:
                score.add_metric([stream], float(view["score"]))
            active.add_metric([stream], 1.0 if view.get("alert") else 0.0)
        yield from (score, active)
        tracked = gauge("streams", "Streams scored now.")
        tracked.add_metric([], float(len(r.streams)))
        limit = gauge("max_streams", "limits.max_streams: new streams past it are refused.")
        limit.add_metric([], float(r.max_streams))
        refused = counter(
            "streams_refused_readings", "Readings of new streams refused past max_streams."
        )
        refused.add_metric([], float(r.refused_readings))
        yield from (tracked, limit, refused)

        backlog = gauge("outbox_backlog", "Alerts and events not yet acknowledged upstream.")
        oldest = gauge("outbox_oldest_age_seconds", "Age of the oldest undelivered outbox row.")
        quarantined = gauge(
            "outbox_quarantined", "Outbox rows that can never be published, kept aside."
        )
        if upstream is not None:
            backlog.add_metric([], float(upstream.get("backlog") or 0))
            oldest_ts = upstream.get("oldest_pending_ts")
            oldest.add_metric([], max(0.0, now - float(oldest_ts)) if oldest_ts else 0.0)
            quarantined.add_metric([], float(upstream.get("quarantined") or 0))
        yield from (backlog, oldest, quarantined)
        yield from self._per_output(r, now)

        dropped = counter("dropped_readings", "Readings dropped because the queue was full.")
        dropped.add_metric([], float(r.dropped_readings))
        depth = gauge("queue_depth", "Records waiting for the pipeline.")
        depth.add_metric([], float(r.queue_depth))
        write_errors = counter("write_errors", "Pipeline batches the database refused.")
        write_errors.add_metric([], float(r.write_errors))
        size = gauge("database_bytes", "Size of the SQLite database with its WAL.")
        size.add_metric([], float(database_bytes(r.database_path)))
        over_cap = gauge(
            "database_over_cap_bytes",
            "Bytes in use past max_db_size that retention cannot delete (no readings left).",
        )
        over_cap.add_metric([], float(r.over_cap_bytes))
        yield from (dropped, depth, write_errors, size, over_cap)

        times = r.pipeline_times
        longest = gauge(
            "pipeline_iteration_max_seconds", "The longest pipeline iteration since start."
        )
        over = counter("pipeline_iterations_over_budget", "Pipeline iterations longer than 100 ms.")
        phase_max = gauge(
            "pipeline_phase_max_seconds", "The longest of each phase of an iteration.", ["phase"]
        )
        phase_over = counter(
            "pipeline_phase_over_budget", "Phases of an iteration longer than 100 ms.", ["phase"]
        )
        if times:
            longest.add_metric([], float(times["iteration_max_ms"]) / 1000)
            over.add_metric([], float(times["iterations_over"]))
            for phase, ms in times["phase_max_ms"].items():
                phase_max.add_metric([phase], float(ms) / 1000)
                phase_over.add_metric([phase], float(times["phase_over"][phase]))
        yield from (longest, over, phase_max, phase_over)

    @staticmethod
    def _per_output(r: Readout, now: float) -> Iterator[Metric]:
        """Every configured output (upstream too), labelled by its name."""

        def family(kind: type[Any], name: str, doc: str) -> Any:
            return kind(f"{PREFIX}_{name}", doc, labels=["output"])

        families = {
            "connected": family(GaugeMetricFamily, "output_connected", "1 if the output is up."),
            "backlog": family(
                GaugeMetricFamily, "output_backlog", "Outbox rows the output has not delivered."
            ),
            "delivered": family(
                CounterMetricFamily, "output_delivered", "Rows delivered since start."
            ),
            "failures": family(
                CounterMetricFamily, "output_failures", "Refusals (retried) since start."
            ),
            "quarantined": family(
                GaugeMetricFamily, "output_quarantined", "Rows the output will never send."
            ),
        }
        oldest = family(
            GaugeMetricFamily, "output_oldest_age_seconds", "Age of its oldest undelivered row."
        )
        for name, stats in sorted(r.outputs.items()):
            for key, metric in families.items():
                metric.add_metric([name], float(stats.get(key) or 0))
            oldest_ts = stats.get("oldest_pending_ts")
            oldest.add_metric([name], max(0.0, now - float(oldest_ts)) if oldest_ts else 0.0)
        yield from families.values()
        yield oldest


class TimedModel:
    """A step model that reports how long each batched step took."""

    def __init__(self, model: Any, observe: Callable[[float], None]) -> None:
        self._model = model
        self._observe = observe

    def step(self, x: np.ndarray, h: np.ndarray, dt: np.ndarray) -> Any:
        start = time.perf_counter()
        try:
            return self._model.step(x, h, dt)
        finally:
            self._observe(time.perf_counter() - start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class MetricsServer:
    """The registry and, once started, the HTTP server that serves it."""

    def __init__(self, readout: Callable[[], Readout]) -> None:
        self.registry = CollectorRegistry()
        self.inference = Histogram(
            f"{PREFIX}_inference_seconds",
            "Time of one batched model step.",
            buckets=INFERENCE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(GatewayCollector(readout))
        # The standard process_* family (CPU seconds, resident and virtual memory, open and
        # max file descriptors, start time; read from /proc) and the Python GC's, named as
        # every other exporter names them so existing dashboards and alerts apply.
        ProcessCollector(registry=self.registry)
        self.registry.register(GC_COLLECTOR)
        self._server: Any = None
        self.address: tuple[str, int] | None = None

    def start(self, listen: str) -> bool:
        """Serve on ``host:port``; False (logged, not fatal) when it cannot bind."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        try:
            server, _thread = start_http_server(int(port), host, registry=self.registry)
        except OSError as exc:
            log.error("metrics endpoint disabled: cannot listen on %s: %s", listen, exc.strerror)
            return False
        self._server = server
        self.address = (host, int(server.server_address[1]))
        log.info("metrics on http://%s:%d/metrics", host, self.address[1])
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self.address = None
