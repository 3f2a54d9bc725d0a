"""The `liquid-gateway` command line (also `python -m gateway`).

Exit codes: 0 ok (also for empty results), 1 runtime error, 2 usage, 78 configuration.
Query commands open the database read-only (WAL readers never block the daemon); only
`alerts ack` writes, in one short transaction.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway import __version__
from gateway.errors import ConfigError, GatewayError, ModelError, StorageError
from gateway.ops.liveness import still_running

if TYPE_CHECKING:  # the config schema (pydantic) is imported by the commands that load one:
    from gateway.config import Config, Located  # version, --help, completion start without it
    from gateway.config.locate import DatabaseLocation
    from gateway.store.database import Durability

EXIT_RUNTIME = 1
EXIT_CONFIG = 78
EXIT_DEGRADED = 3  # status: the gateway answered, but something is wrong (see its flags)
EXIT_DATA = 65  # replay: the input file is not a table it can score (sysexits EX_DATAERR)
DEFAULT_CONFIG = Path("/etc/liquid-gateway/liquid-gateway.yaml")

# Help text is plain text: with Rich markup on, "[default: ...]" or "(needs [plot])" would be
# eaten as markup tags. Every Typer of this CLI is made here, with markup off.
_PLAIN: dict[str, Any] = {"no_args_is_help": True, "rich_markup_mode": None}

app = typer.Typer(
    help="Liquid Gateway: sensors in, liquid-network anomaly detection, alerts upstream.",
    add_completion=True,
    pretty_exceptions_enable=False,
    **_PLAIN,
)
alerts_app = typer.Typer(help="List, show and acknowledge alerts.", **_PLAIN)
config_app = typer.Typer(help="Check and show the configuration.", **_PLAIN)
model_app = typer.Typer(help="The anomaly model.", **_PLAIN)
events_app = typer.Typer(help="Drift, gaps, ports lost and recovered, injected faults.", **_PLAIN)
app.add_typer(alerts_app, name="alerts")
app.add_typer(events_app, name="events")
app.add_typer(config_app, name="config")
db_app = typer.Typer(help="Check, prune and vacuum the database.", **_PLAIN)
app.add_typer(model_app, name="model")
app.add_typer(db_app, name="db")


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class AlertState(StrEnum):
    open = "open"
    acked = "acked"
    all = "all"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file [default: $LIQUID_GATEWAY_CONFIG, else "
        "/etc/liquid-gateway/liquid-gateway.yaml].",
        show_default=False,
    ),
]
DemoOption = Annotated[
    bool, typer.Option("--demo", help="Use the embedded demo config (simulated sensors).")
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
# The one rule for times is gateway/times.py: UTC marked Z unless --local, always labelled.
UtcOption = Annotated[
    bool,
    typer.Option(
        "--utc/--local",
        help="Times in UTC, marked Z (the default), or in this machine's time zone with its "
        "offset, e.g. +05:30.",
    ),
]


# --- helpers ---------------------------------------------------------------------------


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _config_path(path: Path | None, demo: bool = False) -> Path:
    if demo:
        from gateway.config.locate import demo_config_path

        return demo_config_path()
    if path is not None:
        return path
    env = os.environ.get("LIQUID_GATEWAY_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def _default_config() -> Config:
    from gateway.config import Config

    return Config()


def _load(path: Path | None, demo: bool = False) -> tuple[Config, Path]:
    located, file = _load_located(path, demo)
    return located.config, file


def _load_located(path: Path | None, demo: bool = False) -> tuple[Located, Path]:
    from gateway.config import load_located

    file = _config_path(path, demo)
    try:
        return load_located(file), file
    except ConfigError as exc:
        _config_exit(exc.issues)
        raise AssertionError("unreachable") from exc


def _config_exit(issues: list[Any]) -> None:
    for issue in issues:
        typer.echo(str(issue), err=True)
    raise typer.Exit(EXIT_CONFIG)


def _database(path: Path | None, demo: bool = False) -> DatabaseLocation:
    """Where the config keeps the database, for commands that only read it: without the
    whole schema when that is plain (gateway/config/locate.py), else by the full loader,
    which exits 78 naming what is wrong."""
    from gateway.config.locate import DatabaseLocation, locate_database

    found = locate_database(_config_path(path, demo))
    if found is None:
        cfg, _ = _load(path, demo)
        found = DatabaseLocation(cfg.gateway.id, cfg.database_path)
    return found


def _open_store(path: Path, durability: Durability = "normal", write: bool = False) -> Any:
    """The database at ``path``, read-only unless ``write`` (``durability`` is the config's
    storage.durability: it matters to a writer only)."""
    from gateway.store import Store

    if not path.exists():
        raise _fail(f"no database at {path}: has the gateway run with this config?", 1)
    try:
        return Store.open(path, durability, read_only=not write)
    except StorageError as exc:
        raise _fail(str(exc), EXIT_RUNTIME) from exc


def _when(ts: float | None, local: bool = False) -> str:
    """A time for a table or a sentence, with its offset (``Z`` for UTC)."""
    from gateway.times import shown

    return shown(ts, local)


def _iso(ts: float | None, local: bool = False) -> str | None:
    """A time for JSON and CSV: ISO 8601 with milliseconds and offset."""
    from gateway.times import iso

    return None if ts is None else iso(ts, local)


def _ago(ts: float | None) -> str:
    if ts is None:
        return "-"
    seconds = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "), default=str)
    return str(value)


def _emit(rows: list[dict[str, Any]], columns: list[str], fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if fmt is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        # Nested values (an alert's contributors) as JSON, never as Python's repr.
        writer.writerows(
            {k: json.dumps(v, default=str) if isinstance(v, dict | list) else v
             for k, v in row.items()}
            for row in rows
        )  # fmt: skip
        typer.echo(buffer.getvalue(), nl=False)
        return
    if not rows:
        typer.echo("(none)")
        return
    cells = [[_num(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    typer.echo("\n".join(lines))  # one write: a thousand echo calls cost more than the query


def _parse_duration(text: str) -> float:
    from gateway.config import parse_duration

    return parse_duration(text)


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return time.time() - _parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from exc


# --- run -------------------------------------------------------------------------------


@app.command()
def run(
    config: ConfigOption = None,
    demo: DemoOption = False,
    duration: Annotated[
        str | None, typer.Option(help="Stop after this long (e.g. 90s, 5m); default: forever.")
    ] = None,
    utc: UtcOption = True,
) -> None:
    """Run the gateway daemon (SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the config)."""
    from gateway.config.checks import file_issues

    located, path = _load_located(config, demo)
    cfg = located.config
    missing = file_issues(located)
    if missing:
        _config_exit(missing)
    seconds = None
    if duration is not None:
        try:
            seconds = _parse_duration(duration)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--duration") from exc
    from gateway.cli.logs import setup_logging

    setup_logging(cfg.gateway.log_level, local=not utc)
    from gateway.ops.daemon import run_gateway

    try:
        code = run_gateway(cfg, path, seconds)
    except GatewayError as exc:
        raise _fail(str(exc), EXIT_RUNTIME) from exc
    if demo:
        typer.echo(
            f"demo data in {cfg.database_path}; try: liquid-gateway alerts list --demo", err=True
        )
    raise typer.Exit(code)


# --- alerts ----------------------------------------------------------------------------

# The detector's tests (records.Contribution.reason), in an operator's words.
_REASON_WORDS = {
    "level": "far from its usual level",
    "prediction": "not what the model expected next",
    "stuck": "the same value far longer than usual",
    "relation": "no longer moving with the asset's other channels",
}


def _rarity(score: Any) -> str:
    """What a score means, for people: "as rare as one healthy block of readings in 10^D"."""
    if not isinstance(score, int | float) or score <= 0.0:
        return "-"
    from gateway.score import NATS_PER_DIGIT, surprise_of

    digits = surprise_of(float(score)) / NATS_PER_DIGIT
    if not math.isfinite(digits) or digits >= 1e15:
        return "1 in 10^1e15+"  # past what a double can tell apart from a score of 1
    if digits < 10:
        return f"1 in 10^{digits:.1f}"
    return f"1 in 10^{digits:.3g}" if digits < 1e3 else f"1 in 10^{digits:.2e}"


ALERT_COLUMNS = [
    "id",
    "stream",
    "raised",
    "cleared",
    "condition",
    "acknowledged",
    "score",
    "rarity",
    "observed",
    "expected",
    "unit",
]


def _alert_row(
    alert: dict[str, Any], local: bool = False, fmt: OutputFormat = OutputFormat.table
) -> dict[str, Any]:
    """Times as ``_when`` gives them for a table, ISO 8601 for JSON and CSV (``*_ts`` stay
    seconds since the epoch)."""
    from gateway.records import alert_condition

    when = _when if fmt is OutputFormat.table else _iso
    acknowledged = bool(alert.get("acked_ts"))
    return {
        **alert,
        "id": alert["id"],
        "raised": when(alert.get("raised_ts"), local),
        "cleared": when(alert.get("cleared_ts"), local),
        "acked": when(alert.get("acked_ts"), local),
        "condition": alert_condition(bool(alert.get("active"))),
        "acknowledged": ("yes" if acknowledged else "no")
        if fmt is OutputFormat.table
        else acknowledged,
        "rarity": _rarity(alert.get("score")),
    }


@alerts_app.command("list")
def alerts_list(
    config: ConfigOption = None,
    demo: DemoOption = False,
    since: Annotated[
        str | None, typer.Option(help="Only alerts raised in this window, e.g. 1h.")
    ] = None,
    stream: Annotated[str | None, typer.Option(help="Only this stream or asset.")] = None,
    state: Annotated[
        AlertState,
        typer.Option(
            help="open: not acknowledged yet (active or cleared); acked: acknowledged; all."
        ),
    ] = AlertState.open,
    fmt: FormatOption = OutputFormat.table,
    utc: UtcOption = True,
) -> None:
    """List alerts, newest first."""
    database = _database(config, demo).database_path
    since_ts = _since(since)
    with _open_store(database) as store:
        alerts = store.list_alerts(since_ts=since_ts, stream=stream, state=state.value)
    rows = [_alert_row(a, not utc, fmt) for a in alerts]
    columns = ALERT_COLUMNS
    if fmt is not OutputFormat.table:
        columns = ALERT_COLUMNS + [
            "raised_ts",
            "cleared_ts",
            "max_score",
            "band_low",
            "band_high",
            "model",
            "acked",
            "acked_ts",
            "ack_note",
        ]
    _emit(rows, columns, fmt)


def _no_alert(database: Path, alert_id: str, unacknowledged: bool = False) -> str:
    """Why ``alert_id`` found nothing: too short a prefix, several matches, or none."""
    what = "unacknowledged alert" if unacknowledged else "alert"
    with _open_store(database) as store:
        matches = store.match_alert_ids(alert_id, limit=3)
        if unacknowledged and len(matches) == 1 and len(alert_id) >= 6:
            found = store.get_alert(alert_id)
            if found is not None and found.get("acked_ts"):
                return f"alert {found['id']} is already acknowledged"
    if len(matches) > 1:
        many = f"{len(matches)}{'+' if len(matches) == 3 else ''}"
        return f"{alert_id!r} matches {many} alerts: give more characters"
    if matches and len(alert_id) < 6:
        return (
            f"no {what} {alert_id!r}: an id prefix needs at least 6 characters "
            f"(e.g. {matches[0][:8]})"
        )
    return f"no {what} {alert_id!r}"


@alerts_app.command("show")
def alerts_show(
    alert_id: Annotated[
        str, typer.Argument(help="Alert id (or a unique prefix of 6+ characters).")
    ],
    config: ConfigOption = None,
    demo: DemoOption = False,
    fmt: FormatOption = OutputFormat.table,
    utc: UtcOption = True,
) -> None:
    """Show one alert and why it was raised, in plain words."""
    database = _database(config, demo).database_path
    local = not utc
    with _open_store(database) as store:
        alert = store.get_alert(alert_id)
    if alert is None:
        raise _fail(_no_alert(database, alert_id), EXIT_RUNTIME)
    if fmt is not OutputFormat.table:
        row = _alert_row(alert, local, fmt)
        _emit([row], list(row), fmt)
        return
    unit = f" {alert['unit']}" if alert.get("unit") else ""
    lines = [
        f"Alert {alert['id']} on {alert['stream']}",
        f"  raised   {_when(alert.get('raised_ts'), local)} with score {_num(alert.get('score'), 6)}"
        f", as rare as {_rarity(alert.get('score'))} healthy blocks of readings (peak "
        f"{_num(alert.get('max_score'), 6)}, {_rarity(alert.get('max_score'))})",
        f"  status   {'still active' if alert.get('active') else 'cleared ' + _when(alert.get('cleared_ts'), local)}"
        f", {'acknowledged ' + _when(alert.get('acked_ts'), local) if alert.get('acked_ts') else 'not acknowledged'}",
        f"  why      observed {_num(alert.get('observed'), 6)}{unit}, expected "
        f"{_num(alert.get('expected'), 6)}{unit} (normal band {_num(alert.get('band_low'), 6)}"
        f" .. {_num(alert.get('band_high'), 6)}{unit})",
        f"  model    {alert.get('model')}",
    ]
    contributors = alert.get("contributors") or []
    if contributors:
        lines.append("  channels (largest contribution first):")
        for c in contributors:
            cu = f" {c['unit']}" if c.get("unit") else ""
            why = _REASON_WORDS.get(c.get("reason") or "", "")
            lines.append(
                f"    {c['stream']}: {100 * (c.get('share') or 0):.0f}% of the score, observed "
                f"{_num(c.get('observed'), 6)}{cu}, expected {_num(c.get('expected'), 6)}{cu}"
                + (f" ({why})" if why else "")
            )
    if alert.get("ack_note"):
        lines.append(f"  note     {alert['ack_note']}")
    typer.echo("\n".join(lines))


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[
        str, typer.Argument(help="Alert id (or a unique prefix of 6+ characters).")
    ],
    config: ConfigOption = None,
    demo: DemoOption = False,
    note: Annotated[
        str | None, typer.Option(help="A note stored with the acknowledgement.")
    ] = None,
    new_normal: Annotated[
        bool,
        typer.Option(
            "--new-normal",
            help="Not a fault: the new level is normal now; the running daemon adapts to it.",
        ),
    ] = False,
) -> None:
    """Acknowledge an alert (optionally as a new normal)."""
    cfg, _ = _load(config, demo)
    with _open_store(cfg.database_path, cfg.storage.durability, write=True) as store:
        done = store.ack_alert(alert_id, note, new_normal=new_normal)
    if not done:
        raise _fail(_no_alert(cfg.database_path, alert_id, unacknowledged=True), EXIT_RUNTIME)
    typer.echo(f"acknowledged {alert_id}" + (" as a new normal" if new_normal else ""))


@events_app.command("list")
def events_list(
    config: ConfigOption = None,
    demo: DemoOption = False,
    since: Annotated[str | None, typer.Option(help="Only events in this window, e.g. 1h.")] = None,
    fmt: FormatOption = OutputFormat.table,
    utc: UtcOption = True,
) -> None:
    """List recorded events, newest first."""
    database = _database(config, demo).database_path
    since_ts = _since(since)
    with _open_store(database) as store:
        events = store.list_events(since_ts=since_ts)
    when = _when if fmt is OutputFormat.table else _iso
    rows = [{**e, "time": when(e.get("ts"), not utc)} for e in events]
    columns = ["time", "kind", "subject", "detail"]
    if fmt is not OutputFormat.table:
        columns = ["id", "ts", "time", "kind", "subject", "detail"]
    _emit(rows, columns, fmt)


# --- status and streams ------------------------------------------------------------------


def _running(snapshot: dict[str, Any]) -> bool:
    """The daemon that wrote this snapshot is alive (a stale snapshot included: it may be
    unable to write, see ``still_running``)."""
    return still_running(snapshot, time.time()) != "stopped"


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for key, sub in value.items():
            out.extend(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        return [(prefix, json.dumps(value, default=str))]
    return [(prefix, value)]


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@app.command()
def status(
    config: ConfigOption = None,
    demo: DemoOption = False,
    fmt: FormatOption = OutputFormat.table,
    utc: UtcOption = True,
) -> None:
    """Is it running: uptime, per-source health, last reading, backlog, upstream, degraded flags."""
    location = _database(config, demo)
    local = not utc
    with _open_store(location.database_path) as store, store.snapshot():
        snapshot = store.status() or {}
        backlog, oldest = store.outbox_backlog()
        quarantined = store.outbox_quarantined()
        dead = store.dead_letter_counts()
        open_alerts = store.count_alerts("open")  # not capped at a page of alerts
    snapshot.pop("stream_views", None)  # that is what `streams` shows
    liveness = still_running(snapshot, time.time())
    running = liveness != "stopped"
    degraded = list(snapshot.get("degraded") or [])
    if liveness == "stale":
        degraded.insert(
            0,
            f"running, but its status is {_ago(snapshot['updated_at'])} old: it cannot write "
            "its database (disk full? see its log)",
        )
    if not running and snapshot.get("stopped_at"):
        degraded = []  # a clean stop: sources closed on purpose, nothing is wrong
    elif not running and snapshot:
        degraded.insert(0, "not running (no clean stop recorded: crashed or killed?)")
    snapshot = {
        **snapshot,
        "running": running,
        "uptime_s": (time.time() - snapshot["started_at"])
        if running and snapshot.get("started_at")
        else None,
        "outbox_backlog": backlog,
        "outbox_oldest": oldest,
        "outbox_quarantined": quarantined,
        "open_alerts": open_alerts,
        "dead_letters_stored": {f"{s}/{r}": n for (s, r), n in dead.items()},
        "degraded": degraded,
    }
    if fmt is not OutputFormat.table:  # beside the epoch seconds, the times as ISO 8601
        for key in ("started_at", "updated_at", "stopped_at"):
            if snapshot.get(key) is not None:
                snapshot[key.removesuffix("_at")] = _iso(snapshot[key], local)
    if fmt is OutputFormat.json:  # a list of one, like every other command's JSON
        typer.echo(json.dumps([snapshot], indent=2, default=str))
    elif fmt is OutputFormat.csv:
        _emit([{"key": k, "value": v} for k, v in _flatten(snapshot)], ["key", "value"], fmt)
    elif "updated_at" not in snapshot:
        typer.echo(f"gateway {location.gateway_id}: no status yet (has it run?)")
    else:
        typer.echo(_status_table(snapshot, backlog, oldest, local))
    if degraded:  # for scripts and monitoring: the same answer in every format
        raise typer.Exit(EXIT_DEGRADED)


def _status_table(
    s: dict[str, Any], backlog: int, oldest: float | None, local: bool = False
) -> str:
    if s["running"]:
        state = f"running, pid {s.get('pid', '?')}, up {_duration(s['uptime_s'] or 0)}"
    else:
        state = f"NOT RUNNING (last status {_ago(s['updated_at'])})"
    upstream = s.get("upstream")
    if upstream is None:
        link = "none (alerts kept locally)"
    elif upstream.get("connected"):
        link = "connected"
    else:
        link = "DISCONNECTED" + (
            f": {upstream['last_error']}" if upstream.get("last_error") else ""
        )
    alerts = s.get("alerts") or {}
    lines = [
        f"gateway   {s.get('gateway')}  {state}",
        f"started   {_when(s.get('started_at'), local)}",
        f"model     {s.get('model')} on {s.get('runtime')}"
        + (f", {s['detector_core']} detector core" if s.get("detector_core") else ""),
        f"readings  {s.get('readings', 0)} scored, {s.get('streams', 0)} streams, "
        f"{s.get('dropped_readings', 0)} dropped, queue {s.get('queue_depth', 0)}",
        f"alerts    {s['open_alerts']} not acknowledged; since start raised "
        f"{alerts.get('raised', 0)}, cleared {alerts.get('cleared', 0)}",
        f"upstream  {link}; outbox backlog {backlog}"
        + (f", oldest {_ago(oldest)}" if oldest else "")
        + (
            f"; {s['outbox_quarantined']} quarantined (never publishable)"
            if s.get("outbox_quarantined")
            else ""
        ),
    ]
    others = {n: o for n, o in (s.get("outputs") or {}).items() if n != "upstream"}
    for name, output in others.items():
        health = "connected" if output.get("connected") else "DISCONNECTED"
        if not output.get("connected") and output.get("last_error"):
            health += f": {output['last_error']}"
        lines.append(
            f"output    {name}: {health}; backlog {output.get('backlog') or 0}"
            + (f", {output['quarantined']} quarantined" if output.get("quarantined") else "")
        )
    sources = s.get("sources") or {}
    if sources:
        lines.append("sources")
        width = max(len(n) for n in sources)
        for name, src in sources.items():
            last = src.get("last_reading_ts")
            health = "connected" if src.get("connected", True) else "DISCONNECTED"
            lines.append(
                f"  {name.ljust(width)}  {src.get('type', '?'):<8}  {health:<12}  "
                f"last reading {_ago(last) if last else 'never'}, "
                f"{src.get('readings', 0)} readings, {src.get('dead_letters_total', 0)} "
                f"parse errors, {src.get('reconnects', 0)} reconnects"
            )
    for key, count in s["dead_letters_stored"].items():
        lines.append(f"dead      {key}: {count} stored")
    if s.get("metrics") and s["running"]:
        lines.append(f"metrics   {s['metrics']}")
    if s.get("last_reload"):
        r = s["last_reload"]
        lines.append(
            f"reload    {_when(r.get('at'), local)}: "
            + ("ok" if r.get("ok") else f"REJECTED ({r.get('errors')} errors, old config kept)")
        )
    flags = s["degraded"]
    if not s["running"] and s.get("stopped_at") and not flags:
        lines.append(f"health    stopped cleanly at {_when(s['stopped_at'], local)}")
    else:
        lines.append("health    " + ("ok" if not flags else "DEGRADED: " + "; ".join(flags)))
    return "\n".join(lines)


@app.command()
def streams(
    config: ConfigOption = None,
    demo: DemoOption = False,
    fmt: FormatOption = OutputFormat.table,
    utc: UtcOption = True,
) -> None:
    """Every stream: last value, expected value, baseline, score, alert state."""
    database = _database(config, demo).database_path
    with _open_store(database) as store, store.snapshot():
        # stream_state also holds per-asset state under "asset/NAME": not a stream.
        rows: list[dict[str, Any]] = [
            dict(r) for r in store.streams() if not r["stream"].startswith("asset/")
        ]
        views = (store.status() or {}).get("stream_views") or {}
    for row in rows:
        view = views.get(row["stream"]) or {}
        row["last"] = _ago(row.get("last_ts"))
        row["last_time"] = _iso(row.get("last_ts"), not utc)
        row["baseline"] = view.get("baseline")
        row["scale"] = view.get("scale")
        row["asset"] = view.get("asset")
        row["score"] = view.get("score", row.get("last_score"))
        if row.get("alert") or view.get("alert"):
            row["state"] = "ALERT"
        elif view.get("warming_up"):
            row["state"] = "warming up"
        else:
            row["state"] = "ok"
    columns = ["stream", "last", "last_value", "last_expected", "baseline", "score", "state"]
    if fmt is OutputFormat.table:
        columns.append("readings")
    else:
        columns += ["readings", "last_ts", "last_time", "scale", "asset", "active_alert"]
    _emit(rows, columns, fmt)


@alerts_app.command("export")
def alerts_export(
    config: ConfigOption = None,
    demo: DemoOption = False,
    since: Annotated[
        str | None, typer.Option(help="Only alerts raised or cleared in this window, e.g. 7d.")
    ] = None,
    stream: Annotated[str | None, typer.Option(help="Only this stream or asset.")] = None,
    state: Annotated[
        AlertState,
        typer.Option(
            help="open: not acknowledged yet (active or cleared); acked: acknowledged; all."
        ),
    ] = AlertState.all,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="csv or json (table means csv).")
    ] = OutputFormat.csv,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here [default: stdout].")
    ] = None,
    utc: UtcOption = True,
) -> None:
    """Every field of every matching alert, for a spreadsheet or a ticket system."""
    database = _database(config, demo).database_path
    since_ts = _since(since)
    with _open_store(database) as store:
        alerts = store.list_alerts(
            since_ts=since_ts, stream=stream, state=state.value, limit=1_000_000
        )
    # Never the table's format: an export is for scripts and spreadsheets.
    rows = [_alert_row(a, not utc, OutputFormat.json) for a in alerts]
    if fmt is OutputFormat.json:
        text = json.dumps(rows, indent=2, default=str) + "\n"
    else:
        buffer = io.StringIO()
        columns = ALERT_COLUMNS + [c for c in EXPORT_EXTRA if c not in ALERT_COLUMNS]
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "contributors": json.dumps(row.get("contributors") or [])})
        text = buffer.getvalue()
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror}", EXIT_RUNTIME) from exc
    typer.echo(f"{len(rows)} alerts written to {out}", err=True)


EXPORT_EXTRA = [
    "raised_ts",
    "cleared_ts",
    "max_score",
    "band_low",
    "band_high",
    "model",
    "acked",
    "acked_ts",
    "ack_note",
    "contributors",
]


# --- db --------------------------------------------------------------------------------


def _daemon_running(store: Any) -> bool:
    return _running(store.status() or {})


@db_app.command("check")
def db_check(
    config: ConfigOption = None,
    demo: DemoOption = False,
    full: Annotated[
        bool, typer.Option("--full", help="integrity_check (slower) instead of quick_check.")
    ] = False,
    fmt: FormatOption = OutputFormat.table,
    utc: UtcOption = True,
) -> None:
    """Check the database read-only: integrity, schema, size, rows per table (exit 1 if damaged)."""
    from gateway.store import disk_bytes

    cfg, _ = _load(config, demo)
    with _open_store(cfg.database_path) as store:
        health = store.health(full=full)
    ok = health.ok
    pragma = health.check
    rows = health.rows
    backlog, oldest = health.outbox_backlog, health.outbox_oldest
    recovery = health.last_recovery
    report = {
        "database": str(cfg.database_path),
        "ok": ok,
        "check": pragma,
        "problems": list(health.problems),
        "bytes_on_disk": disk_bytes(cfg.database_path),
        "bytes_in_use": health.bytes_in_use,
        "free_bytes": health.free_bytes,
        "rows": rows,
        "outbox_backlog": backlog,
        "outbox_oldest": oldest,
        "outbox_oldest_time": _iso(oldest, not utc),
        "last_recovery": recovery["detail"] if recovery else None,
    }
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(report, indent=2))
    elif fmt is OutputFormat.csv:
        _emit([{"key": k, "value": v} for k, v in _flatten(report)], ["key", "value"], fmt)
    else:
        lines = [
            f"database  {report['database']}",
            f"check     {pragma}: " + ("ok" if ok else "DAMAGED"),
            *(f"          {p}" for p in report["problems"]),
            f"size      {report['bytes_on_disk'] / 1e6:.1f} MB on disk (with WAL), "
            f"{report['bytes_in_use'] / 1e6:.1f} MB in use, {report['free_bytes'] / 1e6:.1f} MB free",
            "rows      " + ", ".join(f"{t} {n}" for t, n in rows.items()),
            f"outbox    {backlog} undelivered" + (f", oldest {_ago(oldest)}" if oldest else ""),
        ]
        if recovery:
            last = recovery["detail"]
            lines.append(
                f"recovered {_when(recovery['ts'], not utc)} from {last.get('moved_to')}: "
                f"{last.get('outbox_salvaged', 0)} waiting outbox rows salvaged, "
                f"{last.get('outbox_unreadable', 0)} unreadable"
                + (f" ({last['outbox_problem']})" if last.get("outbox_problem") else "")
            )
        typer.echo("\n".join(lines))
    if not ok:
        raise typer.Exit(EXIT_RUNTIME)


@db_app.command("prune")
def db_prune(
    config: ConfigOption = None,
    demo: DemoOption = False,
    older_than: Annotated[
        str | None,
        typer.Option(
            help="Drop readings, events and dead letters older than this [default: "
            "storage.readings_retention]."
        ),
    ] = None,
) -> None:
    """Apply retention now, in short transactions (alerts and undelivered rows are kept)."""
    cfg, _ = _load(config, demo)
    retention = cfg.storage.readings_retention
    if older_than is not None:
        try:
            retention = _parse_duration(older_than)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--older-than") from exc
    store = _open_store(cfg.database_path, cfg.storage.durability, write=True)
    try:
        counts = store.prune(
            retention,
            cfg.storage.max_db_size,
            state_retention_s=cfg.limits.stream_retention,
            max_states=cfg.max_checkpoint_rows,
        )
    except StorageError as exc:
        raise _fail(str(exc), EXIT_RUNTIME) from exc
    finally:
        store.close()
    removed = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v)
    typer.echo(f"pruned: {removed or 'nothing to remove'}")


@db_app.command("vacuum")
def db_vacuum(
    config: ConfigOption = None,
    demo: DemoOption = False,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="Rewrite the whole file (VACUUM); only while the daemon is stopped."
        ),
    ] = False,
) -> None:
    """Give free pages back to the file system (incremental; --full rewrites the file)."""
    from gateway.store import disk_bytes

    cfg, _ = _load(config, demo)
    store = _open_store(cfg.database_path, cfg.storage.durability, write=True)
    before = disk_bytes(cfg.database_path)
    try:
        if full:
            if _daemon_running(store):
                raise _fail(
                    "the daemon is running: a full VACUUM would block its writes; stop it "
                    "first, or run without --full",
                    EXIT_RUNTIME,
                )
            store.vacuum_full()
        store.reclaim_free_pages()  # after --full: only the WAL checkpoint is left to do
    except StorageError as exc:
        raise _fail(f"vacuum failed: {exc}", EXIT_RUNTIME) from exc
    finally:
        store.close()
    after = disk_bytes(cfg.database_path)
    typer.echo(f"vacuumed: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB on disk (with WAL)")


# --- plot ------------------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise typer.BadParameter("use WIDTHxHEIGHT in pixels, e.g. 1200x700") from exc
    if not (200 <= w <= 8000 and 150 <= h <= 8000):
        raise typer.BadParameter("width 200..8000 and height 150..8000 pixels")
    return w, h


@app.command()
def plot(
    stream: Annotated[str, typer.Argument(help="The stream to draw.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The PNG file to write.")],
    config: ConfigOption = None,
    demo: DemoOption = False,
    since: Annotated[str, typer.Option(help="How far back, e.g. 15m, 1h, 1d.")] = "1h",
    size: Annotated[str, typer.Option(help="Image size in pixels, WIDTHxHEIGHT.")] = "1200x700",
) -> None:
    """Draw a stream: signal, expected band, anomaly score and alerts, as a PNG (needs [plot])."""
    from gateway.cli.plot import PlotError, render, series

    cfg, _ = _load(config, demo)
    since_ts = _since(since)
    pixels = _size(size)
    with _open_store(cfg.database_path) as store, store.snapshot():
        rows = store.readings_window(stream, since_ts)
        alerts = store.list_alerts(since_ts=since_ts, state="all", limit=100_000)
        # Suggest only what this command would plot: streams with readings in the window.
        known = store.streams_with_readings(since_ts, limit=20) if not rows else []
    if not rows:
        hint = f" (streams: {', '.join(known[:20])})" if known and stream not in known else ""
        raise _fail(f"no readings of {stream!r} in the last {since}{hint}", EXIT_RUNTIME)
    mine = [
        a
        for a in alerts
        if a["stream"] == stream or any(c.get("stream") == stream for c in a["contributors"])
    ]
    unit = next((a["unit"] for a in mine if a["stream"] == stream and a.get("unit")), None)
    try:
        render(
            series(rows),
            out,
            title=f"{stream} on {cfg.gateway.id}, last {since} ({len(rows)} readings, "
            f"{len(mine)} alerts)",
            unit=unit,
            threshold=cfg.detector.threshold,
            raised_at=[a["raised_ts"] for a in mine],
            size=pixels,
        )
    except PlotError as exc:
        raise _fail(str(exc), EXIT_RUNTIME) from exc
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror}", EXIT_RUNTIME) from exc
    typer.echo(f"wrote {out} ({pixels[0]}x{pixels[1]}, {len(rows)} readings)", err=True)


# --- config ----------------------------------------------------------------------------


@config_app.command("validate")
def config_validate(
    file: Annotated[Path, typer.Argument(help="The YAML config file to check.")],
    user: Annotated[
        str | None,
        typer.Option(
            help="Check that this user (the service's) can read every file; needs root. "
            "Default: the user running the check."
        ),
    ] = None,
) -> None:
    """Check a config file, and what can be checked offline: files exist and are readable,
    the CA loads, no broker is still an example host, the metrics port is free. Every error
    names file:line and key path (exit 78)."""
    from gateway.config.checks import Reader, offline_issues

    try:
        reader = Reader.named(user) if user is not None else None
    except KeyError as exc:
        raise typer.BadParameter(f"no user {user!r} on this machine", param_hint="--user") from exc
    located, _ = _load_located(file)
    cfg = located.config
    report = offline_issues(located, reader)
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    if report.issues:
        _config_exit(report.issues)
    included = f", {len(located.includes)} included files" if located.includes else ""
    typer.echo(
        f"{file}: ok ({len(cfg.sources)} sources, upstream "
        f"{'configured' if cfg.upstream else 'none'}{included})"
    )
    if cfg.upstream is not None and (warning := cfg.upstream.refusal_warning()):
        typer.echo(f"warning: {warning}")
    if warning := cfg.metrics.exposure_warning():
        typer.echo(f"warning: {warning}")


@config_app.command("show")
def config_show(config: ConfigOption = None, demo: DemoOption = False) -> None:
    """Print the effective config: defaults filled in, values as used, secrets left out (their
    password_file / password_env stay). The output loads again: config show > x.yaml."""
    cfg, file = _load(config, demo)
    from gateway.config.render import show_text

    typer.echo(show_text(cfg, str(file)), nl=False)


@config_app.command("sample")
def config_sample() -> None:
    """Print a commented sample config: every key with its meaning and default, written from
    the schema, so it is always this version's. It validates as it is; sources and upstream
    are commented examples (config sample > gw.yaml, then edit)."""
    from gateway.config.render import sample_text

    typer.echo(sample_text(), nl=False)


# --- model -----------------------------------------------------------------------------


@model_app.command("info")
def model_info(
    config: ConfigOption = None,
    demo: DemoOption = False,
    path: Annotated[Path | None, typer.Option(help="A model file instead of the config's.")] = None,
) -> None:
    """Which model runs, on which runtime, with its card."""
    from gateway.model.runtime import load_model

    if path is None:
        cfg, _ = (
            _load(config, demo)
            if (config or demo or _config_path(None).exists())
            else (_default_config(), None)
        )
        path, runtime = cfg.model.path, cfg.model.runtime
    else:
        runtime = "auto"
    try:
        model = load_model(path, runtime)
    except ModelError as exc:
        raise _fail(str(exc), EXIT_RUNTIME) from exc
    card = getattr(model, "card", None)
    typer.echo(f"model     {model.model_id}")
    typer.echo(f"runtime   {model.runtime}")
    typer.echo(f"detector  {_detector_core()}")
    typer.echo(f"sha256    {model.sha256}")
    typer.echo(f"tensors   hidden {model.hidden_size}, features {model.features}")
    if card is not None:
        raw = getattr(card, "raw", None) or {}
        for key in ("parameters", "created", "command"):
            if key in raw:
                typer.echo(f"{key:<9} {raw[key]}")
        if "metrics" in raw:
            typer.echo(f"metrics   {json.dumps(raw['metrics'])}")


def _detector_core() -> str:
    """Which detector core runs here, and why when it is the slower one."""
    from gateway.detector.engine import COMPILED_PROBLEM, PURE_ENV, default_core

    core = default_core()
    if core == "compiled":
        return "compiled core"
    if not COMPILED_PROBLEM:
        return f"python core ({PURE_ENV} is set)"
    return (
        f"python core (the compiled core is {COMPILED_PROBLEM}: with gcc and python3-dev, "
        "reinstall, or in a checkout run python -m gateway.detector.build)"
    )


# --- replay ----------------------------------------------------------------------------


@app.command()
def replay(
    input_csv: Annotated[Path, typer.Argument(metavar="INPUT.csv", help="CSV with a time column.")],
    config: ConfigOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output CSV [default: stdout].")
    ] = None,
    sep: Annotated[str, typer.Option(help="Field separator of the input.")] = ",",
    time_column: Annotated[
        str | None, typer.Option(help="Name of the time column [default: auto].")
    ] = None,
    ignore_column: Annotated[
        list[str] | None,
        typer.Option(help="A numeric column that is not a channel (e.g. labels); repeatable."),
    ] = None,
) -> None:
    """Backtest: score a CSV offline with the daemon's detector (strictly causal)."""
    from gateway.model.runtime import load_model
    from gateway.pipeline.replay import BadInputError, ReplayError
    from gateway.pipeline.replay import replay as do_replay

    cfg = _load(config)[0] if config is not None else _default_config()
    if len(sep) != 1 and sep != "\\t":
        raise typer.BadParameter("the separator must be one character", param_hint="--sep")
    sep = "\t" if sep == "\\t" else sep
    try:
        model = load_model(cfg.model.path, cfg.model.runtime)
        handle = open(out, "w", newline="", encoding="utf-8") if out else sys.stdout  # noqa: SIM115
        try:
            summary = do_replay(
                input_csv,
                handle,
                cfg,
                model,
                sep=sep,
                time_column=time_column,
                ignore=tuple(ignore_column or ()),
            )
        finally:
            if out:
                handle.close()
    except BadInputError as exc:
        raise _fail(f"{input_csv}: {exc}", EXIT_DATA) from exc
    except (ReplayError, ModelError) as exc:
        raise _fail(str(exc), EXIT_RUNTIME) from exc
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror}", EXIT_RUNTIME) from exc
    rate = summary.rows / summary.seconds if summary.seconds else 0.0
    typer.echo(
        f"replayed {summary.rows} rows x {len(summary.channels)} channels in "
        f"{summary.seconds:.2f}s ({rate:,.0f} rows/s, {summary.core} detector core); "
        f"{summary.alerts_raised} alerts raised"
        + (f"; {summary.bad_cells} bad cells" if summary.bad_cells else "")
        + (f"; {summary.bad_timestamps} bad timestamps" if summary.bad_timestamps else ""),
        err=True,
    )


# --- test (a dry run) --------------------------------------------------------------------


class ReportFormat(StrEnum):
    table = "table"
    json = "json"


@app.command("test")
def dry_run_command(
    config: ConfigOption = None,
    demo: DemoOption = False,
    seconds: Annotated[
        float,
        typer.Option(min=0.5, max=60.0, help="How long to read the sources (all at once), in s."),
    ] = 5.0,
    samples: Annotated[
        int, typer.Option(min=0, max=100, help="Parsed readings to show per source.")
    ] = 5,
    fmt: Annotated[
        ReportFormat, typer.Option("--format", "-f", help="Output format.")
    ] = ReportFormat.table,
    utc: UtcOption = True,
) -> None:
    """Dry run: read every configured source for a few seconds, print the streams it would
    create, a sample of parsed readings and its dead letters by reason; writes nothing (no
    database, no upstream). Exit 1 if a source cannot connect or open its port."""
    from gateway.cli.dryrun import as_json, dry_run, render_text
    from gateway.config.checks import file_issues

    located, _ = _load_located(config, demo)
    missing = file_issues(located)
    if missing:
        _config_exit(missing)
    from gateway.cli.logs import setup_logging

    setup_logging("warning", local=not utc)  # the sources' own warnings, on stderr
    run = dry_run(located.config, seconds, samples)
    if fmt is ReportFormat.json:
        typer.echo(json.dumps(as_json(run, not utc), indent=2))
    else:
        typer.echo(render_text(run, not utc))
    for problem in run.problems:
        typer.echo(f"error: {problem}", err=True)
    if run.problems:
        raise typer.Exit(EXIT_RUNTIME)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app(prog_name="liquid-gateway")
