"""The output seam: what an output is, and the one delivery loop that feeds each output from
the outbox, losing nothing while it is down.

An ``Output`` turns one outbox row into its own wire format and hands it to its server
(``send``); it reports what became of it, at once (``Ack``, ``Refusal``) or later, from
``poll`` (an asynchronous protocol such as MQTT, whose acknowledgements arrive on another
thread). It knows nothing of the outbox, retries or time limits.

``DeliveryLoop`` is one thread per output and owns all of that: it reads the rows this output
has not delivered yet (``deliveries`` table, so a slow or down output never holds back
another) in ``seq`` order, keeps at most ``Output.window()`` of them unacknowledged, records a
row delivered only on an ``Ack``, parks a refused row with a jittered, growing back-off, and
quarantines a row the output says can never be sent (kept, counted, no longer sent, so it
cannot hold back the rows behind it). One alert's changes go in order: while its raise is
in flight, its clear and the rows behind it wait for the acknowledgement (so the outbox
order holds too); while the raise is parked, its clear waits and the others go on. Sent
first, the clear would resolve nothing and the late raise open an alert nothing clears. A row unacknowledged for ``Output.ack_timeout`` is
forgotten and sent again; when the link drops everything in flight is. At-least-once per
output, with duplicates only within the window: receivers de-duplicate on the payload ``id``.
It also reconnects, with the same kind of back-off, when the output says it is ``Down``.

An output whose server forgets an alert nobody re-sends (Alertmanager resolves it at its
``endsAt``) sets ``resend_interval``: the loop then hands it the alerts still active every
that often (``resend``). They come from the store's ``alerts`` table, read by the loop on its
own connection: the one record of what is open, which survives a restart (an output's memory
would not) and a pruned outbox (a delivered raise's row is gone after retention), while the
output itself still never reads the store. A re-send is not an outbox row: nothing is
marked delivered or parked by it, one that fails waits for the next interval, and the rows'
at-least-once delivery goes on as before.

The loop is the only owner of its ``Store`` connection; an output's callbacks on other
threads only ``wake`` it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.errors import StorageError
from gateway.records import AlertChange
from gateway.store import DEFAULT_OUTPUT, Durability, OutboxRow, Store

log = logging.getLogger(__name__)

# How many undelivered rows one round looks at to fill the window; rows in back-off after a
# refusal are skipped, so a few poison rows never block the ones behind them.
_SCAN_LIMIT = 2000
# Active alerts one re-send hands an output at most (oldest first; more are logged).
RESEND_LIMIT = 10_000


def backoff(attempt: int, low: float, high: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1, 2, ...): ``low * 2**(attempt-1)`` capped at
    ``high``, then jittered to 50-100 % of that (never below ``low``)."""
    capped = min(high, low * 2.0 ** max(0, attempt - 1))
    return max(low, capped * (rng or random).uniform(0.5, 1.0))


@dataclass(frozen=True, slots=True)
class Ack:
    """The server took row ``seq``."""

    seq: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """The server (or the output itself) refused row ``seq``: retried after a back-off, or,
    when ``final``, quarantined for this output."""

    seq: int
    reason: str
    final: bool = False


@dataclass(frozen=True, slots=True)
class Up:
    """The output is connected (again)."""


@dataclass(frozen=True, slots=True)
class Down:
    """The output cannot reach its server. ``lost``: a working link dropped (reconnect soon);
    otherwise an attempt failed (``message`` says why; the next one backs off)."""

    message: str
    lost: bool = False


Outcome = Ack | Refusal | Up | Down
SENT: Literal["sent"] = "sent"  # handed over; an Ack or Refusal comes from poll()
BUSY: Literal["busy"] = "busy"  # cannot take more right now; try again next round
SendResult = Ack | Refusal | Down | Literal["sent", "busy"]


@dataclass(frozen=True, slots=True)
class Timing:
    """Back-off and window settings every output type's section carries."""

    max_inflight: int = 20
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 60.0
    retry_min_delay: float = 2.0
    retry_max_delay: float = 300.0
    drain_timeout: float = 5.0


class Output(ABC):
    """One place alerts and events go. Methods are called on the delivery loop's thread only
    (``stats`` excepted); ``wake`` and ``report`` are set by the loop before ``prepare``."""

    name: str = DEFAULT_OUTPUT
    timing: Timing = Timing()
    ack_timeout: float = 30.0  # unacknowledged this long: forgotten and sent again
    # Hand ``resend`` the alerts still active this often (seconds); None: never.
    resend_interval: float | None = None

    def __init__(self) -> None:
        self.wake: Callable[[], None] = lambda: None
        self.report: Callable[..., None] = lambda message, **_: log.error("%s", message)

    def prepare(self) -> bool:
        """Build what ``connect`` needs; False (error reported) when it must not run at all."""
        return True

    @property
    @abstractmethod
    def linked(self) -> bool:
        """A link is open or being opened: do not ``connect`` again."""

    @property
    @abstractmethod
    def ready(self) -> bool:
        """Rows may be sent now."""

    @abstractmethod
    def connect(self) -> Down | None:
        """One connection attempt; ``Down`` when it failed at once."""

    @abstractmethod
    def send(self, row: OutboxRow) -> SendResult:
        """Render ``row`` in this output's wire format and hand it over."""

    def window(self) -> int:
        """How many rows may be unacknowledged now."""
        return self.timing.max_inflight

    def poll(self) -> list[Outcome]:
        """What happened since the last call (an asynchronous output's acknowledgements)."""
        return []

    def resend(self, alerts: Sequence[AlertChange]) -> Down | None:
        """Tell the server again that these alerts are still active (each as the change
        that raised it); ``Down`` when it cannot be reached. Only with ``resend_interval``."""
        return None

    def forget(self, seqs: Sequence[int]) -> None:  # noqa: B027 - optional for synchronous ones
        """These rows will be sent again: drop what is kept about their earlier sending."""

    @abstractmethod
    def close(self, deadline: float | None) -> None:
        """Say goodbye by monotonic ``deadline`` (None: at once) and release everything."""

    def stats(self) -> dict[str, Any]:
        """Output-specific counters, read from other threads."""
        return {}


class DeliveryLoop(threading.Thread):
    """outbox -> one output. ``start()``, ``notify()`` on new rows, ``stats()``, ``stop()``."""

    def __init__(
        self,
        output: Output,
        database: Path,
        durability: Durability = "normal",
        *,
        outputs: Sequence[str] | None = None,
        poll_interval: float = 1.0,
        reconnect_max_delay: float | None = None,
    ) -> None:
        super().__init__(name=f"output-{output.name}", daemon=True)
        self.output = output
        self.name_ = output.name
        self._database = Path(database)
        self._durability: Durability = durability
        self._outputs = tuple(outputs or (output.name,))
        self._poll_interval = poll_interval
        timing = output.timing
        self._reconnect_max_delay = reconnect_max_delay or timing.reconnect_max_delay
        self._reconnect_min_delay = min(timing.reconnect_min_delay, self._reconnect_max_delay)
        self._wake = threading.Event()
        self._stop_deadline: float | None = None
        output.wake = self._wake.set
        output.report = self._error
        # Owned by this thread.
        self._store: Store | None = None
        self._connect_failures = 0
        self._next_connect = 0.0  # monotonic time of the next connection attempt
        self._inflight: dict[int, float] = {}  # seq -> monotonic time sent
        self._retry_at: dict[int, tuple[int, float]] = {}  # seq -> (refusals, monotonic time)
        self._backlog_checked = 0.0
        self._next_resend = 0.0  # monotonic time the active alerts are re-sent next
        self._last_logged_error = ""
        # Rows acknowledged whose delivery could not be recorded (a full disk): never sent
        # again by this process, recorded again after a growing delay.
        self._unrecorded: set[int] = set()
        self._record_failures = 0
        self._record_retry_at = 0.0
        # Read by stats() from other threads.
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "output": output.name,
            "connected": False,
            "delivered": 0,
            "failures": 0,
            "parked": 0,
            "quarantined": 0,
            "connects": 0,
            "backlog": None,
            "oldest_pending_ts": None,
            "inflight": 0,
            "unrecorded": 0,  # acknowledged, but the store could not record it yet
            "last_error": None,
        }

    # --- called from other threads ----------------------------------------------------------

    def notify(self) -> None:
        """New outbox rows were committed: send them now rather than at the next poll."""
        self._wake.set()

    def request_stop(self, timeout: float = 5.0) -> None:
        """Begin stopping (``stop`` waits for it): several outputs can drain at once."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + timeout
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Let in-flight rows finish, let the output say goodbye — within ``timeout``."""
        self.request_stop(timeout)
        assert self._stop_deadline is not None
        if self.is_alive():
            self.join(max(0.0, self._stop_deadline - time.monotonic()))
            if self.is_alive():
                log.warning("output %s did not stop within %.1f s", self.name_, timeout)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            loop = dict(self._stats)
        return {**loop, **self.output.stats()}

    # --- the thread ---------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._store = self._open_store()
            if self._store is None:
                return
            if not self.output.prepare():
                self._wait_for_stop()
                return
            self._deliver()
            self._shutdown()
        except Exception as exc:  # the top of the thread: record it rather than die silently
            self._error(f"output {self.name_} stopped on an unexpected error: {exc}", exc_info=True)
        finally:
            try:
                self.output.close(None)
            except Exception as exc:  # the top of the thread: log once, carry on
                log.warning("closing output %s: %s", self.name_, exc)
            if self._store is not None:
                self._store.close()
            self._set_stats(connected=False, inflight=0)

    def _open_store(self) -> Store | None:
        while self._stop_deadline is None:
            try:
                store = Store.open(self._database, self._durability, outbox=False)
            except StorageError as exc:
                self._error(f"cannot open the outbox: {exc}")
            else:
                store.outputs = self._outputs
                try:  # rows only an output taken out of the configuration still owed
                    store.settle_outbox()
                except StorageError as exc:
                    self._error(f"cannot settle the outbox: {exc}")
                return store
            self._wake.wait(self._poll_interval)
            self._wake.clear()
        return None

    def _deliver(self) -> None:
        output = self.output
        while self._stop_deadline is None:
            try:
                if not output.linked and time.monotonic() >= self._next_connect:
                    down = output.connect()
                    if down is not None:
                        self._handle([down])
            except Exception as exc:  # the top of the thread's loop: log once, count, carry on
                self._connect_failed(f"connecting failed: {exc}")
            wait = self._poll_interval
            if not output.linked:
                wait = min(wait, max(0.0, self._next_connect - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()
            try:
                self._handle(output.poll())
                if self._stop_deadline is not None:
                    return
                self._expire_stale()
                if output.ready:
                    self._send_pending()
                if output.ready:
                    self._resend_active()
                self._refresh_backlog()
            except Exception as exc:  # the top of the thread's loop: log once, count, carry on
                self._error(f"delivery to {self.name_} failed: {exc}", exc_info=True)

    def _shutdown(self) -> None:
        deadline = self._stop_deadline or time.monotonic()
        total = max(0.0, deadline - time.monotonic())
        # The pipeline's last batch (alerts raised in the final moments before a stop) is
        # committed just before stop() is called: send one window of it, rather than leave it
        # for the next start. Keep a share of the bound for the output's goodbye.
        drain_until = deadline - 0.3 * total
        self._handle(self.output.poll())
        if self.output.ready:
            self._send_pending()
        while self._inflight and self.output.ready and time.monotonic() < drain_until:
            self._wake.wait(max(0.0, drain_until - time.monotonic()))
            self._wake.clear()
            self._handle(self.output.poll())
        if self._inflight:
            log.info(
                "%s: stopping with %d rows unacknowledged; they stay in the outbox",
                self.name_,
                len(self._inflight),
            )
        self._inflight.clear()
        self.output.close(deadline)

    def _wait_for_stop(self) -> None:
        while self._stop_deadline is None:
            self._wake.wait(self._poll_interval)
            self._wake.clear()

    # --- work -------------------------------------------------------------------------------

    def _handle(self, outcomes: Sequence[Outcome]) -> None:
        delivered: list[int] = []
        for outcome in outcomes:
            if isinstance(outcome, Ack):
                self._inflight.pop(outcome.seq, None)
                delivered.append(outcome.seq)
            elif isinstance(outcome, Refusal):
                self._inflight.pop(outcome.seq, None)
                if outcome.final:
                    self._quarantine(outcome.seq, outcome.reason)
                else:
                    self._fail(outcome.seq, outcome.reason)
            elif isinstance(outcome, Up):
                self._connect_failures = 0
                self._next_resend = 0.0  # back after an outage: refresh what is open now
                self._last_logged_error = ""
                self._set_stats(last_error=None, connects=self._stats["connects"] + 1)
                self._inflight.clear()
            elif outcome.lost:
                self._inflight.clear()
                self._next_connect = time.monotonic() + backoff(
                    1, self._reconnect_min_delay, self._reconnect_max_delay
                )
            else:
                self._inflight.clear()
                if self._next_connect <= time.monotonic():  # not already scheduled
                    self._connect_failed(outcome.message)
        self._record_delivered(delivered)
        with self._lock:
            self._stats["delivered"] += len(delivered)
            self._stats["connected"] = self.output.ready
            self._stats["inflight"] = len(self._inflight)

    def _record_delivered(self, delivered: list[int]) -> None:
        """Mark acknowledged rows delivered. When the store cannot commit that (disk full),
        the rows are held in memory as sent: re-sending them every round would flood the
        server with duplicates (659 messages for 20 alerts in 40 s once). Only a restart
        before the store recovers sends them again, within the usual bound."""
        assert self._store is not None
        for seq in delivered:
            self._retry_at.pop(seq, None)
        self._unrecorded.update(delivered)
        if not self._unrecorded or time.monotonic() < self._record_retry_at:
            return
        try:
            self._store.mark_delivered(sorted(self._unrecorded), output=self.name_)
        except StorageError as exc:
            self._record_failures += 1
            delay = backoff(self._record_failures, 1.0, 60.0)
            self._record_retry_at = time.monotonic() + delay
            self._error(
                f"cannot record {len(self._unrecorded)} delivered rows ({exc}); they are not "
                f"sent again, next attempt in {delay:.0f} s",
                key="record-delivered",
            )
        else:
            self._unrecorded.clear()
            self._record_failures = 0
            self._record_retry_at = 0.0
        with self._lock:
            self._stats["unrecorded"] = len(self._unrecorded)

    def _send_pending(self) -> None:
        assert self._store is not None
        free = self.output.window() - len(self._inflight)
        busy = set(self._inflight) | self._unrecorded
        now = time.monotonic()
        after, scanned = 0, 0
        page = self.output.timing.max_inflight * 2
        # One alert's changes go in order. A change whose alert has an earlier one in flight
        # ends the round: the rows keep their outbox order, and wait one acknowledgement.
        # One whose alert has an earlier one parked (refused, in back-off) is skipped, as
        # the parked row itself is: the rest go on. The scan starts at the oldest pending
        # row every round, so it meets each earlier change first; at most _SCAN_LIMIT each.
        in_flight: set[str] = set()
        parked: set[str] = set()
        while free > 0 and scanned < _SCAN_LIMIT:
            rows = self._store.pending(limit=page, after_seq=after, output=self.name_)
            if not rows:
                return
            for row in rows:
                after, scanned = row.seq, scanned + 1
                alert = row.alert_id
                if row.seq in busy or self._retry_at.get(row.seq, (0, 0.0))[1] > now:
                    if alert is not None and row.seq in self._inflight:
                        in_flight.add(alert)
                    elif alert is not None and row.seq not in self._unrecorded:
                        parked.add(alert)  # (acknowledged but unrecorded: delivered)
                    continue
                if alert in in_flight:
                    return
                if alert in parked:
                    continue
                result = self.output.send(row)
                if result == BUSY:
                    log.debug("%s did not take seq %d now", self.name_, row.seq)
                    return
                if result == SENT:
                    self._inflight[row.seq] = time.monotonic()
                    if alert is not None:
                        in_flight.add(alert)
                    free -= 1
                    if free == 0:
                        return
                    continue
                assert not isinstance(result, str)
                self._handle([result])  # settled at once: it holds no place in the window
                if isinstance(result, Down):
                    return
                if isinstance(result, Refusal) and not result.final and alert is not None:
                    parked.add(alert)

    def _resend_active(self) -> None:
        """Every ``resend_interval``, hand the output the alerts still active (see the module
        docstring). After the pending rows of the round, so a raise just committed goes as
        its outbox row first."""
        interval = self.output.resend_interval
        now = time.monotonic()
        if interval is None or now < self._next_resend:
            return
        assert self._store is not None
        self._next_resend = now + interval
        alerts = self._store.active_alerts(limit=RESEND_LIMIT + 1)
        if len(alerts) > RESEND_LIMIT:
            self._error(
                f"{self.name_}: more than {RESEND_LIMIT} alerts are active; the newest are not "
                "re-sent and may resolve themselves at their endsAt",
                key="resend-limit",
            )
            alerts = alerts[:RESEND_LIMIT]
        if alerts:
            down = self.output.resend(alerts)
            if down is not None:
                self._handle([down])

    def _fail(self, seq: int, error: str) -> None:
        """Park a refused row: record why, count it, retry after a growing, jittered delay."""
        assert self._store is not None
        self._store.record_failure(seq, error, output=self.name_)
        refusals = self._retry_at.get(seq, (0, 0.0))[0] + 1
        timing = self.output.timing
        delay = backoff(refusals, timing.retry_min_delay, timing.retry_max_delay)
        self._retry_at[seq] = (refusals, time.monotonic() + delay)
        with self._lock:
            self._stats["failures"] += 1
            self._stats["last_error"] = error
        log.warning("%s: outbox row %d: %s (retry in %.0f s)", self.name_, seq, error, delay)

    def _quarantine(self, seq: int, reason: str) -> None:
        """Never send this row to this output again: it stays with ``reason``, counted."""
        assert self._store is not None
        self._store.quarantine(seq, reason, output=self.name_)
        self._retry_at.pop(seq, None)
        with self._lock:
            self._stats["quarantined"] += 1
            self._stats["last_error"] = reason
        log.error("%s: outbox row %d quarantined: %s", self.name_, seq, reason)

    def _expire_stale(self) -> None:
        """Forget rows never acknowledged; the outbox sends them again."""
        limit = time.monotonic() - self.output.ack_timeout
        stale = [seq for seq, sent_at in self._inflight.items() if sent_at < limit]
        for seq in stale:
            del self._inflight[seq]
        if stale:
            self.output.forget(stale)
            log.warning(
                "%s: %d rows unacknowledged for %.0f s; re-sending",
                self.name_,
                len(stale),
                self.output.ack_timeout,
            )

    def _refresh_backlog(self) -> None:
        now = time.monotonic()
        if now - self._backlog_checked < 1.0 or self._store is None:
            return
        self._backlog_checked = now
        share = self._store.output_backlog(self.name_)
        self._set_stats(
            backlog=share["backlog"],
            oldest_pending_ts=share["oldest_pending_ts"],
            parked=share["parked"],
            quarantined=share["quarantined"],
        )

    def _connect_failed(self, message: str) -> None:
        self._connect_failures += 1
        delay = backoff(
            self._connect_failures, self._reconnect_min_delay, self._reconnect_max_delay
        )
        self._next_connect = time.monotonic() + delay
        self._error(f"{message} (next attempt in {delay:.1f} s)", key=message)

    def _error(self, message: str, exc_info: bool = False, key: str | None = None) -> None:
        """Record the last error; log it once per distinct ``key`` (default: the message)."""
        with self._lock:
            self._stats["last_error"] = message
        key = key or message
        if key != self._last_logged_error:
            log.error("%s", message, exc_info=exc_info)
            self._last_logged_error = key

    def _set_stats(self, **values: Any) -> None:
        with self._lock:
            self._stats.update(values)
