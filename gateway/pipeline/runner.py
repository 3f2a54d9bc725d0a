"""The pipeline thread: ingest queue -> detector (batched over streams) -> store.

It owns the detector and its own database connection. Each iteration takes what the sources
queued (up to a bound), scores it, and writes readings, alerts (with their outbox rows),
events and dead letters in ONE transaction. It checkpoints detector state periodically and
at shutdown, publishes a status snapshot for the `status` command, and prunes old readings.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from gateway.config import Config
from gateway.detector import Detector
from gateway.errors import StorageError
from gateway.pipeline.clock import TimeGuard, WallClock
from gateway.pipeline.events import EventRate
from gateway.pipeline.ingest import IngestQueue
from gateway.pipeline.staleness import StalenessTracker
from gateway.pipeline.timing import PhaseTimes
from gateway.records import Batch, DeadLetter, Event, Reading
from gateway.store import Retention, Store, WalCheckpointer

log = logging.getLogger(__name__)

# At 10,000 streams a batch of 5,000 readings took up to 0.8 s to score (streams reaching
# reading 30 allocate their tails), 1,000 up to 0.2 s on a loaded box; with 500 the work
# of one iteration stays bounded, and a backlog is caught up in more, shorter iterations.
MAX_BATCH = 500
POLL_S = 0.2
BATCH_WINDOW_S = 0.01
STATUS_EVERY_S = 1.0
# Once an hour the frozen objects are thawed and one full collection runs, so cyclic garbage
# frozen alive since (a dropped client, an exception's frames) is reclaimed: one pause of a
# few hundred ms an hour at 10,000 warm streams, counted in the ``gc`` phase, instead of a
# process that grows for as long as it runs.
FULL_COLLECT_EVERY_S = 3600.0
PRUNE_EVERY_S = 300.0
# Scoring time per iteration aimed at, and the fewest readings a batch is cut to (_fit_batch).
SCORE_BUDGET_S = 0.06
MIN_BATCH = 100
# Rows per delete of the periodic prune (events, dead letters, outbox, states): short
# transactions between which the pipeline's own batches get the write lock.
PRUNE_CHUNK = 1000
# Encoding checkpoint rows per iteration at most (about 0.5 ms a warm stream and its
# asset): a round of 10,000 changed streams is spread over a few hundred iterations instead
# of stalling one for 6 s (#16 item 3).
CHECKPOINT_SLICE_S = 0.01
CHECKPOINT_CHUNK = 4  # streams encoded between two looks at the clock
# Alerts, events and dead letters held in memory while storage is degraded, at most.
MAX_CARRIED = 10_000
# Streams refused under limits.max_streams that get a dead letter of their own (the first
# reading of each); past this every refused reading is still counted, not dead-lettered.
MAX_REFUSED_NAMES = 10_000


class Pipeline:
    def __init__(
        self,
        config: Config,
        queue: IngestQueue,
        detector: Detector,
        on_commit: Callable[[], None] = lambda: None,
        extra_status: Callable[[], dict[str, Any]] = dict,
        clock: WallClock | None = None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.detector = detector
        detector.max_streams = config.limits.max_streams  # the limit of this config applies
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
        # Storage health: set while writes fail (disk full, I/O error); see _write.
        self.storage_degraded = threading.Event()
        self.degraded_since: float | None = None
        self.storage_error: str | None = None
        self.readings_lost = 0  # readings of batches that could not be written
        # The store's over_cap_bytes after the last write (see Store.over_cap_bytes).
        self.over_cap_bytes = 0
        self.records_lost = 0  # alerts/events/dead letters beyond MAX_CARRIED
        self._carried = Batch()
        self.pruned: Counter[str] = Counter()
        self.refused_readings = 0  # readings of streams past limits.max_streams
        self._refused_names: set[str] = set()
        self._limit_reported = False
        self.forgotten_streams = 0  # unseen for limits.stream_retention
        self._saved_until = -math.inf  # monotonic: streams seen since are checkpointed next
        # The checkpoint round in progress: streams still to write (next last), when the
        # round began (monotonic; the next round takes streams seen since), whether a slice
        # of it failed to be written.
        self._round: list[str] = []
        self._round_began = -math.inf
        self._round_failed = False
        self.checkpoint_rounds = 0
        self._expire_before = -math.inf  # readings before this are deleted as batches go
        self.checkpoint_rows = 0
        self.last_batch_at: float | None = None
        self.failure: BaseException | None = None
        self.staleness = StalenessTracker(config.ingest)
        self.clock = clock or WallClock()
        self.time_guard = TimeGuard(config.ingest.max_clock_skew, self.clock.now)
        self.clock_jumps = 0
        self.event_rate = EventRate()
        # Readings taken per iteration at most: one iteration's work (scoring, the write and
        # its commit) stays bounded, so no phase of it stalls the next readings for long.
        self.max_batch = MAX_BATCH
        self.times = PhaseTimes()
        self._full_collect_at = time.monotonic()  # see FULL_COLLECT_EVERY_S
        # Checkpoints the WAL on its own connection, so the pipeline's commits never do.
        self.wal = WalCheckpointer(config.database_path)

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

    @property
    def restored_streams(self) -> int:
        """Streams whose checkpointed state was loaded (at start, or at their first reading)."""
        return int(self.detector.restored)

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
                recover=cfg.storage.check_on_start,
            )
            # The configured assets now, every other stream when it first sends a reading:
            # start-up does not grow with the number of streams ever seen.
            model_hash = self.detector.model.sha256
            keys = [s for streams in cfg.assets.values() for s in streams]
            keys += [f"asset/{name}" for name in cfg.assets]
            self.detector.restore(store.load_states(model_hash, keys))
            self.detector.restore_lazily(lambda wanted: store.load_states(model_hash, wanted))
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self.failure = exc
            self._ready.set()
            return
        self._ready.set()
        self.times.watch_gc()
        self._full_collect_at = time.monotonic()
        self._freeze_survivors()
        self.wal.start()
        wal_handed_over = False
        try:
            store.hand_over_wal_checkpoints()
            wal_handed_over = True
        except StorageError as exc:
            log.error("WAL checkpoints stay in the pipeline's commits: %s", exc)
        last_checkpoint = last_status = last_prune = time.monotonic()
        try:
            while True:
                stopping = self._stop.is_set()
                if not stopping:
                    self.queue.wait(POLL_S)
                times = self.times
                began = time.perf_counter()
                readings, side = self.queue.get_batch(self.max_batch, 0.0)
                if (readings or side) and not stopping and len(readings) < self.max_batch:
                    # Linger a moment so a trickle of readings shares one tick and one
                    # transaction instead of paying for both per reading (not work: the
                    # iteration's time leaves it out).
                    lingered = time.perf_counter()
                    self._stop.wait(BATCH_WINDOW_S)
                    began += time.perf_counter() - lingered
                    more, more_side = self.queue.get_batch(self.max_batch - len(readings), 0.0)
                    readings += more
                    side += more_side
                mark = time.perf_counter()
                times.add("take", mark - began)
                now = time.monotonic()
                batch = self._score(readings, side)
                scored_at = mark
                mark = self._lap("score", mark)
                self._fit_batch(mark - scored_at, len(readings))
                if not self._round and now - last_checkpoint >= cfg.storage.checkpoint_every:
                    self._begin_round(now)
                    last_checkpoint = now
                round_done = self._checkpoint_slice(batch, stopping)
                mark = self._lap("checkpoint", mark)
                if round_done or now - last_status >= STATUS_EVERY_S:
                    batch.events.extend(self._new_normals(store))
                    batch.status = self.status()
                    if stopping:  # so `status` can tell a clean stop from a crash
                        batch.status["stopped_at"] = time.time()
                    last_status = now
                    self._freeze_survivors()
                    if wal_handed_over and not self.wal.is_alive():
                        log.error("the WAL checkpoint thread is gone: commits checkpoint again")
                        wal_handed_over = not self._take_back_wal(store)
                    mark = self._lap("status", mark)
                if self._has_content(batch):
                    written = self._write(store, batch)
                    mark = self._lap("write", mark)
                    times.add("commit", store.last_commit_s)
                    if written:
                        self.wal.committed()
                    times.add("trim", store.last_trim_s)
                    self._note_over_cap(store.over_cap_bytes)
                    if batch.states and not written:
                        self._round_failed = True
                    if round_done:
                        self._end_round()
                if now - last_prune >= PRUNE_EVERY_S:
                    self._prune(store)
                    last_prune = now
                    mark = self._lap("prune", mark)
                if readings or side or self._has_content(batch):
                    times.iteration(mark - began)
                if stopping and not readings and not side:
                    break
        finally:
            self.times.unwatch_gc()
            self.wal.stop()
            store.close()

    @staticmethod
    def _take_back_wal(store: Store) -> bool:
        try:
            store.take_back_wal_checkpoints()
        except StorageError as exc:
            log.error("could not turn WAL checkpoints on again: %s", exc)
            return False
        return True

    def _fit_batch(self, score_s: float, taken: int) -> None:
        """Halve the readings taken per iteration when scoring took more than
        SCORE_BUDGET_S, grow them back by a quarter while full batches score fast.

        What a reading costs varies: streams that started together reach their cycle
        search or the end of warm-up together (10,000 streams at one reading a second: a
        batch of 500 took 0.36 s to score). A smaller batch bounds the next iteration; the
        backlog waits in the ingest queue and is caught up with more, shorter iterations."""
        if score_s > SCORE_BUDGET_S and self.max_batch > MIN_BATCH:
            self.max_batch = max(MIN_BATCH, self.max_batch // 2)
        elif score_s < SCORE_BUDGET_S / 2 and taken >= self.max_batch < MAX_BATCH:
            self.max_batch = min(MAX_BATCH, self.max_batch + self.max_batch // 4 + 1)

    # --- incremental checkpoints ----------------------------------------------------------

    def _begin_round(self, now: float) -> None:
        """Start a checkpoint round: the streams with readings since the last complete one."""
        self._round = self.detector.changed_since(self._saved_until)
        self._round.reverse()  # taken from the end, in the order they were seen
        self._round_began = now
        self._round_failed = False
        if not self._round:  # nothing changed: a round done at once
            self._saved_until = now
            self.checkpoint_rounds += 1

    def _checkpoint_slice(self, batch: Batch, stopping: bool) -> bool:
        """Put the next slice of the round's checkpoint rows into ``batch`` (at most
        ``CHECKPOINT_SLICE_S`` of encoding; when stopping, every stream changed since the
        last complete round). True when this batch completes the round."""
        detector = self.detector
        if stopping:
            self._round_began = time.monotonic()
            self._round_failed = False
            self._round = []
            batch.states = detector.states(detector.changed_since(self._saved_until))
        elif not self._round:
            return False
        else:
            deadline = time.perf_counter() + CHECKPOINT_SLICE_S
            states: dict[str, bytes] = {}
            while self._round and time.perf_counter() < deadline:
                chunk = [self._round.pop() for _ in range(min(CHECKPOINT_CHUNK, len(self._round)))]
                states.update(detector.states(chunk))
            batch.states = states
        batch.state_model_hash = detector.model.sha256
        self.checkpoint_rows += len(batch.states or ())
        return not self._round

    def _end_round(self) -> None:
        if self._round_failed:  # a slice was not written: its streams go into the next round
            return
        self._saved_until = self._round_began
        self.checkpoint_rounds += 1

    def _lap(self, phase: str, since: float) -> float:
        mark = time.perf_counter()
        self.times.add(phase, mark - since)
        return mark

    def _freeze_survivors(self) -> None:
        """Collect the young generations, then move every object still alive into the
        collector's permanent generation (at start and with every status snapshot, once a
        second).

        With 10,000 warm streams the detector holds millions of tracked objects; a full
        collection walks all of them (0.3 s measured, on the pipeline thread, at a moment
        chosen by allocation counts). Freezing after each checkpoint round (once a minute)
        still left 0.1 s pauses: judges replace their lists as they learn, and a minute of
        those survives into the oldest generation. Frozen once a second, the oldest
        generation stays small; the young ones are collected first (about a millisecond),
        so cyclic garbage is not frozen. An object frozen alive that later becomes garbage
        in a reference cycle waits for the hourly full collection (``FULL_COLLECT_EVERY_S``);
        everything else is still freed by reference counting."""
        now = time.monotonic()
        if now - self._full_collect_at >= FULL_COLLECT_EVERY_S:
            self._full_collect_at = now
            gc.unfreeze()
            gc.collect()
        else:
            gc.collect(1)
        gc.freeze()

    def _score(self, readings: list[Any], side: list[DeadLetter | Event]) -> Batch:
        batch = Batch()
        if readings:
            readings, refused = self.detector.admit(readings)
            if refused:
                self._refuse(refused, batch)
            readings, quarantined = self.time_guard.check(readings)
            side = side + quarantined
        for record in side:
            if isinstance(record, DeadLetter):
                batch.dead_letters.append(record)
                self.dead_letters[f"{record.source}/{record.reason}"] += 1
            else:
                batch.events.append(record)
        if self.detector.unreadable_keys:
            self._quarantine_states(batch)
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
        batch.events.extend(self.staleness.observe(readings))
        batch.events.extend(self.staleness.check())
        batch.events = self.event_rate.sort(batch.events)
        for event in batch.events:
            self.events[event.kind] += 1
            log.info("event %s %s %s", event.kind, event.subject, event.detail)
        return batch

    def _quarantine_states(self, batch: Batch) -> None:
        """Checkpoint rows the detector could not decode: one dead letter each (the row
        stays in ``stream_state`` until the stream's next checkpoint replaces it)."""
        for key, why in self.detector.unreadable_keys:
            letter = DeadLetter.of("checkpoint", "bad_checkpoint", key, why)
            batch.dead_letters.append(letter)
            self.dead_letters["checkpoint/bad_checkpoint"] += 1
            log.error("the checkpoint of %s could not be read (%s); it starts fresh", key, why)
        self.detector.unreadable_keys.clear()

    def _refuse(self, refused: list[Reading], batch: Batch) -> None:
        """Readings of streams past ``limits.max_streams``: counted, a dead letter for the
        first reading of each such stream, one ``stream_limit`` event until places free up."""
        limit = self.config.limits.max_streams
        self.refused_readings += len(refused)
        names = self._refused_names
        for r in refused:
            if r.stream in names or len(names) >= MAX_REFUSED_NAMES:
                continue
            names.add(r.stream)
            letter = DeadLetter.of(
                r.source,
                "max_streams",
                f"{r.stream} {r.value!r}",
                f"a new stream past limits.max_streams ({limit}); its readings are refused "
                "until a stream is forgotten (limits.stream_retention)",
            )
            batch.dead_letters.append(letter)
            self.dead_letters[f"{r.source}/max_streams"] += 1
        if not self._limit_reported:
            self._limit_reported = True
            log.error(
                "limits.max_streams (%d) reached: readings of new streams are refused, e.g. %s",
                limit,
                refused[0].stream,
            )
            detail = {"max_streams": limit, "first_refused": refused[0].stream}
            batch.events.append(Event("stream_limit", "detector", detail=detail))

    def _new_normals(self, store: Store) -> list[Event]:
        """Apply `alerts ack --new-normal` from the CLI: the detector adapts to the level."""
        try:
            pending = store.pending_new_normals()
            events = []
            for alert_id, stream in pending:
                applied = self.detector.accept_new_normal(stream, alert_id)
                detail = {"alert_id": alert_id, "by": "operator", "applied": applied}
                events.append(Event("new_normal", stream, time.time(), detail))
                self.events["new_normal"] += 1
                log.info(
                    "alert %s on %s acknowledged as a new normal (applied: %s)",
                    alert_id,
                    stream,
                    applied,
                )
            store.mark_new_normals_applied([alert_id for alert_id, _ in pending])
        except StorageError as exc:
            log.error("could not read new-normal acknowledgements: %s", exc)
            return []
        return events

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

    def _write(self, store: Store, batch: Batch) -> bool:
        """Write one batch; on a storage error (disk full, I/O error) keep running degraded.

        Degraded: the batch's alerts, events and dead letters are carried into the next write
        (bounded), its readings are counted as lost; a ``storage_degraded`` event is recorded
        as soon as anything can be written, and ``storage_recovered`` when writes work again.
        """
        carried = self._carried
        batch.alerts[:0] = carried.alerts
        batch.events[:0] = carried.events
        batch.dead_letters[:0] = carried.dead_letters
        self._carried = Batch()
        try:
            store.write_batch(batch, self._retention() if batch.readings else None)
            if batch.readings and not store.expiry_pending:
                self._expire_before = -math.inf
        except StorageError as exc:
            self.write_errors += 1
            self.readings_lost += len(batch.readings)
            self._carry(batch)
            if not self.storage_degraded.is_set():
                self._enter_degraded(store, str(exc))
            return False
        if self.storage_degraded.is_set():
            self._leave_degraded(store)
        if batch.alerts or batch.events:
            self._on_commit()
        return True

    def _carry(self, batch: Batch) -> None:
        """Keep what must not be lost for the next write, within MAX_CARRIED records."""
        room = MAX_CARRIED
        self._carried.alerts = batch.alerts[:room]
        room -= len(self._carried.alerts)
        self._carried.events = batch.events[-room:] if room > 0 else []
        room -= len(self._carried.events)
        self._carried.dead_letters = batch.dead_letters[-room:] if room > 0 else []
        lost = (
            len(batch.alerts)
            + len(batch.events)
            + len(batch.dead_letters)
            - len(self._carried.alerts)
            - len(self._carried.events)
            - len(self._carried.dead_letters)
        )
        if lost:
            self.records_lost += lost
            log.error("storage degraded: %d alerts/events/dead letters could not be kept", lost)

    def _enter_degraded(self, store: Store, error: str) -> None:
        self.storage_degraded.set()
        self.degraded_since = time.time()
        self.storage_error = error
        log.error("storage degraded, still running: %s", error)
        event = Event("storage_degraded", "database", detail={"error": error[:500]})
        try:
            # A tiny write often still fits (WAL space is reused after a checkpoint): it
            # makes the degraded state visible in `status` and upstream right away.
            store.write_batch(Batch(events=[event], status=self.status()))
        except StorageError:
            self._carried.events.insert(0, event)
            return
        self._on_commit()

    def _leave_degraded(self, store: Store) -> None:
        since = self.degraded_since or time.time()
        self.storage_degraded.clear()
        self.degraded_since = None
        log.warning(
            "storage recovered after %.0f s; %d readings were lost meanwhile",
            time.time() - since,
            self.readings_lost,
        )
        event = Event(
            "storage_recovered",
            "database",
            detail={
                "degraded_since": since,
                "readings_lost": self.readings_lost,
                "over_cap_bytes": self.over_cap_bytes,
                "error": self.storage_error,
            },
        )
        try:
            store.write_batch(Batch(events=[event], status=self.status()))
        except StorageError:
            self._carried.events.append(event)
            return
        self._on_commit()

    def _retention(self) -> Retention:
        """What the next batch's write may delete of the oldest readings: any over the size
        cap; by age, those before the cutoff of the last periodic prune (``_prune`` sets it
        when the wall clock is trusted), until a write finds none left."""
        return Retention(self.config.storage.max_db_size, self._expire_before)

    def _prune(self, store: Store) -> None:
        cfg = self.config
        storage = cfg.storage
        forgotten = self.detector.forget_idle(cfg.limits.stream_retention)
        if forgotten:
            self.forgotten_streams += len(forgotten)
            self.staleness.forget(forgotten)
            self.time_guard.forget(forgotten)
            self._refused_names.clear()
            self._limit_reported = False
            log.info("forgot %d streams unseen for limits.stream_retention", len(forgotten))
        jump = self.clock.jumped(hold_s=storage.readings_retention)
        if jump is not None:
            self.clock_jumps += 1
            log.warning(
                "the wall clock jumped by %+.0f s: pruning by age waits %.0f s before "
                "trusting it again",
                jump,
                storage.readings_retention,
            )
            detail = {"by_s": round(jump, 3), "age_pruning_held_s": storage.readings_retention}
            event = Event("clock_jump", "gateway", ts=self.clock.now(), detail=detail)
            self._carried.events.append(event)
        by_age = self.clock.trusted
        if by_age:  # readings: by the writes, a batch at a time, from the next one on
            self._expire_before = self.clock.now() - storage.readings_retention
        try:
            result = store.prune(
                storage.readings_retention if by_age else math.inf,
                storage.max_db_size,
                state_retention_s=cfg.limits.stream_retention if by_age else None,
                max_states=cfg.max_checkpoint_rows,
                now=self.clock.now(),
                readings=False,  # trimmed by every write (``_retention``), a batch at a time
                chunk=PRUNE_CHUNK,
            )
        except StorageError as exc:
            log.error("pruning failed: %s", exc)
            return
        result["readings_over_size"] = store.trimmed_over_size
        result["readings_expired"] = store.trimmed_expired
        store.trimmed_over_size = store.trimmed_expired = 0
        self.pruned.update({k: v for k, v in result.items() if v})
        if any(result.values()):
            log.info("pruned: %s", result)

    def _note_over_cap(self, over: int) -> None:
        """Log once when the database stays over its cap with nothing left to delete, and
        once when it is back under."""
        if over and not self.over_cap_bytes:
            log.warning(
                "the database is %.1f MB over max_db_size and holds no readings left to "
                "delete: stream state, alerts and the outbox fill it; raise max_db_size",
                over / 1e6,
            )
        elif self.over_cap_bytes and not over:
            log.info("the database is back within max_db_size")
        self.over_cap_bytes = over

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
            "events_not_forwarded": self.event_rate.held_back,
            "ingest": self.queue.stats(),
            "stale_streams": self.staleness.stale_streams(),
            "queue_depth": len(self.queue),
            "write_errors": self.write_errors,
            "storage": {
                "degraded": self.storage_degraded.is_set(),
                "degraded_since": self.degraded_since,
                "last_error": self.storage_error,
                "readings_lost": self.readings_lost,
                "over_cap_bytes": self.over_cap_bytes,
                "records_lost": self.records_lost,
                "pruned": dict(self.pruned),
            },
            "clock": {
                "jumps": self.clock_jumps,
                "pruning_by_age": self.clock.trusted,
                "quarantined_readings": self.time_guard.quarantined,
            },
            "pipeline": self.times.status(),
            "wal_checkpoints": self.wal.status(),
            "checkpoint": {
                "rounds": self.checkpoint_rounds,
                "rows_written": self.checkpoint_rows,
                "round_pending": len(self._round),
                "unreadable_rows": self.detector.unreadable,
            },
            "streams": len(self.detector.streams),
            "limits": {
                "max_streams": self.config.limits.max_streams,
                "streams_tracked": self.detector.tracked,
                "refused_readings": self.refused_readings,
                "refused_streams": len(self._refused_names),
                "forgotten_streams": self.forgotten_streams,
                "restored_streams": self.detector.restored,
            },
            "model": self.detector.model.model_id,
            "runtime": self.detector.model.runtime,
            "detector_core": getattr(self.detector, "core", None),
            **self._extra_status(),
        }
