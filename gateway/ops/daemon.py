"""`liquid-gateway run`: wire sources, pipeline and outputs together and supervise them.

The main thread only handles signals, the systemd watchdog, reloads, Home Assistant discovery
and joins; the work happens in the source threads, the pipeline thread and the forwarder
threads, one per output (see DESIGN.md), and the metrics endpoint answers on prometheus-client's own thread.
SIGTERM/SIGINT: stop intake, drain the queue, checkpoint, flush the outputs, exit 0.
SIGHUP: re-read the config; if it is invalid, log every error and keep running as before;
otherwise restart only the sources and the outputs whose config changed. The ingest
queue, the detector (its state and baselines) and the pipeline are never rebuilt by a reload.

The systemd watchdog is pinged from the main loop at half of ``WATCHDOG_USEC``, and only while
the pipeline thread still reports in (its status callback is our heartbeat): a hung pipeline
stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from gateway.config import UPSTREAM_OUTPUT, Config, load_config
from gateway.detector import Detector
from gateway.errors import ConfigError
from gateway.model.runtime import load_model
from gateway.ops.metrics import MetricsServer, Readout, TimedModel
from gateway.ops.sdnotify import Notifier
from gateway.outputs import DeliveryLoop, delivery_loop
from gateway.outputs.homeassistant import Announcer
from gateway.pipeline.ingest import IngestQueue
from gateway.pipeline.runner import Pipeline
from gateway.sources import build_source
from gateway.sources.base import Source

log = logging.getLogger(__name__)

STATUS_EVERY_S = 10.0  # how often the one-line STATUS= for `systemctl status` is refreshed
MAX_STREAM_VIEWS = 2000  # per-stream detail in the status snapshot, at most
# Stream views are rebuilt with the status (every second) up to this many streams; beyond it,
# about every (streams / this) seconds: the rebuild is O(streams) on the pipeline thread
# (10 ms at 10,000 streams), and a view a few seconds old is as good for `streams` and metrics.
VIEWS_PER_SECOND = 2000
SILENT_SOURCE_S = 300.0  # a source without readings for this long is flagged in `status`
STALE_OUTBOX_S = 600.0  # an undelivered alert older than this is flagged


class Gateway:
    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.queue = IngestQueue.from_section(config.ingest)
        self.metrics = MetricsServer(self.metrics_readout)
        self.model = TimedModel(
            load_model(config.model.path, config.model.runtime), self.metrics.inference.observe
        )
        self.detector = Detector(config.detector, self.model, config.assets)
        # name -> the delivery thread of each configured output (upstream: "upstream")
        self.outputs: dict[str, DeliveryLoop] = {}
        self.announcer: Announcer | None = None
        self.sources: dict[str, Source] = {}
        self.pipeline = Pipeline(
            config, self.queue, self.detector, self._notify_forwarder, self._component_status
        )
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.notifier = Notifier()
        self.started_at = time.time()
        # Written by the pipeline thread in _component_status, read by the others.
        self._heartbeat = time.monotonic()
        self._stream_views: dict[str, dict[str, Any]] = {}
        self._views_at = -math.inf
        self._shown_views: dict[str, dict[str, Any]] = {}
        self._last_reload: dict[str, Any] | None = None
        self._watchdog_held = False

    # --- components --------------------------------------------------------------------

    @property
    def forwarder(self) -> DeliveryLoop | None:
        """The delivery thread of ``upstream:``, if it is configured."""
        return self.outputs.get(UPSTREAM_OUTPUT)

    def _notify_forwarder(self) -> None:
        for output in list(self.outputs.values()):
            output.notify()

    def _output_stats(self) -> dict[str, dict[str, Any]]:
        return {name: output.stats() for name, output in dict(self.outputs).items()}

    def _component_status(self) -> dict[str, Any]:
        """Extra status from the daemon; runs on the pipeline thread (which owns the detector)."""
        self._heartbeat = time.monotonic()
        now = time.monotonic()
        if now - self._views_at >= len(self.detector.streams) / VIEWS_PER_SECOND:
            views = self._stream_views = self.detector.channel_views()
            self._shown_views = dict(sorted(views.items())[:MAX_STREAM_VIEWS])
            self._views_at = now
        sources = {name: source.stats() for name, source in dict(self.sources).items()}
        outputs = self._output_stats()
        upstream = outputs.get(UPSTREAM_OUTPUT)
        status: dict[str, Any] = {
            "sources": sources,
            "upstream": upstream,
            "outputs": outputs,
            "accepted": dict(self.queue.accepted),
            "pid": os.getpid(),
            "config_path": str(self.config_path) if self.config_path else None,
            "last_reload": self._last_reload,
            "metrics": "http://{}:{}/metrics".format(*self.metrics.address)
            if self.metrics.address
            else None,
            "homeassistant": None
            if self.announcer is None
            else {"connected": self.announcer.connected},
            "stream_views": self._shown_views,
            "degraded": self._degraded(sources, upstream, outputs),
        }
        return status

    def _degraded(
        self,
        sources: dict[str, dict[str, Any]],
        upstream: dict[str, Any] | None,
        outputs: dict[str, dict[str, Any]] | None = None,
    ) -> list[str]:
        """Short operator-facing reasons why the gateway is not fully healthy."""
        now = time.time()
        flags: list[str] = []
        for name, stats in sorted(sources.items()):
            if not stats.get("connected", True):
                flags.append(f"source {name} disconnected")
            last = stats.get("last_reading_ts")
            if last is not None and now - last > SILENT_SOURCE_S:
                flags.append(f"source {name} silent for {now - last:.0f}s")
        if upstream is not None:
            flags += _output_flags(UPSTREAM_OUTPUT, upstream, now)
        for name, stats in (outputs or {}).items():
            if name != UPSTREAM_OUTPUT:
                flags += _output_flags(name, stats, now)
        if self.queue.dropped_readings:
            flags.append(f"{self.queue.dropped_readings} readings dropped (queue full)")
        degraded = getattr(self.pipeline, "storage_degraded", None)
        if (degraded is not None and degraded.is_set()) or (
            degraded is None and self.pipeline.write_errors
        ):
            flags.append("database writes failing")
        over = self.pipeline.over_cap_bytes
        if over:
            flags.append(
                f"database {over / 1e6:.1f} MB over max_db_size with no readings left to "
                "delete (stream state, alerts and the outbox fill it): raise max_db_size"
            )
        if self.config.metrics.listen and self.metrics.address is None:
            flags.append("metrics endpoint down")
        if self._last_reload is not None and not self._last_reload.get("ok"):
            flags.append("last config reload rejected")
        return flags

    def metrics_readout(self) -> Readout:
        """The counters one scrape reports; called on the metrics server's thread."""
        return Readout(
            gateway_id=self.config.gateway.id,
            model_id=self.model.model_id,
            started_at=self.started_at,
            database_path=self.config.database_path,
            sources={name: source.stats() for name, source in dict(self.sources).items()},
            outputs=self._output_stats(),
            alerts=dict(self.pipeline.alerts),
            dead_letters=dict(self.pipeline.dead_letters),
            dropped_readings=self.queue.dropped_readings,
            queue_depth=len(self.queue),
            write_errors=self.pipeline.write_errors,
            over_cap_bytes=self.pipeline.over_cap_bytes,
            streams=self._stream_views,
            max_streams=self.config.limits.max_streams,
            refused_readings=self.pipeline.refused_readings,
            pipeline_times=self.pipeline.times.status(),
        )

    def _start_announcer(self) -> None:
        if self.config.homeassistant.enabled and self.config.upstream is not None:
            self.announcer = Announcer(
                self.config.homeassistant, self.config.upstream, self.config.gateway.id
            )
            self.announcer.start()

    def _stop_announcer(self) -> None:
        if self.announcer is not None:
            self.announcer.stop()
            self.announcer = None

    def _alert_subjects(self) -> set[str]:
        """What alerts are published under: the asset for grouped channels, else the stream."""
        return {str(v.get("asset") or s) for s, v in self._stream_views.items()}

    def _start_outputs(self) -> None:
        """Start a delivery thread for each configured output that has none."""
        sections = self.config.delivery_outputs()
        names = [section.name for section in sections]
        for section in sections:
            if section.name in self.outputs:
                continue
            loop = delivery_loop(
                section,
                self.config.gateway.id,
                self.config.database_path,
                self.config.storage.durability,
                names,
            )
            loop.start()
            self.outputs[section.name] = loop
            log.info("output %s (%s) started", section.name, section.type)

    def _stop_outputs(self, names: list[str], drains: dict[str, float]) -> None:
        """Stop these outputs' threads together, each within its own drain timeout."""
        loops = [(name, self.outputs.pop(name)) for name in names if name in self.outputs]
        for name, loop in loops:
            loop.request_stop(drains.get(name, 5.0))
        for _, loop in loops:
            loop.stop(drains.get(loop.output.name, 5.0))

    def _start_source(self, section: Any) -> None:
        source = build_source(section, self.queue)
        source.start()
        self.sources[section.name] = source
        log.info("source %s (%s) started", section.name, section.type)

    # --- lifecycle -----------------------------------------------------------------------

    def _start_metrics(self) -> None:
        if warning := self.config.metrics.exposure_warning():
            log.warning("%s", warning)
        if self.config.metrics.listen:
            self.metrics.start(self.config.metrics.listen)

    def start(self) -> None:
        self._start_metrics()
        self.pipeline.start()
        self._start_outputs()
        self._start_announcer()
        for section in self.config.sources:
            self._start_source(section)
        log.info(
            "gateway %s running: %d sources, model %s on %s, upstream %s",
            self.config.gateway.id,
            len(self.sources),
            self.model.model_id,
            self.model.runtime,
            "configured" if self.config.upstream else "none (alerts kept locally)",
        )
        if self.config.outputs:
            log.info("outputs: %s", ", ".join(o.name for o in self.config.outputs))

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def request_reload(self, *_: Any) -> None:
        self._reload.set()

    def status_line(self) -> str:
        """One line for `systemctl status` (STATUS=)."""
        p = self.pipeline
        upstream = "no upstream"
        if self.forwarder is not None:
            upstream = "upstream " + ("up" if self.forwarder.stats().get("connected") else "DOWN")
        down = [n for n, s in self._output_stats().items() if not s.get("connected")]
        down = [n for n in down if n != UPSTREAM_OUTPUT]
        if down:
            upstream += ", outputs DOWN: " + ", ".join(down)
        line = (
            f"{len(self.sources)} sources, {len(self._stream_views)} streams, "
            f"{p.readings} readings, alerts {p.alerts.get('raised', 0)} raised / "
            f"{p.alerts.get('cleared', 0)} cleared, {upstream}"
        )
        return line

    def _pipeline_alive(self) -> bool:
        """The pipeline thread runs and reported in within one watchdog period (or 60 s)."""
        if not self.pipeline.is_alive():
            return False
        limit = max(60.0, self.notifier.watchdog_timeout or 0.0)
        return time.monotonic() - self._heartbeat < limit

    def _tick_watchdog(self) -> None:
        if self._pipeline_alive():
            if self._watchdog_held:
                log.warning("the pipeline reports in again; watchdog pings resumed")
                self._watchdog_held = False
            self.notifier.watchdog()
        elif not self._watchdog_held:
            log.critical(
                "the pipeline has not reported for %.0f s; withholding watchdog pings",
                time.monotonic() - self._heartbeat,
            )
            self._watchdog_held = True

    def run(self, duration: float | None = None) -> int:
        """Run until a stop signal (or ``duration`` seconds). Returns the exit code."""
        self.start()
        self._heartbeat = time.monotonic()
        self.notifier.ready(f"running: {self.status_line()}")
        deadline = None if duration is None else time.monotonic() + duration
        tick = min(1.0, self.notifier.watchdog_interval or 1.0)
        last_status = time.monotonic()
        code = 0
        while not self._stop.wait(tick):
            self._tick_watchdog()
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if not self.pipeline.is_alive():
                log.critical("the pipeline thread died; stopping")
                code = 1
                break
            if self.announcer is not None:
                self.announcer.announce(self._alert_subjects())
            now = time.monotonic()
            if now - last_status >= STATUS_EVERY_S:
                self.notifier.status(f"running: {self.status_line()}")
                last_status = now
            if deadline is not None and now >= deadline:
                break
        self.shutdown()
        self._stop_announcer()
        self.metrics.stop()
        return code

    def shutdown(self) -> None:
        """Graceful stop, in data-flow order: intake first, upstream last.

        Sources stop (no new readings); the pipeline drains the queue and commits it with a
        final detector-state checkpoint; each output waits at most its ``drain_timeout``
        for in-flight rows to be acknowledged (the MQTT ones then publish the retained
        ``offline`` and disconnect), all at once. What is still unacknowledged stays undelivered
        in the outbox and is sent after the next start.
        """
        self.notifier.stopping()
        log.info("stopping: closing sources, draining %d queued records", len(self.queue))
        for source in self.sources.values():
            source.stop()
        for source in self.sources.values():
            source.join(5.0)
        self.pipeline.stop()
        if self.pipeline.is_alive():
            log.error("the pipeline did not finish draining; detector state may be older")
        drains = {o.name: o.drain_timeout for o in self.config.delivery_outputs()}
        self._stop_outputs(list(self.outputs), drains)
        log.info("stopped")

    def reload(self) -> None:
        if self.config_path is None:
            log.warning("reload requested, but the config was not read from a file")
            return
        self.notifier.reloading()
        log.info("reloading the config from %s", self.config_path)
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("reload rejected: %s", issue)
            log.error("reload rejected: keeping the running config")
            self._last_reload = {"at": time.time(), "ok": False, "errors": len(exc.issues)}
            self.notifier.ready(f"running (reload rejected: {len(exc.issues)} errors)")
            return
        old = self.config
        if new.gateway.log_level != old.gateway.log_level:
            logging.getLogger().setLevel(new.gateway.log_level.upper())
            log.info("log level now %s", new.gateway.log_level)
        restart_needed = [
            name
            for name in ("ingest", "model", "detector", "assets", "storage", "limits")
            if getattr(new, name, None) != getattr(old, name, None)
        ]
        if new.gateway.model_copy(update={"log_level": "info"}) != old.gateway.model_copy(
            update={"log_level": "info"}
        ):
            restart_needed.insert(0, "gateway")
        if restart_needed:
            log.warning("changes to %s take effect at the next restart", ", ".join(restart_needed))
        old_sources = {s.name: s for s in old.sources}
        new_sources = {s.name: s for s in new.sources}
        for name, section in old_sources.items():
            if new_sources.get(name) != section:
                source = self.sources.pop(name)
                source.stop()
                source.join(5.0)
                log.info("source %s stopped (removed or changed)", name)
        upstream_changed = new.upstream != old.upstream
        old_outputs = {o.name: o for o in old.delivery_outputs()}
        new_outputs = {o.name: o for o in new.delivery_outputs()}
        # Each thread settles rows against the list of outputs it started with: a new list
        # restarts them all (their delivery state is in the database, nothing is lost).
        changed = [n for n, o in old_outputs.items() if new_outputs.get(n) != o]
        if set(old_outputs) != set(new_outputs):
            changed = list(old_outputs)
        self._stop_outputs(changed, {n: 5.0 for n in changed})
        for name in changed:
            log.info("output %s stopped (config changed)", name)
        if upstream_changed or new.homeassistant != old.homeassistant:
            self._stop_announcer()
        # Only what may change at run time; the rest stays as the components were built.
        self.config = old.model_copy(
            update={
                "sources": new.sources,
                "upstream": new.upstream,
                "outputs": new.outputs,
                "homeassistant": new.homeassistant,
                "metrics": new.metrics,
                "gateway": old.gateway.model_copy(update={"log_level": new.gateway.log_level}),
            }
        )
        for name, section in new_sources.items():
            if old_sources.get(name) != section:
                self._start_source(section)
        self._start_outputs()
        if self.announcer is None:
            self._start_announcer()
        if new.metrics != old.metrics:
            self.metrics.stop()
            self._start_metrics()  # self.config holds the new metrics section by now
        self._last_reload = {"at": time.time(), "ok": True}
        log.info("config reloaded from %s", self.config_path)
        self.notifier.ready(f"running: {self.status_line()}")


def run_gateway(config: Config, config_path: Path | None, duration: float | None = None) -> int:
    gateway = Gateway(config, config_path)
    previous = {
        sig: signal.signal(sig, handler)
        for sig, handler in (
            (signal.SIGTERM, gateway.request_stop),
            (signal.SIGINT, gateway.request_stop),
            (signal.SIGHUP, gateway.request_reload),
        )
    }
    try:
        return gateway.run(duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _output_flags(name: str, stats: dict[str, Any], now: float) -> list[str]:
    """Why one output is not healthy, in ``degraded``: upstream's as they always read."""
    what = "upstream" if name == UPSTREAM_OUTPUT else f"output {name}"
    rows = "outbox rows" if name == UPSTREAM_OUTPUT else f"outbox rows for {name}"
    flags: list[str] = []
    if not stats.get("connected"):
        flags.append(f"{what} disconnected")
    if stats.get("parked"):
        by = "the broker" if name == UPSTREAM_OUTPUT else name
        flags.append(f"{stats['parked']} {rows} refused by {by} (retried)")
    if stats.get("quarantined"):
        flags.append(f"{stats['quarantined']} {rows} quarantined (never publishable)")
    if stats.get("unrecorded"):
        flags.append(f"{stats['unrecorded']} delivered {rows} not yet recorded (storage)")
    oldest = stats.get("oldest_pending_ts")
    if oldest is not None and now - oldest > STALE_OUTBOX_S:
        backlog = "outbox backlog" if name == UPSTREAM_OUTPUT else f"{name} backlog"
        flags.append(f"{backlog} {stats.get('backlog')} (oldest {now - oldest:.0f}s)")
    return flags
