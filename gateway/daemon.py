"""`liquid-gateway run`: wire sources, pipeline and forwarder together and supervise them.

The main thread only handles signals, the systemd watchdog and reloads; the work happens in
the source threads, the pipeline thread and the forwarder thread (see DESIGN.md).
SIGTERM/SIGINT: stop intake, drain the queue, checkpoint, flush the forwarder, exit 0.
SIGHUP: re-read the config; if it is invalid, log every error and keep running as before;
otherwise restart only the sources and the upstream link whose config changed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from gateway.config import Config, load_config
from gateway.detector import Detector
from gateway.errors import ConfigError
from gateway.forwarder import Forwarder
from gateway.ingest import IngestQueue
from gateway.model.runtime import load_model
from gateway.pipeline import Pipeline
from gateway.sdnotify import Notifier
from gateway.sources import build_source
from gateway.sources.base import Source

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.queue = IngestQueue()
        self.model = load_model(config.model.path, config.model.runtime)
        self.detector = Detector(config.detector, self.model, config.assets)
        self.forwarder: Forwarder | None = None
        self.sources: dict[str, Source] = {}
        self.pipeline = Pipeline(
            config, self.queue, self.detector, self._notify_forwarder, self._component_status
        )
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.notifier = Notifier()

    # --- components --------------------------------------------------------------------

    def _notify_forwarder(self) -> None:
        if self.forwarder is not None:
            self.forwarder.notify()

    def _component_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "sources": {name: source.stats() for name, source in self.sources.items()},
            "upstream": self.forwarder.stats() if self.forwarder else None,
            "accepted": dict(self.queue.accepted),
        }
        return status

    def _start_forwarder(self) -> None:
        if self.config.upstream is not None:
            self.forwarder = Forwarder(
                self.config.upstream,
                self.config.gateway.id,
                self.config.database_path,
                self.config.storage.durability,
            )
            self.forwarder.start()

    def _start_source(self, section: Any) -> None:
        source = build_source(section, self.queue)
        source.start()
        self.sources[section.name] = source
        log.info("source %s (%s) started", section.name, section.type)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.pipeline.start()
        self._start_forwarder()
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

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def request_reload(self, *_: Any) -> None:
        self._reload.set()

    def run(self, duration: float | None = None) -> int:
        """Run until a stop signal (or ``duration`` seconds). Returns the exit code."""
        self.start()
        self.notifier.ready(f"running, {len(self.sources)} sources")
        deadline = None if duration is None else time.monotonic() + duration
        tick = min(1.0, self.notifier.watchdog_interval or 1.0)
        code = 0
        while not self._stop.wait(tick):
            self.notifier.watchdog()
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if not self.pipeline.is_alive():
                log.critical("the pipeline thread died; stopping")
                code = 1
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        self.shutdown()
        return code

    def shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping: closing sources, draining %d queued records", len(self.queue))
        for source in self.sources.values():
            source.stop()
        for source in self.sources.values():
            source.join(5.0)
        self.pipeline.stop()
        if self.forwarder is not None:
            self.forwarder.stop(timeout=5.0)
        log.info("stopped")

    def reload(self) -> None:
        if self.config_path is None:
            log.warning("reload requested, but the config was not read from a file")
            return
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("reload rejected: %s", issue)
            self.notifier.ready("running (reload rejected)")
            return
        old = self.config
        if new.gateway != old.gateway or new.model != old.model or new.assets != old.assets:
            log.warning("gateway, model and assets changes take effect at the next restart")
        old_sources = {s.name: s for s in old.sources}
        new_sources = {s.name: s for s in new.sources}
        for name, section in old_sources.items():
            if new_sources.get(name) != section:
                source = self.sources.pop(name)
                source.stop()
                source.join(5.0)
                log.info("source %s stopped (removed or changed)", name)
        for name, section in new_sources.items():
            if old_sources.get(name) != section:
                self._start_source(section)
        if new.upstream != old.upstream and self.forwarder is not None:
            self.forwarder.stop(timeout=5.0)
            self.forwarder = None
        self.config = new
        if new.upstream != old.upstream:
            self._start_forwarder()
        if new.detector != old.detector:
            log.warning("detector changes take effect at the next restart")
        log.info("config reloaded from %s", self.config_path)
        self.notifier.ready(f"running, {len(self.sources)} sources")


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
