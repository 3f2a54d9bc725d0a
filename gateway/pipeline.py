"""The pipeline thread: ingest queue -> detector (batched over streams) -> store.

It owns the detector and its own database connection. Each iteration takes what the sources
queued (up to a bound), scores it, and writes readings, alerts (with their outbox rows),
events and dead letters in ONE transaction. It checkpoints detector state periodically and
at shutdown, publishes a status snapshot for the `status` command, and prunes old readings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from gateway.config import Config
from gateway.detector import Detector
from gateway.errors import StorageError
from gateway.ingest import IngestQueue
from gateway.records import Batch, DeadLetter, Event
from gateway.store import Store

log = logging.getLogger(__name__)

MAX_BATCH = 5000
POLL_S = 0.2
STATUS_EVERY_S = 2.0
PRUNE_EVERY_S = 300.0


class Pipeline:
    def __init__(
        self,
        config: Config,
        queue: IngestQueue,
        detector: Detector,
        on_commit: Callable[[], None] = lambda: None,
        extra_status: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.config = config
        self.queue = queue
        self.detector = detector
        self._on_commit = on_commit
        self._extra_status = extra_status
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self.started_at = time.time()
        self.readings = 0
        self.alerts: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.write_errors = 0
        self.restored_streams = 0
        self.last_batch_at: float | None = None
        self.failure: BaseException | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise StorageError("the pipeline did not open the database in time")
        if self.failure is not None:
            raise self.failure

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.queue.wake()
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # --- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        cfg = self.config
        try:
            store = Store.open(
                cfg.database_path,
                cfg.storage.durability,
                outbox=cfg.upstream is not None,
                gateway_id=cfg.gateway.id,
            )
            self.restored_streams = self.detector.restore(
                store.load_states(self.detector.model.sha256)
            )
            if self.restored_streams:
                log.info("restored detector state of %d streams", self.restored_streams)
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self.failure = exc
            self._ready.set()
            return
        self._ready.set()
        last_checkpoint = last_status = last_prune = time.monotonic()
        try:
            while True:
                stopping = self._stop.is_set()
                readings, side = self.queue.get_batch(MAX_BATCH, 0.0 if stopping else POLL_S)
                now = time.monotonic()
                batch = self._score(readings, side)
                checkpoint = stopping or now - last_checkpoint >= cfg.storage.checkpoint_every
                if checkpoint:
                    batch.states = self.detector.snapshot()
                    batch.state_model_hash = self.detector.model.sha256
                    last_checkpoint = now
                if checkpoint or now - last_status >= STATUS_EVERY_S:
                    batch.status = self.status()
                    last_status = now
                if self._has_content(batch):
                    self._write(store, batch)
                if now - last_prune >= PRUNE_EVERY_S:
                    self._prune(store)
                    last_prune = now
                if stopping and not readings and not side:
                    break
        finally:
            store.close()

    def _score(self, readings: list[Any], side: list[DeadLetter | Event]) -> Batch:
        batch = Batch()
        for record in side:
            if isinstance(record, DeadLetter):
                batch.dead_letters.append(record)
                self.dead_letters[f"{record.source}/{record.reason}"] += 1
            else:
                batch.events.append(record)
        if readings:
            out = self.detector.process(readings)
            batch.readings = out.scored
            batch.alerts = out.alerts
            batch.events.extend(out.events)
            self.readings += len(out.scored)
            for change in out.alerts:
                self.alerts[change.state] += 1
                log.warning(
                    "alert %s %s: score %.4f, observed %.6g, expected %.6g",
                    change.state,
                    change.stream,
                    change.score,
                    change.observed,
                    change.expected,
                )
            self.last_batch_at = time.time()
        for event in batch.events:
            self.events[event.kind] += 1
            log.info("event %s %s %s", event.kind, event.subject, event.detail)
        return batch

    @staticmethod
    def _has_content(batch: Batch) -> bool:
        return bool(
            batch.readings
            or batch.alerts
            or batch.events
            or batch.dead_letters
            or batch.states
            or batch.status
        )

    def _write(self, store: Store, batch: Batch) -> None:
        try:
            store.write_batch(batch)
        except StorageError as exc:
            # Keep running: the detector state is in memory, the next batch may succeed.
            self.write_errors += 1
            log.error("could not write a batch of %d readings: %s", len(batch.readings), exc)
            return
        if batch.alerts or batch.events:
            self._on_commit()

    def _prune(self, store: Store) -> None:
        storage = self.config.storage
        try:
            result = store.prune(storage.readings_retention, storage.max_db_size)
        except StorageError as exc:
            log.error("pruning failed: %s", exc)
            return
        if any(result.values()):
            log.info("pruned: %s", result)

    def status(self) -> dict[str, Any]:
        return {
            "gateway": self.config.gateway.id,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "readings": self.readings,
            "alerts": dict(self.alerts),
            "events": dict(self.events),
            "dead_letters": dict(self.dead_letters),
            "dropped_readings": self.queue.dropped_readings,
            "dropped_events": self.queue.dropped_side,
            "queue_depth": len(self.queue),
            "write_errors": self.write_errors,
            "streams": len(self.detector.streams),
            "model": self.detector.model.model_id,
            "runtime": self.detector.model.runtime,
            **self._extra_status(),
        }
