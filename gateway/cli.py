"""The `liquid-gateway` command line (also `python -m gateway`).

Exit codes: 0 ok (also for empty results), 1 runtime error, 2 usage, 78 configuration.
Query commands open the database read-only (WAL readers never block the daemon); only
`alerts ack` writes, in one short transaction.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import os
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway import __version__
from gateway.config import Config, demo_config_path, load_config, parse_duration, redacted
from gateway.errors import ConfigError, GatewayError, ModelError, StorageError

EXIT_RUNTIME = 1
EXIT_CONFIG = 78
DEFAULT_CONFIG = Path("/etc/liquid-gateway/liquid-gateway.yaml")

app = typer.Typer(
    help="Liquid Gateway: sensors in, liquid-network anomaly detection, alerts upstream.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
alerts_app = typer.Typer(help="List, show and acknowledge alerts.", no_args_is_help=True)
config_app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)
model_app = typer.Typer(help="The anomaly model.", no_args_is_help=True)
events_app = typer.Typer(
    help="Drift, gaps, ports lost and recovered, injected faults.", no_args_is_help=True
)
app.add_typer(alerts_app, name="alerts")
app.add_typer(events_app, name="events")
app.add_typer(config_app, name="config")
app.add_typer(model_app, name="model")


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


# --- helpers ---------------------------------------------------------------------------


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _config_path(path: Path | None, demo: bool = False) -> Path:
    if demo:
        return demo_config_path()
    if path is not None:
        return path
    env = os.environ.get("LIQUID_GATEWAY_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def _load(path: Path | None, demo: bool = False) -> tuple[Config, Path]:
    file = _config_path(path, demo)
    try:
        return load_config(file), file
    except ConfigError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(EXIT_CONFIG) from exc


def _open_store(config: Config, write: bool = False) -> Any:
    from gateway.store import Store

    path = config.database_path
    if not path.exists():
        raise _fail(f"no database at {path}: has the gateway run with this config?", 1)
    try:
        return Store.open(path, config.storage.durability, read_only=not write)
    except StorageError as exc:
        raise _fail(str(exc), EXIT_RUNTIME) from exc


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


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
    return str(value)


def _emit(rows: list[dict[str, Any]], columns: list[str], fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if fmt is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        typer.echo(buffer.getvalue(), nl=False)
        return
    if not rows:
        typer.echo("(none)")
        return
    cells = [[_num(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return time.time() - parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from exc


def setup_logging(level: str) -> None:
    """Plain lines on stderr; under systemd (JOURNAL_STREAM set) with <N> priority prefixes
    so journald files each line at the right priority."""
    journald = "JOURNAL_STREAM" in os.environ

    class _Formatter(logging.Formatter):
        PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}

        def format(self, record: logging.LogRecord) -> str:
            text = super().format(record)
            if journald:
                return f"<{self.PRIORITY.get(record.levelname, 6)}>{text}"
            return text

    fmt = "%(name)s: %(message)s" if journald else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# --- run -------------------------------------------------------------------------------


@app.command()
def run(
    config: ConfigOption = None,
    demo: DemoOption = False,
    duration: Annotated[
        str | None, typer.Option(help="Stop after this long (e.g. 90s, 5m); default: forever.")
    ] = None,
) -> None:
    """Run the gateway daemon (SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the config)."""
    cfg, path = _load(config, demo)
    seconds = None
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--duration") from exc
    setup_logging(cfg.gateway.log_level)
    from gateway.daemon import run_gateway

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

ALERT_COLUMNS = [
    "id",
    "stream",
    "raised",
    "cleared",
    "condition",
    "state",
    "score",
    "observed",
    "expected",
    "unit",
]


def _alert_row(alert: dict[str, Any]) -> dict[str, Any]:
    return {
        **alert,
        "id": alert["id"],
        "raised": _when(alert.get("raised_ts")),
        "cleared": _when(alert.get("cleared_ts")),
        "condition": "active" if alert.get("active") else "cleared",
        "state": "acked" if alert.get("acked_ts") else "open",
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
        AlertState, typer.Option(help="open (not acknowledged), acked or all.")
    ] = AlertState.open,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List alerts, newest first."""
    cfg, _ = _load(config, demo)
    since_ts = _since(since)
    store = _open_store(cfg)
    try:
        alerts = store.list_alerts(since_ts=since_ts, stream=stream, state=state.value)
    finally:
        store.close()
    rows = [_alert_row(a) for a in alerts]
    columns = ALERT_COLUMNS
    if fmt is not OutputFormat.table:
        columns = ALERT_COLUMNS + [
            "raised_ts",
            "cleared_ts",
            "max_score",
            "band_low",
            "band_high",
            "model",
            "acked_ts",
            "ack_note",
        ]
    _emit(rows, columns, fmt)


@alerts_app.command("show")
def alerts_show(
    alert_id: Annotated[
        str, typer.Argument(help="Alert id (or a unique prefix of 6+ characters).")
    ],
    config: ConfigOption = None,
    demo: DemoOption = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Show one alert and why it was raised, in plain words."""
    cfg, _ = _load(config, demo)
    store = _open_store(cfg)
    try:
        alert = store.get_alert(alert_id)
    finally:
        store.close()
    if alert is None:
        raise _fail(f"no alert {alert_id!r}", EXIT_RUNTIME)
    if fmt is not OutputFormat.table:
        _emit([_alert_row(alert)], list(_alert_row(alert)), fmt)
        return
    unit = f" {alert['unit']}" if alert.get("unit") else ""
    lines = [
        f"Alert {alert['id']} on {alert['stream']}",
        f"  raised   {_when(alert.get('raised_ts'))} UTC with score {_num(alert.get('score'), 6)}"
        f" (peak {_num(alert.get('max_score'), 6)})",
        f"  status   {'still active' if alert.get('active') else 'cleared ' + _when(alert.get('cleared_ts')) + ' UTC'}"
        f", {'acknowledged ' + _when(alert.get('acked_ts')) + ' UTC' if alert.get('acked_ts') else 'not acknowledged'}",
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
            lines.append(
                f"    {c['stream']}: {100 * (c.get('share') or 0):.0f}% of the score, observed "
                f"{_num(c.get('observed'), 6)}{cu}, expected {_num(c.get('expected'), 6)}{cu}"
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
) -> None:
    """Acknowledge an alert."""
    cfg, _ = _load(config, demo)
    store = _open_store(cfg, write=True)
    try:
        done = store.ack_alert(alert_id, note)
    finally:
        store.close()
    if not done:
        raise _fail(f"no unacknowledged alert {alert_id!r}", EXIT_RUNTIME)
    typer.echo(f"acknowledged {alert_id}")


@events_app.command("list")
def events_list(
    config: ConfigOption = None,
    demo: DemoOption = False,
    since: Annotated[str | None, typer.Option(help="Only events in this window, e.g. 1h.")] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List recorded events, newest first."""
    cfg, _ = _load(config, demo)
    since_ts = _since(since)
    store = _open_store(cfg)
    try:
        events = store.list_events(since_ts=since_ts)
    finally:
        store.close()
    rows = [{**e, "time": _when(e.get("ts"))} for e in events]
    columns = ["time", "kind", "subject", "detail"]
    if fmt is not OutputFormat.table:
        columns = ["id", "ts", "kind", "subject", "detail"]
    _emit(rows, columns, fmt)


# --- status and streams ------------------------------------------------------------------


@app.command()
def status(
    config: ConfigOption = None, demo: DemoOption = False, fmt: FormatOption = OutputFormat.table
) -> None:
    """The daemon's last status snapshot: health, counters, backlog."""
    cfg, _ = _load(config, demo)
    store = _open_store(cfg)
    try:
        snapshot = store.status() or {}
        backlog, oldest = store.outbox_backlog()
        dead = store.dead_letter_counts()
    finally:
        store.close()
    snapshot = {
        **snapshot,
        "outbox_backlog": backlog,
        "outbox_oldest": oldest,
        "dead_letters_stored": {f"{s}/{r}": n for (s, r), n in dead.items()},
    }
    if fmt is not OutputFormat.table:
        _emit([snapshot], list(snapshot), fmt)
        return
    if "updated_at" not in snapshot:
        typer.echo(f"gateway {cfg.gateway.id}: no status yet (has it run?)")
        return
    fresh = time.time() - snapshot["updated_at"] < 30
    upstream = snapshot.get("upstream")
    lines = [
        f"gateway   {snapshot.get('gateway')}  "
        f"({'running' if fresh else 'not running'}; status {_ago(snapshot['updated_at'])})",
        f"started   {_when(snapshot.get('started_at'))} UTC",
        f"model     {snapshot.get('model')} on {snapshot.get('runtime')}",
        f"readings  {snapshot.get('readings', 0)} scored, {snapshot.get('streams', 0)} streams, "
        f"{snapshot.get('dropped_readings', 0)} dropped, queue {snapshot.get('queue_depth', 0)}",
        f"alerts    raised {snapshot.get('alerts', {}).get('raised', 0)}, "
        f"cleared {snapshot.get('alerts', {}).get('cleared', 0)}",
        f"upstream  {'none' if upstream is None else ('connected' if upstream.get('connected') else 'DISCONNECTED')}"
        f"; outbox backlog {backlog}" + (f", oldest {_ago(oldest)}" if oldest else ""),
    ]
    for name, source in (snapshot.get("sources") or {}).items():
        detail = ", ".join(f"{k} {_num(v)}" for k, v in source.items() if not isinstance(v, dict))
        lines.append(f"source    {name}: {detail}")
    for key, count in snapshot["dead_letters_stored"].items():
        lines.append(f"dead      {key}: {count}")
    if snapshot.get("write_errors"):
        lines.append(f"DEGRADED  {snapshot['write_errors']} batch writes failed")
    typer.echo("\n".join(lines))


@app.command()
def streams(
    config: ConfigOption = None, demo: DemoOption = False, fmt: FormatOption = OutputFormat.table
) -> None:
    """Every stream: last value, expected value, score, alert state, reading count."""
    cfg, _ = _load(config, demo)
    store = _open_store(cfg)
    try:
        rows = store.streams()
    finally:
        store.close()
    for row in rows:
        row["last"] = _ago(row.get("last_ts"))
    _emit(
        rows,
        ["stream", "last", "last_value", "last_expected", "last_score", "alert", "readings"],
        fmt,
    )


# --- config ----------------------------------------------------------------------------


@config_app.command("validate")
def config_validate(
    file: Annotated[Path, typer.Argument(help="The YAML config file to check.")],
) -> None:
    """Check a config file; print every error with file:line and key path (exit 78)."""
    cfg, _ = _load(file)
    typer.echo(
        f"{file}: ok ({len(cfg.sources)} sources, upstream "
        f"{'configured' if cfg.upstream else 'none'})"
    )


@config_app.command("show")
def config_show(config: ConfigOption = None, demo: DemoOption = False) -> None:
    """Print the effective config (defaults filled in, secrets redacted)."""
    import yaml

    cfg, _ = _load(config, demo)
    typer.echo(yaml.safe_dump(redacted(cfg), sort_keys=False), nl=False)


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
            else (Config(), None)
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
    typer.echo(f"sha256    {model.sha256}")
    typer.echo(f"tensors   hidden {model.hidden_size}, features {model.features}")
    if card is not None:
        raw = getattr(card, "raw", None) or {}
        for key in ("parameters", "created", "command"):
            if key in raw:
                typer.echo(f"{key:<9} {raw[key]}")
        if "metrics" in raw:
            typer.echo(f"metrics   {json.dumps(raw['metrics'])}")


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
    from gateway.replay import ReplayError
    from gateway.replay import replay as do_replay

    cfg = _load(config)[0] if config is not None else Config()
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
    except (ReplayError, ModelError) as exc:
        raise _fail(str(exc), EXIT_RUNTIME) from exc
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc.strerror}", EXIT_RUNTIME) from exc
    rate = summary.rows / summary.seconds if summary.seconds else 0.0
    typer.echo(
        f"replayed {summary.rows} rows x {len(summary.channels)} channels in "
        f"{summary.seconds:.2f}s ({rate:,.0f} rows/s); {summary.alerts_raised} alerts raised"
        + (f"; {summary.bad_cells} bad cells" if summary.bad_cells else "")
        + (f"; {summary.bad_timestamps} bad timestamps" if summary.bad_timestamps else ""),
        err=True,
    )


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
