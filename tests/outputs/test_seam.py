"""The output seam (#15 item 2): the one delivery loop against a tiny in-process output, two
outputs over one outbox that do not hold each other back, and an ``upstream:`` config with a
database from before per-output delivery state delivered after the upgrade."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlite_utils import Database

from gateway.config import parse_config
from gateway.outputs import OUTPUT_TYPES, DeliveryLoop, delivery_loop
from gateway.outputs.base import SENT, Ack, Down, Outcome, Output, Refusal, SendResult, Timing
from gateway.records import Batch, Event, alert_payload
from gateway.store import MIGRATIONS, OutboxRow, Store, migrate
from tests.helpers import wait_for
from tests.upstream import GW, PREFIX, Subscriber, alert

if TYPE_CHECKING:
    from tests.conftest import Broker

T0 = 1_700_000_000.0


class FakeOutput(Output):
    """Synchronous and in memory: takes rows while ``up``, refuses the subjects it is told."""

    timing = Timing(retry_min_delay=0.05, retry_max_delay=0.1, reconnect_min_delay=0.05)

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.up = threading.Event()
        self.up.set()
        self.refuse: dict[str, bool] = {}  # subject -> final
        self.refuse_ids: set[str] = set()  # message ids refused (to be retried) while here
        self.received: list[str] = []
        self.ids: list[str] = []  # message ids taken, in order
        self.connects = 0
        self._linked = False

    @property
    def linked(self) -> bool:
        return self._linked

    @property
    def ready(self) -> bool:
        return self._linked

    def connect(self) -> Down | None:
        self.connects += 1
        if not self.up.is_set():
            return Down("fake server down")
        self._linked = True
        return None

    def send(self, row: OutboxRow) -> SendResult:
        if not self.up.is_set():
            self._linked = False
            return Down("fake server down")
        if row.subject in self.refuse:
            final = self.refuse[row.subject]
            return Refusal(row.seq, f"refused {row.subject}", final=final)
        if row.msg_id in self.refuse_ids:
            return Refusal(row.seq, f"refused {row.msg_id}")
        self.received.append(row.subject)
        self.ids.append(row.msg_id)
        return Ack(row.seq)

    def close(self, deadline: float | None) -> None:
        self._linked = False


class AsyncFakeOutput(FakeOutput):
    """Hands rows over (SENT) and acknowledges them only once told to, as MQTT's PUBACK
    comes later from another thread; ``sent`` lists every message id handed over."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sent: list[str] = []
        self.acks: set[str] = set()  # message ids to acknowledge at the next poll
        self.polls = 0
        self._waiting: dict[str, int] = {}  # message id -> seq, handed over, not acked

    def send(self, row: OutboxRow) -> SendResult:
        self.sent.append(row.msg_id)
        self._waiting[row.msg_id] = row.seq
        return SENT

    def poll(self) -> list[Outcome]:
        self.polls += 1
        done = [m for m in self._waiting if m in self.acks]
        return [Ack(self._waiting.pop(m)) for m in done]


def queue_events(store: Store, *subjects: str) -> None:
    store.write_batch(Batch(events=[Event("note", s, T0) for s in subjects]))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "gateway.db", gateway_id=GW)
    s.outputs = ("a", "b")
    yield s
    s.close()


def start(output: Output, store: Store) -> DeliveryLoop:
    loop = DeliveryLoop(output, store.path, outputs=store.outputs, poll_interval=0.05)
    loop.start()
    return loop


def test_one_output_down_holds_nothing_back_for_the_other(store: Store) -> None:
    a, b = FakeOutput("a"), FakeOutput("b")
    b.up.clear()
    loops = [start(a, store), start(b, store)]
    try:
        queue_events(store, "one", "two", "three")
        for loop in loops:
            loop.notify()
        wait_for(lambda: a.received == ["one", "two", "three"], what="a delivered")
        assert b.received == []
        assert store.outbox_backlog()[0] == 3  # b still owes them: nothing is prunable
        wait_for(lambda: loops[1].stats()["backlog"] == 3, what="b's backlog in stats")
        assert "fake server down" in (loops[1].stats()["last_error"] or "")
        b.up.set()  # b comes back: it resumes where it was, a sends nothing twice
        wait_for(lambda: b.received == ["one", "two", "three"], what="b caught up")
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="settled")
        assert a.received == ["one", "two", "three"]
    finally:
        for loop in loops:
            loop.stop(2)


def test_a_refusal_is_retried_and_a_final_one_quarantined_for_that_output_only(
    store: Store,
) -> None:
    a, b = FakeOutput("a"), FakeOutput("b")
    a.refuse = {"busy": False, "bad": True}
    loops = [start(a, store), start(b, store)]
    try:
        queue_events(store, "busy", "bad", "fine")
        for loop in loops:
            loop.notify()
        wait_for(lambda: loops[0].stats()["failures"] >= 2, what="retried with a back-off")
        assert a.received == ["fine"]  # refused rows hold back nothing behind them
        del a.refuse["busy"]
        wait_for(lambda: a.received == ["fine", "busy"], what="delivered once accepted")
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="settled")
        assert sorted(b.received) == ["bad", "busy", "fine"]  # b had no trouble with any
        assert store.output_backlog("a")["quarantined"] == 1
        assert store.output_backlog("b")["quarantined"] == 0
        assert store.outbox_quarantined() == 1
    finally:
        for loop in loops:
            loop.stop(2)


def test_each_config_output_type_has_an_output_class() -> None:
    from gateway.config.schema import OUTPUT_TAGS

    assert set(OUTPUT_TYPES) == set(OUTPUT_TAGS)


def test_an_old_upstream_config_and_an_old_database_are_delivered_after_the_upgrade(
    broker: Broker, tmp_path: Path
) -> None:
    """A database from before the deliveries table, with undelivered rows, under a config
    that still says ``upstream:``: every row is published once the new version runs."""
    data = tmp_path / "data"
    data.mkdir()
    changes = [alert(f"pump-{i}") for i in range(3)]
    conn = sqlite3.connect(data / "gateway.db")
    migrate(Database(conn), MIGRATIONS[:5])  # the last schema before per-output state
    for change in changes:  # queued by the old version, never sent
        body = alert_payload(change, GW)
        conn.execute(
            "INSERT INTO outbox (msg_id, kind, subject, payload, created_ts) "
            "VALUES (?, 'alert', ?, ?, ?)",
            (body["id"], change.stream, json.dumps(body), T0),
        )
    conn.commit()
    conn.close()
    config = parse_config(
        f"gateway: {{id: {GW}, data_dir: {data}}}\n"
        f"upstream: {{broker: {{host: {broker.host}, port: {broker.port}}}, "
        f"topic_prefix: {PREFIX}}}\n"
    )
    [section] = config.delivery_outputs()
    assert (section.type, section.name) == ("mqtt", "upstream")
    watcher = Subscriber(broker)
    loop = delivery_loop(section, GW, config.database_path, "normal", ["upstream"])
    loop.start()
    try:
        wait_for(lambda: len(watcher.alerts()) == 3, what="the old rows published")
        assert [a["id"] for a in watcher.alerts()] == [f"{c.alert_id}:raised" for c in changes]
        with Store.open(config.database_path) as store:
            wait_for(lambda: store.outbox_backlog()[0] == 0, what="recorded as delivered")
    finally:
        loop.stop(5)
        watcher.close()


def test_a_restart_resumes_each_output_where_it_was(store: Store) -> None:
    a, b = FakeOutput("a"), FakeOutput("b")
    b.refuse = {"two": False}  # b is stuck on "two" (retried) when the process stops
    loops = [start(a, store), start(b, store)]
    queue_events(store, "one", "two")
    for loop in loops:
        loop.notify()
    wait_for(lambda: a.received == ["one", "two"] and b.received == ["one"], what="progress")
    wait_for(lambda: loops[1].stats()["failures"] >= 1, what="b refused two")
    for loop in loops:
        loop.stop(2)
    a2, b2 = FakeOutput("a"), FakeOutput("b")
    loops = [start(a2, store), start(b2, store)]
    try:
        wait_for(lambda: b2.received == ["two"], what="b resumed with what it still owed")
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="settled")
        assert a2.received == []  # a had delivered both: nothing sent again
    finally:
        for loop in loops:
            loop.stop(2)


def test_a_clear_never_overtakes_its_refused_raise(store: Store) -> None:
    """#15 item 3: the raise refused (parked for a retry), its clear went out first: the
    receiver resolved an alert it never had, then opened one that nothing would close."""
    store.outputs = ("a",)
    one, two = uuid.uuid4().hex, uuid.uuid4().hex
    a = FakeOutput("a")
    a.refuse_ids = {f"{one}:raised"}
    store.write_batch(
        Batch(
            alerts=[alert("pump", alert_id=one), alert("pump", alert_id=two)],
            events=[Event("note", "after-raises", T0)],
        )
    )
    store.write_batch(Batch(alerts=[alert("pump", "cleared", one), alert("pump", "cleared", two)]))
    loop = start(a, store)
    try:
        # The other alert and the event are not held back by the refused one.
        wait_for(lambda: f"{two}:cleared" in a.ids, what="the other alert raised and cleared")
        assert a.received == ["pump", "after-raises", "pump"]
        assert (a.ids[0], a.ids[2]) == (f"{two}:raised", f"{two}:cleared")
        wait_for(lambda: loop.stats()["failures"] >= 3, what="the raise refused and retried")
        assert f"{one}:cleared" not in a.ids  # waits for its raise, retries and all
        a.refuse_ids.clear()
        wait_for(lambda: f"{one}:cleared" in a.ids, what="the clear after its raise")
        mine = [m for m in a.ids if m.startswith(one)]
        assert mine == [f"{one}:raised", f"{one}:cleared"]
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="settled")
    finally:
        loop.stop(2)


def test_a_clear_waits_for_its_raise_to_be_acknowledged(store: Store) -> None:
    """An asynchronous output (MQTT): the clear is not handed over while the raise is
    unacknowledged, nor when the raise is forgotten after ack_timeout and sent again; the
    rows behind it wait with it, so the outbox order holds."""
    store.outputs = ("a",)
    one, two = uuid.uuid4().hex, uuid.uuid4().hex
    a = AsyncFakeOutput("a")
    a.ack_timeout = 0.3
    store.write_batch(Batch(alerts=[alert("pump", alert_id=one), alert("fan", alert_id=two)]))
    store.write_batch(Batch(alerts=[alert("pump", "cleared", one), alert("fan", "cleared", two)]))
    a.acks = {f"{two}:raised", f"{two}:cleared"}
    loop = start(a, store)
    try:
        wait_for(lambda: a.sent.count(f"{one}:raised") >= 2, what="the raise re-sent")
        polls = a.polls
        wait_for(lambda: a.polls >= polls + 5, what="a few more rounds")
        assert f"{one}:cleared" not in a.sent and f"{two}:cleared" not in a.sent
        assert a.sent[:2] == [f"{one}:raised", f"{two}:raised"]
        a.acks.add(f"{one}:raised")
        wait_for(lambda: f"{two}:cleared" in a.sent, what="the clears, once the raise is acked")
        last_raise = max(i for i, m in enumerate(a.sent) if m == f"{one}:raised")
        assert a.sent[last_raise + 1 :] == [f"{one}:cleared", f"{two}:cleared"]
        a.acks.add(f"{one}:cleared")
        wait_for(lambda: store.outbox_backlog()[0] == 0, what="settled")
    finally:
        loop.stop(2)
