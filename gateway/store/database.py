"""The gateway's SQLite database: the durable record and the only hand-off to the forwarder.

Why it looks like this:

- One pipeline batch is ONE transaction (``write_batch``): readings, alert changes, events,
  dead letters, checkpointed stream state and the status snapshot commit together, and when
  an outbox is kept, every alert change and event is queued for upstream in that same
  transaction. A crash therefore never leaves an alert that will not be forwarded, nor an
  outbox row for an alert that was never recorded.
- WAL mode, so the CLI (``read_only=True``) can read while the daemon writes, and writers
  take ``BEGIN IMMEDIATE`` so two writer connections (pipeline, forwarder) queue on
  ``busy_timeout`` instead of failing on a lock upgrade.
- A ``Store`` wraps one ``sqlite3`` connection and belongs to the thread that opened it
  (``check_same_thread`` stays on). Each thread opens its own.
- Every ``sqlite3`` error leaves this module as ``StorageError``. All SQL is parameterised.
- The schema is a numbered list of migrations; ``meta.schema_version`` says how many ran.
- ``stream_summary`` keeps each stream's reading count and newest reading, changed in the
  same transaction as the readings (``write_batch``, ``prune``): what the CLI shows never
  reads the readings table, so it costs the same at 10 thousand readings or 10 million.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import operator
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypedDict, TypeVar

from gateway.errors import StorageError
from gateway.records import (
    AlertChange,
    Batch,
    Contribution,
    Event,
    ScoredReading,
    alert_of_message,
    alert_payload,
    event_payload,
)

if TYPE_CHECKING:  # imported when first used: a CLI read never needs it (nor numpy, pandas)
    from sqlite_utils import Database

log = logging.getLogger(__name__)

Durability = Literal["normal", "full"]
AlertState = Literal["open", "acked", "all"]
StartCheck = Literal["off", "quick", "full"]
Migration = Callable[["Database"], None]
_READING_ROW = operator.attrgetter("ts", "stream", "value", "expected", "score", "alert")
# Readings, alerts and the outbox are the site's data: group-readable at most (the group is
# the service's; an operator in it runs the CLI), whatever the umask of whoever starts the
# gateway. systemd's UMask= and StateDirectoryMode= say the same; a hand-started daemon or
# a CLI run in a fresh folder used to leave the directory 0755 and the database 0644.
DATA_DIR_MODE = 0o750
DATABASE_MODE = 0o640  # SQLite gives the -wal and -shm files the database file's mode

_V1_SCHEMA = (
    """CREATE TABLE readings (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, stream TEXT NOT NULL,
        value REAL, expected REAL, score REAL, alert INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX readings_stream_ts ON readings (stream, ts)",
    "CREATE INDEX readings_ts ON readings (ts)",
    """CREATE TABLE alerts (
        id TEXT PRIMARY KEY, stream TEXT NOT NULL, raised_ts REAL NOT NULL, cleared_ts REAL,
        active INTEGER NOT NULL CHECK (active IN (0, 1)), score REAL, max_score REAL,
        observed REAL, expected REAL, band_low REAL, band_high REAL, unit TEXT, model TEXT,
        contributors TEXT NOT NULL DEFAULT '[]', acked_ts REAL, ack_note TEXT)""",
    "CREATE INDEX alerts_raised ON alerts (raised_ts)",
    "CREATE INDEX alerts_stream ON alerts (stream, raised_ts)",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}')""",
    "CREATE INDEX events_ts ON events (ts)",
    """CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, msg_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('alert', 'event')), subject TEXT NOT NULL,
        payload TEXT NOT NULL, created_ts REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        delivered_ts REAL, last_error TEXT)""",
    "CREATE INDEX outbox_pending ON outbox (seq) WHERE delivered_ts IS NULL",
    "CREATE INDEX outbox_delivered ON outbox (delivered_ts) WHERE delivered_ts IS NOT NULL",
    """CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL,
        payload TEXT NOT NULL, payload_len INTEGER NOT NULL, detail TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX dead_letters_ts ON dead_letters (ts)",
    """CREATE TABLE stream_state (
        stream TEXT PRIMARY KEY, model_hash TEXT, state TEXT NOT NULL, updated_ts REAL NOT NULL)""",
    """CREATE TABLE status (
        id INTEGER PRIMARY KEY CHECK (id = 1), snapshot TEXT NOT NULL, updated_ts REAL NOT NULL)""",
)


def _v1(db: Database) -> None:
    for statement in _V1_SCHEMA:
        db.execute(statement)


# Append only: migration N (1-based) turns schema version N-1 into N.
def _v2(db: Database) -> None:
    """An operator can acknowledge an alert as a "new normal": the daemon then lets the
    detector adapt to the new level (and records when it did)."""
    db.execute("ALTER TABLE alerts ADD COLUMN new_normal INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE alerts ADD COLUMN new_normal_applied_ts REAL")


def _v3(db: Database) -> None:
    """Readings are indexed by (ts, stream) only, no longer by (stream, ts).

    Readings arrive in time order, so (ts, stream) entries are appended at the right edge
    of the index. Entries keyed by stream first land on a different leaf page for every
    stream, and each commit rewrote one page per stream in the batch: with 1,000 streams
    and a few hundred thousand rows, inserting cost about 33 us per reading instead of
    about 3 us, and it was the biggest cost on the pipeline thread. Pruning and the
    over-size cap go by ts (a prefix of this index); one stream's recent readings (`plot`)
    are a range of this index filtered by stream without touching the table; `streams`
    scans the table once, as before."""
    db.execute("DROP INDEX IF EXISTS readings_stream_ts")
    db.execute("DROP INDEX IF EXISTS readings_ts")
    db.execute("CREATE INDEX readings_ts_stream ON readings (ts, stream)")


def _v4(db: Database) -> None:
    """An outbox row that can never be published (a topic the broker would drop the
    connection for, a payload that does not decode) is quarantined: kept, counted and shown,
    but no longer sent, so it cannot hold back the rows behind it."""
    db.execute("ALTER TABLE outbox ADD COLUMN quarantined_ts REAL")


def _v5(db: Database) -> None:
    """A summary row per stream, kept by ``write_batch`` and ``prune`` in the transaction
    that changes its readings, so ``streams`` reads one row per stream instead of grouping
    every reading (1.8 s at 1M readings, 10 s at 10M). Built here once from the readings
    there are: on a large database this is that grouping one last time (about 10 s per 10M
    readings), inside the migration's transaction.

    Alerts that are still active get an index of their own: ``streams`` lists them (it
    scanned every alert ever raised), and every batch with alerting readings raises their
    ``max_score``."""
    db.execute(_STREAM_SUMMARY_TABLE)
    _build_stream_summary(db.conn)
    db.execute("CREATE INDEX alerts_active ON alerts (raised_ts) WHERE active = 1")


# What ``streams`` shows of each stream's readings, for every stream with readings stored:
# - readings: how many of its readings are stored now (a prune subtracts what it deletes);
# - last_*: its newest stored reading (highest ts; of equal ts, the last written);
# - first_ts: where its stored history starts. No stored reading of the stream is older, and
#   every reading of it newer than first_ts is still stored. It is the ts of its oldest
#   stored reading, except after a prune deleted some of them: retention deletes the oldest
#   readings of the whole table, and finding each stream's new oldest one would need the
#   (stream, ts) index that schema version 3 dropped, so first_ts becomes the oldest ts left
#   in the table, at or before the stream's oldest stored reading (pruning deletes a table's
#   oldest readings first, so none of the stream's lay between the two).
# A stream whose readings are all pruned loses its row, as it left the GROUP BY before.
_STREAM_SUMMARY_TABLE = """CREATE TABLE stream_summary (
    stream TEXT PRIMARY KEY, readings INTEGER NOT NULL, first_ts REAL NOT NULL,
    last_ts REAL NOT NULL, last_value REAL, last_expected REAL, last_score REAL,
    last_alert INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID"""
_SUMMARY_COLUMNS = (
    "stream, readings, first_ts, last_ts, last_value, last_expected, last_score, last_alert"
)
_SUMMARY_UPSERT_HEAD = f"INSERT INTO stream_summary ({_SUMMARY_COLUMNS})"
# In DO UPDATE every bare column is the stored row's value before this update; a batch's
# newest reading replaces the stored one when it is as new or newer (written later).
_SUMMARY_UPSERT_TAIL = " ON CONFLICT(stream) DO UPDATE SET " + ", ".join(
    [
        "readings = readings + excluded.readings",
        "first_ts = MIN(first_ts, excluded.first_ts)",
        "last_ts = MAX(last_ts, excluded.last_ts)",
    ]
    + [
        f"{column} = CASE WHEN excluded.last_ts >= last_ts THEN excluded.{column} ELSE {column} END"
        for column in ("last_value", "last_expected", "last_score", "last_alert")
    ]
)


def _build_stream_summary(conn: sqlite3.Connection) -> None:
    """(Re)build ``stream_summary`` from the readings, in the caller's transaction."""
    conn.execute("DELETE FROM stream_summary")
    conn.execute(
        "INSERT INTO stream_summary (stream, readings, first_ts, last_ts) "
        "SELECT stream, COUNT(*), MIN(ts), MAX(ts) FROM readings GROUP BY stream"
    )
    # One index seek on (ts, stream) per stream: its newest reading is at last_ts.
    conn.execute(
        "UPDATE stream_summary SET (last_value, last_expected, last_score, last_alert) = "
        "(SELECT value, expected, score, alert FROM readings AS r "
        "WHERE r.ts = stream_summary.last_ts AND r.stream = stream_summary.stream "
        "ORDER BY r.id DESC LIMIT 1)"
    )


# The same rows, the oldest first in index order (ts, stream, id): a total order, so within
# one transaction the readings counted are the readings deleted, and a stream's newest
# reading is always the last of it to go.
_COUNT_OLDEST_READINGS = (
    "SELECT stream, COUNT(*) FROM (SELECT stream FROM readings WHERE ts < ? "
    "ORDER BY ts, stream, id LIMIT ?) GROUP BY stream"
)
_DELETE_OLDEST_READINGS = (
    "DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE ts < ? "
    "ORDER BY ts, stream, id LIMIT ?)"
)


def _batch_summary(readings: Sequence[ScoredReading]) -> list[tuple[Any, ...]]:
    """One ``stream_summary`` row per stream of a batch: its count, oldest ts, newest reading."""
    per_stream: dict[str, list[Any]] = {}
    for r in readings:
        seen = per_stream.get(r.stream)
        if seen is None:
            per_stream[r.stream] = [1, r.ts, r]
            continue
        seen[0] += 1
        if r.ts < seen[1]:
            seen[1] = r.ts
        if r.ts >= seen[2].ts:  # of equal ts the later one: it gets the higher id
            seen[2] = r
    return [
        (stream, n, first, last.ts, last.value, last.expected, last.score, last.alert)
        for stream, (n, first, last) in per_stream.items()
    ]


def _v6(db: Database) -> None:
    """Delivery state per output (``deliveries``), so one output's outage or refusals never
    hold back another and each output is at-least-once on its own. An outbox row is settled
    (``delivered_ts`` or ``quarantined_ts`` set, and so prunable) only once every configured
    output has delivered or quarantined it. Rows queued before this migration have no
    ``deliveries`` row: they are pending for every output, and are delivered after upgrade."""
    db.execute(
        """CREATE TABLE deliveries (
        output TEXT NOT NULL, seq INTEGER NOT NULL, delivered_ts REAL, quarantined_ts REAL,
        attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, PRIMARY KEY (output, seq))
        WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX deliveries_seq ON deliveries (seq)")
    # Every way an outbox row goes (retention, size cap, a salvage) takes its state along.
    db.execute(
        "CREATE TRIGGER outbox_row_gone AFTER DELETE ON outbox "
        "BEGIN DELETE FROM deliveries WHERE seq = old.seq; END"
    )


def _v7(db: Database) -> None:
    """Checkpoints are found by when they were written (retention of states by age and by
    count) through an index. Without it each prune read every row's state to reach
    ``updated_ts`` (stored after it, past the state's overflow pages): 0.17 s on the
    pipeline thread with 20,000 rows."""
    db.execute("CREATE INDEX stream_state_updated ON stream_state (updated_ts)")


MIGRATIONS: tuple[Migration, ...] = (_v1, _v2, _v3, _v4, _v5, _v6, _v7)

# The output an ``upstream:`` section becomes, and the one a Store settles rows for unless
# told the configured outputs' names.
DEFAULT_OUTPUT = "upstream"

# An outbox row still to be sent to output ``?`` (bound twice: the output, then seq > ?).
_PENDING_FOR = (
    "FROM outbox AS o LEFT JOIN deliveries AS d ON d.output = ? AND d.seq = o.seq "
    "WHERE o.delivered_ts IS NULL AND o.quarantined_ts IS NULL "
    "AND d.delivered_ts IS NULL AND d.quarantined_ts IS NULL"
)
# Settle a row once every configured output (:names, a JSON list of :count) is done with it:
# delivered by each, or quarantined by one at least.
_SETTLE = """UPDATE outbox SET
    delivered_ts = CASE WHEN (SELECT COUNT(*) FROM deliveries AS d WHERE d.seq = outbox.seq
        AND d.output IN (SELECT value FROM json_each(:names)) AND d.delivered_ts IS NOT NULL)
        = :count THEN :now END,
    quarantined_ts = CASE WHEN (SELECT COUNT(*) FROM deliveries AS d WHERE d.seq = outbox.seq
        AND d.output IN (SELECT value FROM json_each(:names)) AND d.delivered_ts IS NOT NULL)
        = :count THEN NULL ELSE :now END
    WHERE seq = :seq AND delivered_ts IS NULL AND quarantined_ts IS NULL
    AND (SELECT COUNT(*) FROM deliveries AS d WHERE d.seq = outbox.seq
        AND d.output IN (SELECT value FROM json_each(:names))
        AND (d.delivered_ts IS NOT NULL OR d.quarantined_ts IS NOT NULL)) = :count"""

WAL_SIZE_LIMIT = 32_000_000
# Retention as readings are written (``write_batch``): at most this many readings deleted
# per batch (the batch's own count plus a quarter, at least TRIM_EXTRA more, capped), so a
# batch's trim stays short (twice the batch: up to 0.14 s measured, on a loaded box with
# a 500 MB WAL).
TRIM_EXTRA = 64
READING_BYTES = 64  # about what a reading takes with its index entry
TRIM_MAX = 4000
# Free pages kept for reuse, as a share of the cap; more are given back VACUUM_STEP_PAGES
# at a time (``auto_vacuum = INCREMENTAL`` files only).
VACUUM_SLACK = 0.05
VACUUM_STEP_PAGES = 256


@dataclass(frozen=True, slots=True)
class Retention:
    """What ``write_batch`` may delete as it writes: the oldest readings while the pages in
    use exceed ``max_bytes``, else readings older than ``expire_before`` (-inf: none)."""

    max_bytes: int
    expire_before: float = -math.inf


class AlertRow(TypedDict):
    """One alert as the CLI shows it: the ``alerts`` columns, ``contributors`` parsed."""

    id: str
    stream: str
    raised_ts: float
    cleared_ts: float | None
    active: bool
    score: float | None  # at raise
    max_score: float | None
    observed: float | None
    expected: float | None
    band_low: float | None
    band_high: float | None
    unit: str | None
    model: str | None
    contributors: list[dict[str, Any]]
    acked_ts: float | None
    ack_note: str | None
    new_normal: bool


class EventRow(TypedDict):
    id: int
    ts: float
    kind: str
    subject: str
    detail: dict[str, Any]


class StreamRow(TypedDict):
    """One stream as ``streams`` shows it (see ``stream_summary`` for what the counts mean)."""

    stream: str
    readings: int  # stored now
    first_ts: float | None  # where its stored readings start
    last_ts: float | None
    last_value: float | None
    last_expected: float | None
    last_score: float | None
    alert: bool  # the alert flag of the last reading
    active_alert: str | None  # id of an active alert recorded under this stream name
    state_updated_ts: float | None  # last detector-state checkpoint


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    msg_id: str
    kind: str  # "alert" | "event"
    subject: str  # the stream, for alerts
    payload: str  # JSON text, published as is
    created_ts: float
    attempts: int
    # Why the row cannot be sent as stored (bytes that are not UTF-8, a missing payload): the
    # forwarder quarantines it and goes on with the rows behind it.
    problem: str | None = None

    @property
    def alert_id(self) -> str | None:
        """The alert an alert row is a change of (None for an event): its changes are
        delivered in order, a clear never before its raise."""
        return alert_of_message(self.msg_id) if self.kind == "alert" else None


def _outbox_row(
    seq: int, msg_id: Any, kind: Any, subject: Any, payload: Any, created: Any, attempts: Any
) -> OutboxRow:
    """An outbox row from its stored bytes; what cannot be read becomes its ``problem``."""
    texts: list[str] = []
    problem = None
    for column, raw in (("msg_id", msg_id), ("kind", kind), ("subject", subject),
                        ("payload", payload)):  # fmt: skip
        if raw is None:
            problem = problem or f"its {column} is missing"
            texts.append("")
            continue
        try:
            texts.append(bytes(raw).decode("utf-8"))
        except UnicodeDecodeError as exc:
            problem = problem or f"its {column} is not valid UTF-8 (byte {exc.start})"
            texts.append(bytes(raw).decode("utf-8", "replace"))
    msg, kind_text, subject_text, payload_text = texts
    return OutboxRow(
        seq, msg, kind_text, subject_text, payload_text, float(created or 0.0),
        int(attempts or 0), problem,
    )  # fmt: skip


P = ParamSpec("P")
R = TypeVar("R")


def _converts_errors(fn: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate[Store, P], R]:
    """Turn sqlite3 (and text-encoding) errors into StorageError at the module boundary."""

    @functools.wraps(fn)
    def wrapper(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(self, *args, **kwargs)
        except (sqlite3.Error, UnicodeError) as exc:
            raise StorageError(f"{fn.__name__} on {self.path}: {_readable(exc)}") from exc

    return wrapper


def _readable(exc: BaseException) -> str:
    """An error as text, even when it is SQLite's message quoting bytes that are not UTF-8."""
    if isinstance(exc, UnicodeDecodeError):
        quoted = exc.object.decode("utf-8", "replace") if isinstance(exc.object, bytes) else ""
        return f"{quoted} (text that is not valid UTF-8: {exc.reason} at byte {exc.start})"
    return str(exc)


_MAX_VARIABLES = 999  # bound parameters per statement: SQLite's oldest limit
_ROWS_PER_STATEMENT = 128  # fewer for rows wider than 7 columns (_MAX_VARIABLES)
_KEYS_PER_QUERY = 500  # bound parameters per lookup, under SQLite's oldest limit (999)


@functools.lru_cache(maxsize=64)
def _multi_row_sql(head: str, width: int, rows: int, tail: str) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES {', '.join([row] * rows)}{tail}"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    """Strict JSON (NaN/inf become null), so upstream parsers never choke on our payloads."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        return json.dumps(_finite(value), separators=(",", ":"), allow_nan=False, default=str)


def schema_version(db: Database | sqlite3.Connection) -> int:
    conn = db if isinstance(db, sqlite3.Connection) else db.conn
    if (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        is None
    ):
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the schema up to ``len(migrations)``, all pending steps in one transaction."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        current = schema_version(db)
        if current > len(migrations):
            raise StorageError(
                f"the database has schema version {current}, newer than this gateway "
                f"understands ({len(migrations)}); upgrade the gateway"
            )
        for version in range(current + 1, len(migrations) + 1):
            log.info("migrating the database to schema version %d", version)
            migrations[version - 1](db)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [str(len(migrations))],
        )
    except BaseException:
        db.conn.rollback()
        raise
    db.conn.commit()
    return len(migrations)


def _create_private(path: Path) -> None:
    """Create the missing folders above ``path`` (``DATA_DIR_MODE``) and ``path`` itself, an
    empty file SQLite takes as a new database (``DATABASE_MODE``). What exists is left as it
    is. The modes are given at creation, where the umask can only narrow them (no window in
    which the file is readable by others, no process-wide umask change under other threads)."""
    missing = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    for folder in reversed(missing):
        with suppress(FileExistsError):  # made meanwhile by someone else
            folder.mkdir(mode=DATA_DIR_MODE)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DATABASE_MODE))


def find_damage(path: Path, full: bool = False, timeout: float = 5.0) -> str | None:
    """Why the database at ``path`` is unusable (``PRAGMA quick_check``, or with ``full``
    ``integrity_check``), or None if it is fine or does not exist yet. Uses its own
    connection and closes it before returning."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        conn = sqlite3.connect(path, timeout, isolation_level=None)
    except sqlite3.Error as exc:
        return f"cannot open: {exc}"
    try:
        problems = _check_lines(conn, full)
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StorageError(f"{path} is in use by another process: {exc}") from exc
        return str(exc)
    except sqlite3.Error as exc:
        return str(exc)
    except UnicodeDecodeError as exc:  # SQLite's own message quoted the undecodable bytes
        return _readable(exc)
    finally:
        conn.close()
    if problems == ["ok"]:
        return None
    return "; ".join(problems[:5])


def _check_lines(conn: sqlite3.Connection, full: bool) -> list[str]:
    """What ``PRAGMA quick_check`` (or with ``full`` ``integrity_check``) says, line by line:
    ``["ok"]`` for a sound file. sqlite3 errors are the caller's."""
    # A damaged file may hold bytes that are not UTF-8 anywhere, the schema included: the
    # check's report must still be readable, never an exception of its own.
    saved = conn.text_factory
    conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
    try:
        rows = conn.execute(f"PRAGMA {_CHECKS[full]}").fetchall()
    finally:
        conn.text_factory = saved
    return [str(r[0]) for r in rows]


_CHECKS = {False: "quick_check", True: "integrity_check"}
# Files SQLite keeps beside a WAL-mode database: moved, measured and removed with it.
_SIDE_FILES = ("-wal", "-shm")


def disk_bytes(path: Path) -> int:
    """Bytes the database at ``path`` takes on disk, its WAL and shared-memory index included."""
    total = 0
    for suffix in ("", *_SIDE_FILES):
        with suppress(FileNotFoundError):
            total += path.with_name(path.name + suffix).stat().st_size
    return total


def move_aside(path: Path) -> Path:
    """Rename a damaged database (and its -wal/-shm) to ``<name>.corrupt-<UTC time>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        # The WAL belongs to the damaged file: left behind, it could be replayed into the
        # fresh database. Move it (and the shared-memory index) first, the database last.
        for suffix in _SIDE_FILES:
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(aside.with_name(aside.name + suffix))
        path.rename(aside)
    except OSError as exc:
        raise StorageError(f"cannot move the damaged database {path} aside: {exc}") from exc
    return aside


@dataclass(frozen=True, slots=True)
class Salvage:
    """What could be read back of a damaged file's outbox."""

    rows: tuple[OutboxRow, ...]  # undelivered, not quarantined, readable: to be sent
    unreadable: int  # seqs in ranges SQLite could not read (some may have been delivered)
    problem: str | None  # why nothing at all could be read, if so


@dataclass(frozen=True, slots=True)
class Health:
    """What ``Store.health`` found: the integrity check, the file's pages, rows per table,
    the outbox backlog and the last recovery. ``problems`` is empty when the check passed."""

    check: str  # quick_check or integrity_check
    problems: tuple[str, ...]
    bytes_in_use: int
    free_bytes: int
    rows: dict[str, int]  # every table of the schema but the bookkeeping ones, in order made
    outbox_backlog: int
    outbox_oldest: float | None
    last_recovery: EventRow | None  # the newest database_recovered event

    @property
    def ok(self) -> bool:
        return not self.problems


# Tables ``health`` does not count: the schema's own bookkeeping, not the site's data.
_BOOKKEEPING_TABLES = ("meta", "status")
_HEALTH_PROBLEMS = 20  # lines of a failed check kept (a damaged file can give thousands)
# Pages ``reclaim_free_pages`` gives back per step, each step its own short write, so a
# running daemon's batches never wait long behind it.
RECLAIM_STEP_PAGES = 2000
# Readings one ``readings_window`` returns at most (a day of one stream at 10 Hz).
READINGS_WINDOW_MAX = 1_000_000

_SALVAGE_CHUNK = 256  # seqs per read; a range that fails is halved down to single seqs
_SALVAGE_MAX_ROWS = 1_000_000  # bound on what one recovery re-queues
_SALVAGE_MAX_CHUNKS = 100_000  # bound on the seq range one recovery walks (25.6M seqs)


def salvage_outbox(path: Path, timeout: float = 5.0) -> Salvage:
    """Read the undelivered outbox rows of the damaged database at ``path``, row by row.

    Python's sqlite3 has no recover API and the sqlite3 CLI's ``.recover`` is not on every
    gateway, so this reads the outbox table by ``seq`` ranges straight off its b-tree (``NOT
    INDEXED``: a damaged index must not hide rows): a range that raises is halved until the
    single seqs that cannot be read are known and counted. Rows already delivered or
    quarantined stay behind; rows whose text is not UTF-8 are skipped as unreadable."""
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, timeout, isolation_level=None, uri=True)
    except sqlite3.Error as exc:
        return Salvage((), 0, f"cannot open: {exc}")
    try:
        return _salvage_rows(conn)
    except (sqlite3.Error, UnicodeError) as exc:
        return Salvage((), 0, _readable(exc)[:500])
    finally:
        conn.close()


def _salvage_rows(conn: sqlite3.Connection) -> Salvage:
    conn.text_factory = bytes
    top = 0
    bottom = 1
    for sql in ("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
                "SELECT MAX(seq) FROM outbox NOT INDEXED"):  # fmt: skip
        try:
            row = conn.execute(sql).fetchone()
        except sqlite3.DatabaseError:
            continue
        top = max(top, int(row[0] or 0) if row else 0)
    try:  # the first seq still there (older rows were pruned): no need to walk from 1
        row = conn.execute("SELECT MIN(seq) FROM outbox NOT INDEXED").fetchone()
        bottom = max(1, int(row[0] or 1) if row else 1)
    except sqlite3.DatabaseError:
        pass
    # A damaged counter can claim any seq: walk at most this many chunks past the first.
    top = min(top, bottom + _SALVAGE_MAX_CHUNKS * _SALVAGE_CHUNK - 1)
    if top == 0:
        # Either an empty outbox or one whose every page is unreadable: tell them apart.
        conn.execute("SELECT COUNT(*) FROM outbox NOT INDEXED").fetchone()
        return Salvage((), 0, None)
    rows: list[OutboxRow] = []
    unreadable = 0
    ranges: list[tuple[int, int]] = []  # halves of a range that failed, still to read
    start = bottom
    while (ranges or start <= top) and len(rows) < _SALVAGE_MAX_ROWS:
        if ranges:
            lo, hi = ranges.pop()
        else:
            lo, hi = start, min(start + _SALVAGE_CHUNK - 1, top)
            start = hi + 1
        try:
            found = conn.execute(
                "SELECT seq, msg_id, kind, subject, payload, created_ts, attempts FROM outbox "
                "NOT INDEXED WHERE seq BETWEEN ? AND ? AND delivered_ts IS NULL "
                "AND quarantined_ts IS NULL ORDER BY seq",
                (lo, hi),
            ).fetchall()
        except sqlite3.DatabaseError:
            if lo == hi:
                unreadable += 1
            else:
                mid = (lo + hi) // 2
                ranges += [(mid + 1, hi), (lo, mid)]
            continue
        for raw in found:
            row = _outbox_row(*raw)
            if row.problem is None:
                rows.append(row)
            else:
                unreadable += 1
    return Salvage(tuple(rows[:_SALVAGE_MAX_ROWS]), unreadable, None)


class Store:
    """One connection to the gateway database, owned by the thread that opened it."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, outbox: bool, gateway_id: str):
        self.path = path
        self._conn = conn
        self.outbox = outbox
        self.gateway_id = gateway_id
        # Every configured output: a row is settled once each of them is done with it.
        self.outputs: tuple[str, ...] = (DEFAULT_OUTPUT,)
        # How long the last COMMIT and the last batch's trim took (the pipeline reports the
        # longest of each, see PhaseTimes), and what trimming deleted.
        self.last_commit_s = 0.0
        self.last_trim_s = 0.0
        self.trimmed_over_size = 0
        self.trimmed_expired = 0
        # Bytes in use over the cap once every reading is gone (0: none, or readings left to
        # delete): stream state, alerts, events and the undelivered outbox, which retention
        # never deletes to make room. The operator must raise ``max_db_size``.
        self.over_cap_bytes = 0
        self.expiry_pending = False  # the last trim may have left expired readings behind
        self.incremental_vacuum = False  # auto_vacuum = INCREMENTAL (set by _prepare)
        self._page = 0

    @functools.cached_property
    def db(self) -> Database:
        """sqlite-utils over the same connection: migrations and bulk inserts. Imported on
        first use, so the CLI's reads start without it (it imports numpy, and pandas when
        installed: about 0.15-0.3 s of a command's start)."""
        from sqlite_utils import Database

        return Database(self._conn, execute_plugins=False)

    def _query(
        self, sql: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> Iterator[dict[str, Any]]:
        """Rows of ``sql`` as dicts keyed by column name (what ``Database.query`` gives)."""
        cursor = self._conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        for row in cursor:
            yield dict(zip(names, row, strict=True))

    @classmethod
    def open(
        cls,
        path: str | Path,
        durability: Durability = "normal",
        *,
        read_only: bool = False,
        outbox: bool = True,
        gateway_id: str = "liquid-gateway",
        busy_timeout_ms: int = 5000,
        recover: StartCheck = "off",
    ) -> Store:
        """Open (creating if needed) the database at ``path``.

        ``recover="quick"`` or ``"full"`` (the daemon's pipeline, once at start): a database
        that fails ``PRAGMA quick_check`` (structure, O(N)) or ``integrity_check`` (also
        index contents; slower) or cannot be opened is moved aside, never deleted, and a
        fresh one is created with a ``database_recovered`` event saying where it went.
        """
        path = Path(path)
        if recover != "off" and not read_only:
            return cls._open_recovering(
                path, durability, outbox, gateway_id, busy_timeout_ms, recover == "full"
            )
        timeout = busy_timeout_ms / 1000  # sqlite3's timeout is SQLite's busy_timeout
        try:
            if read_only:
                if not path.is_file():
                    raise StorageError(
                        f"no gateway database at {path} (has the daemon run with this data_dir?)"
                    )
                uri = path.resolve().as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, timeout, isolation_level=None, uri=True)
            else:
                _create_private(path)
                conn = sqlite3.connect(path, timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the database {path}: {exc}") from exc
        try:
            store = cls(conn, path, outbox=outbox, gateway_id=gateway_id)
            store._prepare(durability, read_only)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error | UnicodeDecodeError):
                # A damaged schema can quote bytes that are not UTF-8 in SQLite's message.
                raise StorageError(f"cannot open the database {path}: {_readable(exc)}") from exc
            raise
        return store

    @classmethod
    def _open_recovering(
        cls,
        path: Path,
        durability: Durability,
        outbox: bool,
        gateway_id: str,
        busy_timeout_ms: int,
        full_check: bool,
    ) -> Store:
        def fresh_open() -> Store:
            return cls.open(
                path,
                durability,
                outbox=outbox,
                gateway_id=gateway_id,
                busy_timeout_ms=busy_timeout_ms,
            )

        damage = find_damage(path, full=full_check, timeout=busy_timeout_ms / 1000)
        if damage is None:
            try:
                return fresh_open()
            except StorageError as exc:
                # Only a damaged file counts; "locked" or "newer schema" must stay errors.
                cause = exc.__cause__
                if not isinstance(cause, sqlite3.DatabaseError) or isinstance(
                    cause, sqlite3.OperationalError
                ):
                    raise
                damage = str(cause)
        aside = move_aside(path)
        log.error("the database %s is damaged (%s); moved it to %s", path, damage, aside)
        store = fresh_open()
        salvage = salvage_outbox(aside, busy_timeout_ms / 1000)
        queued = store._requeue(salvage.rows)
        unreadable = salvage.unreadable + len(salvage.rows) - queued
        log.log(
            logging.WARNING if unreadable or salvage.problem else logging.INFO,
            "salvaged %d undelivered outbox rows from %s; %d outbox seqs could not be read%s",
            queued,
            aside,
            unreadable,
            f" ({salvage.problem})" if salvage.problem else "",
        )
        event = Event(
            "database_recovered",
            path.name,
            detail={
                "moved_to": str(aside),
                "reason": damage[:500],
                "outbox_salvaged": queued,
                "outbox_unreadable": unreadable,
                "outbox_problem": salvage.problem,
            },
        )
        store.write_batch(Batch(events=[event]))
        return store

    def _requeue(self, rows: Sequence[OutboxRow]) -> int:
        """Queue rows salvaged from a damaged file, in their old order, under their old
        ``msg_id`` (upstream de-duplicates on it); ``seq`` is the new database's own. A row
        the schema refuses (damage that still decoded, e.g. a flipped ``kind``) is left
        out; returns how many were queued."""
        queued = 0
        with self._write():
            for r in rows:
                try:
                    queued += self._conn.execute(
                        "INSERT INTO outbox (msg_id, kind, subject, payload, created_ts) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(msg_id) DO NOTHING",
                        (r.msg_id, r.kind, r.subject, r.payload, r.created_ts),
                    ).rowcount
                except sqlite3.IntegrityError:
                    continue
        return queued

    @_converts_errors
    def _prepare(self, durability: Durability, read_only: bool) -> None:
        conn = self._conn
        if read_only:
            version = schema_version(self._conn)
            if version != len(MIGRATIONS):
                raise StorageError(
                    f"{self.path} has schema version {version}, this gateway expects "
                    f"{len(MIGRATIONS)}"
                    + (" (start the daemon once to migrate it)" if version else "")
                )
            return
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            # Only possible before the first table exists; lets prune() give space back.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self.incremental_vacuum = conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"{self.path}: cannot switch to WAL mode (got {mode})")
        conn.execute(
            "PRAGMA synchronous = FULL" if durability == "full" else "PRAGMA synchronous = NORMAL"
        )
        # After a burst, the WAL file is cut back to this once a checkpoint has emptied it.
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}").fetchall()
        version = schema_version(conn)
        if 0 < version < len(MIGRATIONS):
            self._back_up_before_migrating(version)
        migrate(self.db)

    def _back_up_before_migrating(self, version: int) -> None:
        """Copy the database as schema ``version`` left it, beside it, before an upgrade
        migrates it: ``gateway.db.schema-v3.bak`` is what the previous release can open again.
        One copy per version, replaced by the next upgrade from that version. A copy that
        cannot be made (a full disk) is logged and the migration goes ahead: the migration is
        one transaction of its own, so the data is safe either way."""
        target = self.path.with_name(f"{self.path.name}.schema-v{version}.bak")
        try:
            partial = target.with_name(target.name + ".partial")
            copy = sqlite3.connect(partial)
            try:
                self._conn.backup(copy)
            finally:
                copy.close()
            os.chmod(partial, 0o640)
            os.replace(partial, target)
        except (sqlite3.Error, OSError) as exc:
            with suppress(OSError):
                partial.unlink()
            log.error(
                "could not copy %s before migrating it from schema version %d (%s); "
                "migrating without a copy",
                self.path,
                version,
                exc,
            )
            return
        log.warning(
            "upgrading the database from schema version %d to %d; the old one is kept as %s",
            version,
            len(MIGRATIONS),
            target,
        )

    @_converts_errors
    def reclaim_free_pages(self) -> int:
        """Give free pages back to the file system, ``RECLAIM_STEP_PAGES`` at a time, each
        step its own write (``auto_vacuum = INCREMENTAL`` files; in one made before that, the
        first step frees nothing and only ``vacuum_full`` helps), then copy what it can of
        the WAL into the database. Returns how many free pages are left."""
        free = self._free_pages()
        while free > 0:
            self._conn.execute(f"PRAGMA incremental_vacuum({RECLAIM_STEP_PAGES})").fetchall()
            left = self._free_pages()
            if left >= free:
                break  # auto_vacuum is off for this file
            free = left
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return free

    @_converts_errors
    def vacuum_full(self) -> None:
        """Rewrite the whole file (VACUUM; only while the daemon is stopped), with
        ``auto_vacuum = INCREMENTAL``: how a database made before that was set at creation
        gets it, so free pages can go back to the file system in steps (the daemon's writes
        do that at the size cap; without it the file keeps its largest size)."""
        self._conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self._conn.execute("VACUUM")
        self.incremental_vacuum = True

    @_converts_errors
    def hand_over_wal_checkpoints(self) -> None:
        """No more WAL checkpoints inside this connection's commits: a ``WalCheckpointer``
        thread runs them on a connection of its own (see ``gateway.store.wal``)."""
        self._conn.execute("PRAGMA wal_autocheckpoint = 0").fetchall()

    @_converts_errors
    def take_back_wal_checkpoints(self) -> None:
        self._conn.execute("PRAGMA wal_autocheckpoint = 1000").fetchall()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            started = time.perf_counter()
            self._conn.execute("COMMIT")
            self.last_commit_s = time.perf_counter() - started
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Hold one read transaction, so several queries see one consistent state."""
        try:
            self._conn.execute("BEGIN")
            self._conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"snapshot on {self.path}: {exc}") from exc
        try:
            yield
        finally:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")

    # --- the pipeline's write ---------------------------------------------------------------

    @_converts_errors
    def write_batch(self, batch: Batch, retention: Retention | None = None) -> None:
        """Write one pipeline batch in ONE transaction; with ``retention``, also delete
        what it allows of the oldest readings, in proportion to the readings added."""
        now = time.time()
        self.last_trim_s = 0.0
        with self._write():
            if batch.readings:
                self._insert_rows(
                    "INSERT INTO readings (ts, stream, value, expected, score, alert)",
                    list(map(_READING_ROW, batch.readings)),  # alert: a bool binds as 0/1
                )
                self._insert_rows(
                    _SUMMARY_UPSERT_HEAD, _batch_summary(batch.readings), _SUMMARY_UPSERT_TAIL
                )
                if retention is not None:
                    self._trim(retention, len(batch.readings))
            for change in batch.alerts:
                self._record_alert(change)
                if self.outbox:
                    payload = alert_payload(change, self.gateway_id)
                    self._queue(payload["id"], "alert", change.stream, payload, now)
            self._track_max_scores(batch)
            for event in batch.events:
                self._conn.execute(
                    "INSERT INTO events (ts, kind, subject, detail) VALUES (?, ?, ?, ?)",
                    (event.ts, event.kind, event.subject, _dumps(event.detail)),
                )
                if self.outbox and event.upstream:
                    event_id = uuid.uuid4().hex
                    payload = event_payload(event, self.gateway_id, event_id)
                    self._queue(event_id, "event", event.subject, payload, now)
            if batch.dead_letters:
                self.db.table("dead_letters").insert_all(
                    {
                        "ts": d.ts,
                        "source": d.source,
                        "reason": d.reason,
                        "payload": d.payload,
                        "payload_len": d.payload_len,
                        "detail": d.detail,
                    }
                    for d in batch.dead_letters
                )
            if batch.states:
                self._insert_rows(
                    "INSERT INTO stream_state (stream, model_hash, state, updated_ts)",
                    [(s, batch.state_model_hash, st, now) for s, st in batch.states.items()],
                    " ON CONFLICT(stream) DO UPDATE SET "
                    "model_hash = excluded.model_hash, state = excluded.state, "
                    "updated_ts = excluded.updated_ts",
                )
            if batch.status is not None:
                self._conn.execute(
                    "INSERT INTO status (id, snapshot, updated_ts) VALUES (1, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET snapshot = excluded.snapshot, "
                    "updated_ts = excluded.updated_ts",
                    (_dumps(batch.status), now),
                )

    def _insert_rows(self, head: str, rows: list[tuple[Any, ...]], tail: str = "") -> None:
        """``head VALUES (...), (...), ... tail`` for ``rows``, in few statements.

        Not executemany: it runs one SQLite step per row and releases the GIL around each.
        With the MQTT source thread busy, the pipeline then waited a switch interval (5 ms)
        to take the GIL back after almost every row, and scored ~200 readings/s while the
        queue filled. Multi-row statements of ``_ROWS_PER_STATEMENT``, then of halving
        sizes for the rest (so only a few statements are ever compiled), make it one step
        per up to that many rows."""
        done, size = 0, _ROWS_PER_STATEMENT
        while size * len(rows[0]) > _MAX_VARIABLES:
            size //= 2
        while done < len(rows):
            while size > len(rows) - done:
                size //= 2
            self._conn.execute(
                _multi_row_sql(head, len(rows[0]), size, tail),
                list(chain.from_iterable(rows[done : done + size])),
            )
            done += size

    def _record_alert(self, change: AlertChange) -> None:
        if change.state == "cleared":
            cursor = self._conn.execute(
                "UPDATE alerts SET cleared_ts = ?, active = 0, "
                "max_score = MAX(COALESCE(max_score, ?), ?) WHERE id = ?",
                (change.ts, change.score, change.score, change.alert_id),
            )
            if cursor.rowcount:
                return
            log.warning("alert %s cleared but never recorded as raised", change.alert_id)
        contributors = alert_payload(change, self.gateway_id)["contributors"]
        active = change.state != "cleared"
        self._conn.execute(
            "INSERT INTO alerts (id, stream, raised_ts, cleared_ts, active, score, max_score, "
            "observed, expected, band_low, band_high, unit, model, contributors) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET "
            "max_score = MAX(COALESCE(alerts.max_score, excluded.max_score), excluded.max_score)",
            (
                change.alert_id,
                change.stream,
                change.ts,
                None if active else change.ts,
                int(active),
                change.score,
                change.score,
                change.observed,
                change.expected,
                change.band[0],
                change.band[1],
                change.unit,
                change.model,
                _dumps(contributors),
            ),
        )

    def _track_max_scores(self, batch: Batch) -> None:
        """Raise ``max_score`` of active alerts that this batch's alerting readings belong to."""
        peaks: dict[str, float] = {}
        for r in batch.readings:
            if r.alert and math.isfinite(r.score):
                peaks[r.stream] = max(r.score, peaks.get(r.stream, r.score))
        for stream, peak in peaks.items():
            self._conn.execute(
                "UPDATE alerts SET max_score = MAX(COALESCE(max_score, ?), ?) "
                "WHERE active = 1 AND (stream = ? OR EXISTS (SELECT 1 FROM "
                "json_each(alerts.contributors) AS c WHERE json_extract(c.value, '$.stream') = ?))",
                (peak, peak, stream, stream),
            )

    def _queue(self, msg_id: str, kind: str, subject: str, payload: Any, now: float) -> None:
        self._conn.execute(
            "INSERT INTO outbox (msg_id, kind, subject, payload, created_ts) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(msg_id) DO NOTHING",
            (msg_id, kind, subject, _dumps(payload), now),
        )

    # --- queries for the CLI and the daemon -------------------------------------------------

    @_converts_errors
    def list_alerts(
        self,
        since_ts: float | None = None,
        stream: str | None = None,
        state: AlertState = "open",
        limit: int = 1000,
    ) -> list[AlertRow]:
        """Newest first. ``since_ts`` keeps alerts raised or cleared since then;
        ``open`` means not acknowledged (whether or not still active)."""
        if state not in ("open", "acked", "all"):
            raise ValueError(f"state must be open, acked or all, not {state!r}")
        rows = self._query(
            "SELECT * FROM alerts WHERE (:since IS NULL OR raised_ts >= :since "
            "OR cleared_ts >= :since) AND (:stream IS NULL OR stream = :stream) "
            "AND (:state = 'all' OR (:state = 'open') = (acked_ts IS NULL)) "
            "ORDER BY raised_ts DESC, id LIMIT :limit",
            {"since": since_ts, "stream": stream, "state": state, "limit": int(limit)},
        )
        return [_alert(row) for row in rows]

    @_converts_errors
    def active_alerts(self, limit: int = 10_000) -> list[AlertChange]:
        """The alerts still active (not cleared), oldest first, each as the change that
        raised it: what an output whose server forgets an alert nobody re-sends (Alertmanager)
        re-sends. Contributors that no longer parse are left out, never the alert: it is
        still open."""
        rows = self._query(
            "SELECT * FROM alerts WHERE active = 1 ORDER BY raised_ts, id LIMIT ?", [int(limit)]
        )
        return [
            AlertChange(
                alert_id=r["id"],
                stream=r["stream"],
                state="raised",
                ts=r["raised_ts"],
                score=r["score"] if r["score"] is not None else math.nan,
                observed=r["observed"],
                expected=r["expected"],
                band=(r["band_low"], r["band_high"]),
                unit=r["unit"],
                model=r["model"] or "",
                contributors=_contributions(r["contributors"]),
            )
            for r in rows
        ]

    @_converts_errors
    def count_alerts(self, state: AlertState = "open") -> int:
        """How many alerts are in ``state`` (``list_alerts`` stops at its ``limit``)."""
        where = {
            "open": " WHERE acked_ts IS NULL",
            "acked": " WHERE acked_ts IS NOT NULL",
            "all": "",
        }
        if state not in where:
            raise ValueError(f"state must be open, acked or all, not {state!r}")
        sql = "SELECT COUNT(*) FROM alerts" + where[state]  # noqa: S608 (fixed fragments)
        return int(self._conn.execute(sql).fetchone()[0])

    @_converts_errors
    def match_alert_ids(self, prefix: str, limit: int = 10) -> list[str]:
        """Alert ids starting with ``prefix`` (any length), in id order."""
        rows = self._query(
            "SELECT id FROM alerts WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
            [prefix, prefix + "\U0010ffff", limit],
        )
        return [row["id"] for row in rows]

    @_converts_errors
    def get_alert(self, alert_id: str) -> AlertRow | None:
        """By full id, or by a prefix of at least 6 characters that matches exactly one."""
        rows = list(self._query("SELECT * FROM alerts WHERE id = ?", [alert_id]))
        if not rows and len(alert_id) >= 6:
            matches = self.match_alert_ids(alert_id, limit=2)
            if len(matches) == 1:
                rows = list(self._query("SELECT * FROM alerts WHERE id = ?", matches))
        return _alert(rows[0]) if rows else None

    @_converts_errors
    def ack_alert(self, alert_id: str, note: str | None = None, new_normal: bool = False) -> bool:
        """Acknowledge an alert (full id or unique prefix). False if there is no such alert
        or it was already acknowledged (the first acknowledgement is kept). ``new_normal``:
        the operator says the new level is not a fault; the daemon adapts to it."""
        alert = self.get_alert(alert_id)
        if alert is None:
            return False
        with self._write():
            cursor = self._conn.execute(
                "UPDATE alerts SET acked_ts = ?, ack_note = ?, new_normal = ? "
                "WHERE id = ? AND acked_ts IS NULL",
                (time.time(), note, int(new_normal), alert["id"]),
            )
        return cursor.rowcount == 1

    @_converts_errors
    def pending_new_normals(self) -> list[tuple[str, str]]:
        """(alert id, stream) of "new normal" acknowledgements the daemon has not applied."""
        rows = self._conn.execute(
            "SELECT id, stream FROM alerts WHERE new_normal = 1 AND new_normal_applied_ts IS NULL"
        ).fetchall()
        return [(row[0], row[1]) for row in rows]

    @_converts_errors
    def mark_new_normals_applied(self, alert_ids: Sequence[str]) -> None:
        if not alert_ids:
            return
        with self._write():
            self._conn.executemany(
                "UPDATE alerts SET new_normal_applied_ts = ? WHERE id = ?",
                [(time.time(), alert_id) for alert_id in alert_ids],
            )

    @_converts_errors
    def list_events(
        self, since_ts: float | None = None, limit: int = 1000, kind: str | None = None
    ) -> list[EventRow]:
        """Newest first; with ``kind``, only events of that kind."""
        rows = self._query(
            "SELECT * FROM events WHERE ts >= ? AND (? IS NULL OR kind = ?) "
            "ORDER BY ts DESC, id DESC LIMIT ?",
            [since_ts if since_ts is not None else -math.inf, kind, kind, int(limit)],
        )
        return [
            EventRow(
                id=r["id"],
                ts=r["ts"],
                kind=r["kind"],
                subject=r["subject"],
                detail=json.loads(r["detail"]),
            )
            for r in rows
        ]

    @_converts_errors
    def streams(self) -> list[StreamRow]:
        """One line per stream known from readings or detector state, by name. Reads
        ``stream_summary``, ``stream_state`` and the active alerts, never the readings: its
        cost grows with the number of streams, not with how many readings are stored."""
        summaries = {
            r["stream"]: r
            for r in self._query(f"SELECT {_SUMMARY_COLUMNS} FROM stream_summary")  # noqa: S608
        }
        checkpoints = {
            r["stream"]: r["updated_ts"]
            for r in self._query("SELECT stream, updated_ts FROM stream_state")
        }
        active = {
            r["stream"]: r["id"]
            for r in self._query(
                "SELECT stream, id FROM alerts WHERE active = 1 ORDER BY raised_ts"
            )
        }
        rows = []
        for stream in sorted(summaries.keys() | checkpoints.keys()):
            summary = summaries.get(stream, {})
            rows.append(
                StreamRow(
                    stream=stream,
                    readings=summary.get("readings", 0),
                    first_ts=summary.get("first_ts"),
                    last_ts=summary.get("last_ts"),
                    last_value=summary.get("last_value"),
                    last_expected=summary.get("last_expected"),
                    last_score=summary.get("last_score"),
                    alert=bool(summary.get("last_alert", 0)),
                    active_alert=active.get(stream),
                    state_updated_ts=checkpoints.get(stream),
                )
            )
        return rows

    @_converts_errors
    def rebuild_stream_summary(self) -> None:
        """Rebuild every stream's summary from its readings (what the schema migration does
        once). Groups every reading: for a database whose readings were written around
        ``write_batch`` (a bulk load, a repair), not for the daemon's regular work."""
        with self._write():
            _build_stream_summary(self._conn)

    @_converts_errors
    def load_states(self, model_hash: str, keys: Sequence[str] | None = None) -> dict[str, bytes]:
        """Checkpointed detector state taken with this model: every entry, or those of
        ``keys`` (stream names and ``asset/NAME``), looked up by primary key. Each row as
        its stored bytes (``gateway.statecodec`` binary, or JSON text of older releases): a
        damaged text row then reaches the detector, which quarantines it, instead of making
        the whole lookup fail on text that is not UTF-8."""
        if keys is None:
            rows = self._query(
                "SELECT stream, CAST(state AS BLOB) AS state FROM stream_state "
                "WHERE model_hash = ?",
                [model_hash],
            )
            return {r["stream"]: r["state"] for r in rows}
        found: dict[str, bytes] = {}
        for i in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = list(keys[i : i + _KEYS_PER_QUERY])
            marks = ", ".join("?" * len(chunk))  # only placeholders go into the text
            sql = f"SELECT stream, CAST(state AS BLOB) AS state FROM stream_state WHERE model_hash = ? AND stream IN ({marks})"  # noqa: E501, S608
            rows = self._query(sql, [model_hash, *chunk])
            found.update((r["stream"], r["state"]) for r in rows)
        return found

    @_converts_errors
    def status(self) -> dict[str, Any] | None:
        """The daemon's last snapshot, with ``updated_ts`` (when it was written) added."""
        rows = list(self._query("SELECT snapshot, updated_ts FROM status WHERE id = 1"))
        if not rows:
            return None
        snapshot = json.loads(rows[0]["snapshot"])
        if not isinstance(snapshot, dict):
            snapshot = {"snapshot": snapshot}
        return {**snapshot, "updated_ts": rows[0]["updated_ts"]}

    @_converts_errors
    def dead_letter_counts(self) -> dict[tuple[str, str], int]:
        rows = self._query(
            "SELECT source, reason, COUNT(*) AS n FROM dead_letters GROUP BY source, reason"
        )
        return {(r["source"], r["reason"]): r["n"] for r in rows}

    @_converts_errors
    def outbox_backlog(self) -> tuple[int, float | None]:
        """Undelivered outbox rows and the creation time of the oldest one."""
        count = self._conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE delivered_ts IS NULL AND quarantined_ts IS NULL"
        ).fetchone()[0]
        oldest = self._conn.execute(
            "SELECT created_ts FROM outbox WHERE delivered_ts IS NULL "
            "AND quarantined_ts IS NULL ORDER BY seq LIMIT 1"
        ).fetchone()
        return int(count), (oldest[0] if oldest else None)

    @_converts_errors
    def outbox_parked(self) -> int:
        """Undelivered rows the broker refused at least once (see ``last_error``)."""
        return int(
            self._conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE delivered_ts IS NULL AND attempts > 0 "
                "AND quarantined_ts IS NULL"
            ).fetchone()[0]
        )

    @_converts_errors
    def outbox_quarantined(self) -> int:
        """Rows that can never be published, kept aside (``last_error`` says why)."""
        return int(
            self._conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE quarantined_ts IS NOT NULL"
            ).fetchone()[0]
        )

    # --- the outputs' side of the outbox ---------------------------------------------------
    # ``output`` names whose delivery state is meant; without it ``pending`` lists the rows
    # not yet settled for every output (what the CLI and the tests of the outbox look at).

    @_converts_errors
    def pending(self, limit: int, after_seq: int = 0, output: str | None = None) -> list[OutboxRow]:
        """Rows not yet delivered (to ``output``, or settled) with ``seq > after_seq``, oldest
        first."""
        # Text columns are read as bytes and decoded here: one row that is not valid UTF-8
        # (a damaged page, a foreign writer) would otherwise make the whole query raise, every
        # round, and hold back every row behind it.
        columns = (
            "SELECT o.seq, CAST(o.msg_id AS BLOB), CAST(o.kind AS BLOB), "
            "CAST(o.subject AS BLOB), CAST(o.payload AS BLOB), o.created_ts, "
        )
        if output is None:
            sql = columns + (
                "o.attempts FROM outbox AS o WHERE o.delivered_ts IS NULL "
                "AND o.quarantined_ts IS NULL AND o.seq > ? ORDER BY o.seq LIMIT ?"
            )
            params: tuple[Any, ...] = (after_seq, int(limit))
        else:
            sql = columns + f"COALESCE(d.attempts, 0) {_PENDING_FOR} AND o.seq > ? "
            sql += "ORDER BY o.seq LIMIT ?"
            params = (output, after_seq, int(limit))
        return [_outbox_row(*row) for row in self._conn.execute(sql, params).fetchall()]

    @_converts_errors
    def mark_delivered(self, seqs: Sequence[int], output: str = DEFAULT_OUTPUT) -> None:
        if not seqs:
            return
        now = time.time()
        with self._write():
            self._conn.executemany(
                "INSERT INTO deliveries (output, seq, delivered_ts) VALUES (?, ?, ?) "
                "ON CONFLICT(output, seq) DO UPDATE SET delivered_ts = excluded.delivered_ts "
                "WHERE deliveries.delivered_ts IS NULL",
                [(output, seq, now) for seq in seqs],
            )
            self._settle(seqs, now)

    @_converts_errors
    def quarantine(self, seq: int, reason: str, output: str = DEFAULT_OUTPUT) -> None:
        """Stop sending one row to ``output`` for good: it stays with its reason."""
        now = time.time()
        with self._write():
            self._conn.execute(
                "INSERT INTO deliveries (output, seq, quarantined_ts, attempts, last_error) "
                "VALUES (?, ?, ?, 1, ?) ON CONFLICT(output, seq) DO UPDATE SET "
                "quarantined_ts = excluded.quarantined_ts, attempts = deliveries.attempts + 1, "
                "last_error = excluded.last_error WHERE deliveries.delivered_ts IS NULL",
                (output, seq, now, reason[:500]),
            )
            self._conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                (reason[:500], seq),
            )
            self._settle([seq], now)

    @_converts_errors
    def record_failure(self, seq: int, error: str, output: str = DEFAULT_OUTPUT) -> None:
        with self._write():
            self._conn.execute(
                "INSERT INTO deliveries (output, seq, attempts, last_error) VALUES (?, ?, 1, ?) "
                "ON CONFLICT(output, seq) DO UPDATE SET attempts = deliveries.attempts + 1, "
                "last_error = excluded.last_error",
                (output, seq, error[:500]),
            )
            self._conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                (error[:500], seq),
            )

    def _settle(self, seqs: Sequence[int], now: float) -> None:
        """Mark the rows every configured output is done with: delivered if each delivered
        it, quarantined if one of them quarantined it. Inside the caller's transaction."""
        names, count = json.dumps(list(self.outputs)), len(self.outputs)
        self._conn.executemany(
            _SETTLE, [{"names": names, "count": count, "now": now, "seq": s} for s in seqs]
        )

    @_converts_errors
    def settle_outbox(self) -> int:
        """Settle every unsettled row the configured outputs are all done with (after an
        output was taken out of the configuration); how many were settled."""
        with self._write():
            seqs = [
                r[0]
                for r in self._conn.execute(
                    "SELECT DISTINCT d.seq FROM deliveries AS d JOIN outbox AS o ON o.seq = d.seq "
                    "WHERE o.delivered_ts IS NULL AND o.quarantined_ts IS NULL"
                ).fetchall()
            ]
            before = self._conn.total_changes
            self._settle(seqs, time.time())
            return self._conn.total_changes - before

    @_converts_errors
    def output_backlog(self, output: str) -> dict[str, Any]:
        """One output's share of the outbox: rows still to send (``backlog``, the oldest's
        ``oldest_pending_ts``), ``parked`` (refused at least once, retried), ``delivered``
        and ``quarantined`` (rows it will never send)."""
        pending = self._conn.execute(
            f"SELECT COUNT(*), MIN(o.created_ts), SUM(COALESCE(d.attempts, 0) > 0) {_PENDING_FOR}",
            (output,),
        ).fetchone()
        done = self._conn.execute(
            "SELECT COUNT(delivered_ts), COUNT(quarantined_ts) FROM deliveries WHERE output = ?",
            (output,),
        ).fetchone()
        return {
            "backlog": int(pending[0]),
            "oldest_pending_ts": pending[1],
            "parked": int(pending[2] or 0),
            "delivered": int(done[0]),
            "quarantined": int(done[1]),
        }

    # --- retention --------------------------------------------------------------------------

    @_converts_errors
    def prune(
        self,
        readings_retention_s: float,
        max_db_size_bytes: int,
        *,
        state_retention_s: float | None = None,
        max_states: int | None = None,
        now: float | None = None,
        chunk: int = 10_000,
        readings: bool = True,
    ) -> dict[str, int]:
        """Drop what retention allows, in short transactions so the pipeline is not stalled.

        By age: readings, events, dead letters, delivered outbox rows and quarantined ones
        (the outbox's dead letters) older than the retention; detector state not checkpointed
        for ``state_retention_s`` (a stream unseen that long). By count: the least recently
        checkpointed states past ``max_states``. By size, while the pages in use exceed the
        cap: the oldest readings, then the oldest delivered outbox rows. Alerts and
        undelivered outbox rows are never removed. ``readings=False``: readings are left to
        ``write_batch``'s trimming (the daemon), only the other tables are pruned here.
        """
        now = time.time() if now is None else now
        cutoff = now - readings_retention_s
        states_expired = 0
        if state_retention_s is not None:
            states_expired = self._delete_chunks(
                "DELETE FROM stream_state WHERE stream IN "
                "(SELECT stream FROM stream_state WHERE updated_ts < ? LIMIT ?)",
                now - state_retention_s,
                chunk,
            )
        states_over_count = 0
        if max_states is not None:
            with self._write():
                states_over_count = self._conn.execute(
                    "DELETE FROM stream_state WHERE stream IN (SELECT stream FROM stream_state "
                    "ORDER BY updated_ts DESC LIMIT -1 OFFSET ?)",
                    (max_states,),
                ).rowcount
        counts = {
            "states_expired": states_expired,
            "states_over_count": states_over_count,
            "readings_expired": self._expire_readings(cutoff, chunk) if readings else 0,
            "events_expired": self._delete_chunks(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ? LIMIT ?)",
                cutoff,
                chunk,
            ),
            "dead_letters_expired": self._delete_chunks(
                "DELETE FROM dead_letters WHERE id IN "
                "(SELECT id FROM dead_letters WHERE ts < ? LIMIT ?)",
                cutoff,
                chunk,
            ),
            "outbox_expired": self._delete_chunks(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox "
                "WHERE delivered_ts IS NOT NULL AND delivered_ts < ? LIMIT ?)",
                cutoff,
                chunk,
            ),
            "outbox_quarantine_expired": self._delete_chunks(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox "
                "WHERE quarantined_ts IS NOT NULL AND quarantined_ts < ? LIMIT ?)",
                cutoff,
                chunk,
            ),
            "readings_over_size": 0,
            "outbox_over_size": 0,
        }
        oldest: dict[str, Callable[[], int]] = {
            "outbox_over_size": lambda: self._delete_oldest_delivered(chunk),
        }
        if readings:
            oldest = {
                "readings_over_size": lambda: self._delete_oldest_readings(math.inf, chunk),
                **oldest,
            }
        elif self._conn.execute("SELECT 1 FROM readings LIMIT 1").fetchone() is not None:
            # The writes trim readings to the cap; delivered outbox rows go only once no
            # reading is left to go first, as when this prune deletes readings itself.
            oldest = {}
        for counter, delete in oldest.items():
            while self.used_bytes() > max_db_size_bytes:
                deleted = delete()
                if not deleted:
                    break
                counts[counter] += deleted
        if readings and any(counts.values()):
            # Every free page back at once; the daemon's writes do it in steps instead.
            self._conn.execute("PRAGMA incremental_vacuum").fetchall()
        used = self.used_bytes()
        if used > max_db_size_bytes and oldest:
            log.warning(
                "the database uses %d bytes, over its %d cap, with every reading allowed pruned",
                used,
                max_db_size_bytes,
            )
        return counts

    def _expire_readings(self, cutoff: float, chunk: int) -> int:
        total = 0
        while True:
            deleted = self._delete_oldest_readings(cutoff, chunk)
            total += deleted
            if deleted < chunk:
                return total

    def _delete_oldest_readings(self, before: float, chunk: int) -> int:
        """Delete up to ``chunk`` of the oldest readings older than ``before`` (and take them
        out of ``stream_summary``), in a transaction of their own."""
        with self._write():
            return self._drop_oldest_readings(before, chunk)

    def _drop_oldest_readings(self, before: float, chunk: int) -> int:
        """In the caller's transaction: delete up to ``chunk`` of the oldest readings older
        than ``before``, and take them out of ``stream_summary``: one statement for all the
        streams they belong to (executemany would step, and release the GIL, once per
        stream)."""
        lost = dict(self._conn.execute(_COUNT_OLDEST_READINGS, (before, chunk)).fetchall())
        if not lost:
            return 0
        deleted = self._conn.execute(_DELETE_OLDEST_READINGS, (before, chunk)).rowcount
        oldest_left = self._conn.execute("SELECT MIN(ts) FROM readings").fetchone()[0]
        per_stream = json.dumps(lost)
        self._conn.execute(
            "UPDATE stream_summary SET readings = readings - lost.value, "
            "first_ts = MAX(first_ts, COALESCE(?, first_ts)) "
            "FROM json_each(?) AS lost WHERE stream_summary.stream = lost.key",
            (oldest_left, per_stream),
        )
        self._conn.execute(
            "DELETE FROM stream_summary WHERE readings <= 0 "
            "AND stream IN (SELECT key FROM json_each(?))",
            (per_stream,),
        )
        return int(deleted)

    def _trim(self, retention: Retention, inserted: int) -> None:
        """Retention as readings are written, in the batch's own transaction and bounded by
        its size: while the pages in use exceed the cap, the oldest readings go (a quarter
        more than the batch added, so the file comes back under the cap and stays there);
        otherwise those older than ``retention.expire_before``. Free pages beyond a small
        slack are given back in steps (``auto_vacuum = INCREMENTAL`` files only); below it
        they are reused by the next inserts, so the file does not grow past the cap."""
        started = time.perf_counter()
        page = self._page_size()
        used = self._used_pages() * page
        limit = min(inserted + max(TRIM_EXTRA, inserted // 4), TRIM_MAX)
        self.expiry_pending = retention.expire_before > -math.inf
        self.over_cap_bytes = 0
        if used > retention.max_bytes:
            # Checkpoint rows grow the pages in use too (a slice of them rides in the same
            # batch, each larger as its stream's history fills): also as many readings as
            # the overshoot takes, within TRIM_MAX.
            over = (used - retention.max_bytes) // READING_BYTES
            limit = min(limit + over, TRIM_MAX)
            dropped = self._drop_oldest_readings(math.inf, limit)
            self.trimmed_over_size += dropped
            if dropped < limit:  # no readings are left to delete: is that enough?
                self.over_cap_bytes = max(0, self._used_pages() * page - retention.max_bytes)
        elif self.expiry_pending:
            expired = self._drop_oldest_readings(retention.expire_before, limit)
            self.trimmed_expired += expired
            self.expiry_pending = expired == limit  # maybe more, for the next batch
        if self.incremental_vacuum:
            free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
            if free * page > VACUUM_SLACK * retention.max_bytes:
                self._conn.execute(f"PRAGMA incremental_vacuum({VACUUM_STEP_PAGES})").fetchall()
        self.last_trim_s = time.perf_counter() - started

    def _page_size(self) -> int:
        if not self._page:
            self._page = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        return self._page

    def _free_pages(self) -> int:
        return int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])

    def _used_pages(self) -> int:
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        return int(pages) - self._free_pages()

    def _delete_oldest_delivered(self, chunk: int) -> int:
        with self._write():
            return self._conn.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox "
                "WHERE delivered_ts IS NOT NULL ORDER BY delivered_ts LIMIT ?)",
                (chunk,),
            ).rowcount

    def _delete_chunks(self, sql: str, cutoff: float, chunk: int) -> int:
        total = 0
        while True:
            with self._write():
                deleted = self._conn.execute(sql, (cutoff, chunk)).rowcount
            total += deleted
            if deleted < chunk:
                return total

    @_converts_errors
    def used_bytes(self) -> int:
        """Bytes of pages in use (the file minus its free list)."""
        return self._used_pages() * self._page_size()

    def health(self, full: bool = False) -> Health:
        """Check the database as it is (``PRAGMA quick_check``, with ``full``
        ``integrity_check``) and gather what ``db check`` reports. Never raises for a damaged
        file: what went wrong, wherever in the file it raised, is the check's answer."""
        check = _CHECKS[full]
        try:
            problems = _check_lines(self._conn, full)
        except sqlite3.Error as exc:
            return Health(check, (_readable(exc),), 0, 0, {}, 0, None, None)
        kept = () if problems == ["ok"] else tuple(problems[:_HEALTH_PROBLEMS])
        try:
            in_use, free = self.used_bytes(), self._free_pages() * self._page_size()
            tables = [
                r[0]
                for r in self._conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY rowid"
                )
                if r[0] not in _BOOKKEEPING_TABLES
            ]
            rows = {t: self._count(t) for t in tables}
            backlog, oldest = self.outbox_backlog()
            recoveries = self.list_events(kind="database_recovered", limit=1)
        except (sqlite3.Error, StorageError, ValueError) as exc:  # ValueError: text, JSON
            # A damaged file raises from anywhere: that too is the check's answer.
            return Health(check, (*kept, _readable(exc)), 0, 0, {}, 0, None, None)
        return Health(
            check, kept, in_use, free, rows, backlog, oldest, recoveries[0] if recoveries else None
        )

    def _count(self, table: str) -> int:
        sql = f"SELECT COUNT(*) FROM {_quoted(table)}"  # noqa: S608 (a quoted identifier)
        return int(self._conn.execute(sql).fetchone()[0])

    @_converts_errors
    def readings_window(
        self, stream: str, since_ts: float, limit: int = READINGS_WINDOW_MAX
    ) -> list[tuple[float, float | None, float | None, float | None, bool]]:
        """(ts, value, expected, score, alert) of ``stream`` since ``since_ts``, oldest first:
        the newest ``limit`` of them (a range of the (ts, stream) index, read backwards)."""
        rows = self._conn.execute(
            "SELECT ts, value, expected, score, alert FROM readings "
            "WHERE stream = ? AND ts >= ? ORDER BY ts DESC, id DESC LIMIT ?",
            (stream, since_ts, int(limit)),
        ).fetchall()
        rows.reverse()
        return [
            (ts, value, expected, score, bool(alert)) for ts, value, expected, score, alert in rows
        ]

    @_converts_errors
    def streams_with_readings(self, since_ts: float, limit: int = 20) -> list[str]:
        """Names of the streams with readings since ``since_ts``, in name order, at most
        ``limit``."""
        rows = self._conn.execute(
            "SELECT DISTINCT stream FROM readings WHERE ts >= ? ORDER BY stream LIMIT ?",
            (since_ts, int(limit)),
        )
        return [r[0] for r in rows]


def _quoted(name: str) -> str:
    """An SQL identifier for a name read from the file itself (a table in sqlite_master)."""
    return '"' + name.replace('"', '""') + '"'


def _contributions(text: str | None) -> tuple[Contribution, ...]:
    """Stored contributors (``alert_payload``'s form) back as ``Contribution``; what does not
    parse is left out."""
    try:
        items = json.loads(text or "[]")
    except ValueError:
        return ()
    found = []
    for c in items if isinstance(items, list) else ():
        try:
            low, high = c["band"]
            found.append(
                Contribution(
                    stream=str(c["stream"]),
                    observed=c["observed"],
                    expected=c["expected"],
                    band=(low, high),
                    share=float(c.get("share") or 0.0),
                    unit=c.get("unit"),
                    reason=str(c.get("reason") or "level"),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(found)


def _alert(row: dict[str, Any]) -> AlertRow:
    return AlertRow(
        id=row["id"],
        stream=row["stream"],
        raised_ts=row["raised_ts"],
        cleared_ts=row["cleared_ts"],
        active=bool(row["active"]),
        score=row["score"],
        max_score=row["max_score"],
        observed=row["observed"],
        expected=row["expected"],
        band_low=row["band_low"],
        band_high=row["band_high"],
        unit=row["unit"],
        model=row["model"],
        contributors=json.loads(row["contributors"]),
        acked_ts=row["acked_ts"],
        ack_note=row["ack_note"],
        new_normal=bool(row["new_normal"]),
    )
