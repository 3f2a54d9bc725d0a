"""Load one YAML file into typed, frozen config objects — once, at start and on reload.

Every error names ``file:line`` and the key path (``gw.yaml:14: sources[1].baudrate: ...``).
Unknown keys and duplicate keys are errors. Durations (``90s``, ``5m``, ``1h30m``) and sizes
(``512MB``, ``1GiB``) are accepted wherever a duration or size is expected. Secrets never
live in the YAML body: they come from ``*_file`` keys (resolved against systemd's
``$CREDENTIALS_DIRECTORY`` when relative and that is set) or ``*_env`` keys naming an
environment variable, and ``config show`` redacts them.

Past this module nothing sees a dict: each component gets its own frozen section.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

# The building blocks and the sections of each source and output type live in modules of
# their own (base.py, sources/, outputs/); they are re-exported here, so that every name
# the schema had is still found in it.
from gateway.config.base import BrokerSection as BrokerSection
from gateway.config.base import Duration as Duration
from gateway.config.base import Name as Name
from gateway.config.base import PauseField as PauseField
from gateway.config.base import Section as Section
from gateway.config.base import Size as Size
from gateway.config.base import Span as Span
from gateway.config.base import SpanField as SpanField
from gateway.config.base import TlsSection as TlsSection
from gateway.config.base import check_name as check_name
from gateway.config.base import format_duration as format_duration
from gateway.config.base import format_size as format_size
from gateway.config.base import parse_duration as parse_duration
from gateway.config.base import parse_pause as parse_pause
from gateway.config.base import parse_size as parse_size
from gateway.config.base import parse_span as parse_span
from gateway.config.documents import (
    ENV_NAME_PATTERN,
    MAX_CONFIG_BYTES,
    Lines,
    construct,
    format_path,
    read_bounded,
    read_tree,
)
from gateway.config.locate import (
    DATABASE_FILE,
    DEFAULT_DATA_DIR,
    DEFAULT_GATEWAY_ID,
    is_name,
    resolved,
)
from gateway.config.locate import (
    NAME_PATTERN as NAME_PATTERN,  # re-exported: the schema's names follow it
)
from gateway.config.outputs import OUTPUT_SECTIONS as OUTPUT_SECTIONS
from gateway.config.outputs import OutputSection as OutputSection
from gateway.config.outputs.alertmanager import (
    AlertmanagerOutputSection as AlertmanagerOutputSection,
)
from gateway.config.outputs.base import _HttpOutputSection as _HttpOutputSection
from gateway.config.outputs.base import check_backoff as check_backoff
from gateway.config.outputs.mqtt import MqttOutputSection as MqttOutputSection
from gateway.config.outputs.mqtt import UpstreamSection as UpstreamSection
from gateway.config.outputs.webhook import WebhookOutputSection as WebhookOutputSection
from gateway.config.sources import SOURCE_SECTIONS as SOURCE_SECTIONS
from gateway.config.sources import SourceSection as SourceSection
from gateway.config.sources.modbus import ModbusRegister as ModbusRegister
from gateway.config.sources.modbus import ModbusSlave as ModbusSlave
from gateway.config.sources.modbus import ModbusSource as ModbusSource
from gateway.config.sources.modbus import register_count as register_count
from gateway.config.sources.mqtt import MqttSource as MqttSource
from gateway.config.sources.mqtt import SourceBrokerSection as SourceBrokerSection
from gateway.config.sources.mqtt import Subscription as Subscription
from gateway.config.sources.opcua import OPCUA_NODE_PATTERN as OPCUA_NODE_PATTERN
from gateway.config.sources.opcua import OpcuaNode as OpcuaNode
from gateway.config.sources.opcua import OpcuaSecurity as OpcuaSecurity
from gateway.config.sources.opcua import OpcuaSource as OpcuaSource
from gateway.config.sources.serial import FieldSpec as FieldSpec
from gateway.config.sources.serial import SerialSource as SerialSource
from gateway.config.sources.serial import check_regex as check_regex
from gateway.config.sources.simulate import SimulateSource as SimulateSource
from gateway.errors import ConfigError, ConfigIssue

# A password_file is read this far at most (the config's own bounds are in documents.py).
MAX_SECRET_BYTES = 65_536


class GatewaySection(Section):
    id: Name = Field(
        DEFAULT_GATEWAY_ID,
        description="the gateway's name in upstream topics (letters, digits, _ . : -)",
    )
    data_dir: Path = Field(
        DEFAULT_DATA_DIR, description="where gateway.db lives (made 0750 if missing)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug, info, warning or error"
    )


class ModelSection(Section):
    path: Path | None = Field(
        None,
        description="a .tflite file (its .json card and .npz weights beside it); null: the packaged default model",
    )
    runtime: Literal["auto", "litert", "tflite-runtime", "tensorflow", "numpy"] = Field(
        "auto", description="auto, litert, tflite-runtime, tensorflow or numpy"
    )


class DetectorSection(Section):
    """Every time constant counts each stream's own typical interval (``300x``), so one
    default serves a 10 Hz vibration channel and an hourly tank level; a site may pin any of
    them in seconds instead (``1h``). Thresholds are on the score's scale: a score ``s``
    means "as rare as one healthy block of readings in 10^(s/(1-s))"."""

    warmup: int = Field(
        300,
        ge=0,
        description="readings per stream before alerts are allowed (the tests themselves "
        "need 128 healthy readings to calibrate, whatever this says)",
    )
    threshold: float = Field(
        0.8,
        gt=0.0,
        le=0.99,
        description="anomaly score that raises an alert: 0.8 is as rare as one healthy block of readings in 10^4",
    )
    clear_threshold: float = Field(
        0.7, gt=0.0, le=0.99, description="score the alert must fall below to clear"
    )
    min_duration: int = Field(3, ge=1, description="consecutive readings over threshold")
    baseline_halflife: SpanField = Field(
        Span(300.0, True),
        description="how fast the baseline follows the signal: in each stream's typical intervals (300x) or pinned (1h)",
    )
    relation_halflife: SpanField = Field(
        Span(2000.0, True),
        description="how slowly an asset's channels' joint behaviour is learned (the relation test)",
    )
    cooldown: PauseField = Field(
        Span(100.0, True),
        description="after a clear, a new alert on that asset needs cooldown_min_duration readings over threshold for this long (0: no cooldown)",
    )
    cooldown_min_duration: int = Field(
        30,
        ge=0,
        description="consecutive readings over threshold a new alert needs during the cooldown, so a flapping signal is not re-alerted (0: none)",
    )
    max_gap: SpanField = Field(
        Span(100.0, True),
        description="a longer silence restarts the stream's short memory (what was learned stays)",
    )
    drift_threshold: float = Field(3.0, gt=0.0, description="baseline move, in scales")
    drift_halflife: SpanField = Field(
        Span(10000.0, True),
        description="half-life of the slow reference a drift is measured against",
    )
    accept_after: SpanField | None = Field(
        None,
        description="an alert open this long is taken as a new normal: the baseline adapts and a new_normal event records it (null: a fault stays open until it ends or is acknowledged)",
    )

    @field_validator("threshold", "clear_threshold", mode="before")
    @classmethod
    def _score_scale(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool) and 0.99 < value < 1:
            raise ValueError(
                f"{value} is on the old likelihood scale; thresholds are now on the score's "
                "scale, where 0.99 already means one healthy block in 10^99 (the default "
                "threshold is 0.8, clear_threshold 0.7)"
            )
        return value

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> DetectorSection:
        if self.clear_threshold > self.threshold:
            raise ValueError("clear_threshold must not be above threshold")
        return self


class IngestSection(Section):
    """The queue between sources and the pipeline, and stale-stream detection."""

    queue_size: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="readings waiting at most between the sources and the detector",
    )
    overflow: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest",
        description="when full: drop_oldest or drop_newest (only readings are ever dropped)",
    )
    dead_letter_queue: int = Field(
        10_000, ge=100, le=1_000_000, description="dead letters waiting at most"
    )
    stale_factor: float | None = Field(
        5.0,
        gt=1.0,
        description="a stream silent for this multiple of its usual interval gets a stale event (null: no stale detection)",
    )
    stale_min: Duration = Field(10.0, description="...but never sooner than this")
    flap_limit: int = Field(
        5,
        ge=2,
        description="stale this often within flap_window: one flapping event, then its stale events are held back until it is steady",
    )
    flap_window: Duration = Field(600.0, description="the window flap_limit counts in")
    max_clock_skew: Duration | None = Field(
        600.0,
        gt=0.0,
        description="a reading stamped this far ahead of the gateway's clock, or behind its stream's newest, is a dead letter (null: not checked)",
    )


# The output an ``upstream:`` section is, in status, metrics and the deliveries table.
UPSTREAM_OUTPUT = "upstream"


class StorageSection(Section):
    readings_retention: Duration = Field(
        7 * 86400.0, description="readings older than this are pruned"
    )
    max_db_size: Size = Field(
        512_000_000,
        description="above this the oldest readings go first (never alerts or undelivered outbox rows)",
    )
    durability: Literal["normal", "full"] = Field(
        "normal", description="normal: survives a crash; full: also a power loss (slower)"
    )
    checkpoint_every: Duration = Field(
        300.0,
        description="how often detector state is saved (a crash loses at most this much adaptation, never data)",
    )
    check_on_start: Literal["off", "quick", "full"] = Field(
        "quick",
        description="off, quick or full (also every index, slower); a damaged database is "
        "moved aside, never deleted, and a fresh one is made",
    )

    @field_validator("check_on_start", mode="before")
    @classmethod
    def _unquoted_off(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `off` as false; README documents `off` unquoted.
        return "off" if value is False else value


class LimitsSection(Section):
    """How much the gateway keeps track of: every stream costs memory (about 11 KiB once warm)
    and a checkpoint row (about 1 KB, 4.7 KB once its cycle history is full), so their number
    is capped."""

    max_streams: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="streams scored at once (~11 KiB of memory each); a reading of a new stream past it is a dead letter",
    )
    stream_retention: Duration = Field(
        30 * 86400.0,
        gt=0.0,
        description="a stream without a reading this long is forgotten and frees its place",
    )


class MetricsSection(Section):
    listen: str | None = Field(
        "127.0.0.1:9464",
        description="host:port of the Prometheus endpoint (no authentication: keep it on loopback); null: off",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if (
            not sep
            or not host
            or not (port.isascii() and port.isdigit())
            or not 0 < int(port) < 65536
        ):
            raise ValueError("listen must be host:port, e.g. 127.0.0.1:9464")
        return value

    def exposure_warning(self) -> str | None:
        """Why the endpoint answers other machines (``listen`` is not loopback), or None."""
        if self.listen is None:
            return None
        host = self.listen.rpartition(":")[0].strip("[]")
        if host.lower().rstrip(".") == "localhost":
            return None
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            where = f"on whatever {host} resolves to, which is not known to be loopback"
        else:
            mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
            if (mapped or address).is_loopback:
                return None
            where = "on every interface" if address.is_unspecified else f"on {host}"
        return (
            f"metrics.listen {self.listen}: the metrics endpoint (no authentication, no TLS; "
            f"it tells stream names, alert counts and the outbox backlog) answers {where}, "
            "not only on this machine; use 127.0.0.1:PORT unless a firewall keeps others out"
        )


class HomeAssistantSection(Section):
    """Opt-in MQTT discovery on the upstream broker: one `problem` binary sensor per stream."""

    enabled: bool = Field(
        False,
        description="announce each stream's alert state to Home Assistant (MQTT discovery, on the upstream broker)",
    )
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix")

    @field_validator("discovery_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        if not value or any(not is_name(p) for p in value.split("/")):
            raise ValueError("discovery_prefix must be '/'-separated names")
        return value


class Config(Section):
    gateway: GatewaySection = Field(default_factory=GatewaySection, description="this gateway")
    model: ModelSection = Field(
        default_factory=ModelSection, description="the model that scores readings"
    )
    detector: DetectorSection = Field(
        default_factory=DetectorSection, description="when a score becomes an alert"
    )
    sources: list[SourceSection] = Field(
        default_factory=list,
        description="where readings come from: serial, mqtt, modbus, opcua or simulate",
    )
    assets: dict[Name, list[Name]] = Field(
        default_factory=dict,
        examples=[{"line-a-pump": ["line-a.temperature", "line-a.pressure"]}],
        description="channels scored together, {asset: [stream, ...]}: the alert names the culprit",
    )
    upstream: UpstreamSection | None = Field(
        None,
        description="the MQTT broker alerts and events go to (the output named upstream); null: none",
    )
    outputs: list[OutputSection] = Field(
        default_factory=list,
        description="more places alerts and events go, each delivered on its own: mqtt, webhook or alertmanager",
    )
    ingest: IngestSection = Field(
        default_factory=IngestSection,
        description="the queue between the sources and the detector, and stale streams",
    )
    storage: StorageSection = Field(default_factory=StorageSection, description="the database")
    limits: LimitsSection = Field(
        default_factory=LimitsSection, description="how much the gateway keeps track of"
    )
    metrics: MetricsSection = Field(
        default_factory=MetricsSection, description="the Prometheus endpoint"
    )
    homeassistant: HomeAssistantSection = Field(
        default_factory=HomeAssistantSection, description="Home Assistant MQTT discovery"
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        # `sources:` with every item commented out (as `config sample` writes it) is null.
        if isinstance(data, dict):
            empty = [k for k, v in data.items() if v is None and k in _DEFAULT_FACTORY_KEYS]
            data = {k: v for k, v in data.items() if k not in empty}
        return data

    def delivery_outputs(self) -> list[OutputSection]:
        """Every output alerts and events go to: ``upstream:`` (an MQTT output named
        ``upstream``) first, then ``outputs:``."""
        found: list[OutputSection] = []
        if self.upstream is not None:
            fields = self.upstream.model_dump(exclude={"broker"})
            found.append(
                MqttOutputSection(
                    type="mqtt", name=UPSTREAM_OUTPUT, broker=self.upstream.broker, **fields
                )
            )
        return found + list(self.outputs)

    @model_validator(mode="after")
    def _homeassistant_needs_upstream(self) -> Config:
        if self.homeassistant.enabled and self.upstream is None:
            raise ValueError("homeassistant.enabled needs an upstream broker to announce on")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique: {', '.join(dupes)}")
        names = [o.name for o in self.delivery_outputs()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"output names must be unique ({UPSTREAM_OUTPUT!r} is upstream's): "
                + ", ".join(dupes)
            )
        seen: dict[str, str] = {}
        for asset, streams in self.assets.items():
            for stream in streams:
                if stream in seen:
                    raise ValueError(
                        f"stream {stream!r} is in two assets: {seen[stream]!r} and {asset!r}"
                    )
                seen[stream] = asset
        if len(seen) > self.limits.max_streams:
            raise ValueError(
                f"assets name {len(seen)} streams, more than limits.max_streams "
                f"({self.limits.max_streams})"
            )
        return self

    @property
    def database_path(self) -> Path:
        return self.gateway.data_dir / DATABASE_FILE

    @property
    def max_checkpoint_rows(self) -> int:
        """stream_state rows at most: one per stream and one per asset (a stream of no
        configured asset is an asset of its own)."""
        return 2 * self.limits.max_streams + len(self.assets)


# Sections and lists with a default of their own: an empty key (null) means that default.
_DEFAULT_FACTORY_KEYS = frozenset(
    name for name, info in Config.model_fields.items() if info.default_factory is not None
)

# --- loading -----------------------------------------------------------------------------


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Pydantic's error location with the union-tag steps removed, so it follows the YAML."""
    path: list[Any] = []
    current = data
    for part in loc:
        if (
            isinstance(current, dict)
            and part in current
            or isinstance(current, list)
            and isinstance(part, int)
            and 0 <= part < len(current)
        ):
            path.append(part)
            current = current[part]
        elif isinstance(current, dict | list):
            # A tag (e.g. the union member 'serial') or a key that is missing: keep missing
            # keys, they are what the message is about; skip tags.
            if isinstance(part, str) and isinstance(current, dict) and not _is_union_tag(part):
                path.append(part)
                current = None
        else:
            break
    return tuple(path)


# The ``type`` of every source and output section (sources/ and outputs/ hold the lists).
SOURCE_TAGS = frozenset(SOURCE_SECTIONS)
OUTPUT_TAGS = frozenset(OUTPUT_SECTIONS)


def _is_union_tag(part: str) -> bool:
    return part in SOURCE_TAGS or part in OUTPUT_TAGS or part.startswith(("function-", "tagged-"))


def _resolve_secret(
    broker: dict[str, Any], base: Path, where: tuple[Any, ...], issues: list[tuple[Any, str]]
) -> None:
    pw_file, pw_env = broker.get("password_file"), broker.get("password_env")
    if "password" in broker:
        issues.append(
            (
                where + ("password",),
                "secrets may not be written in the config; use "
                "password_file (or a systemd credential) or password_env",
            )
        )
        return
    secret: str | None = None
    if pw_file:
        path = secret_path(Path(str(pw_file)), base)
        key = where + ("password_file",)
        try:
            secret = read_bounded(path, MAX_SECRET_BYTES).decode("utf-8").rstrip("\r\n")
        except OSError as exc:
            issues.append((key, f"cannot read {path}: {exc.strerror}"))
        except UnicodeDecodeError:
            issues.append((key, f"{path} is not UTF-8 text"))
        except ValueError as exc:
            issues.append((key, f"{path} {exc}"))
        if secret == "":
            issues.append((key, f"{path} is empty: write the password into it"))
            secret = None
    elif pw_env:
        key = where + ("password_env",)
        name = str(pw_env)
        if not re.fullmatch(ENV_NAME_PATTERN, name):
            issues.append(
                (
                    key,
                    "must name an environment variable (A-Z, 0-9, _); its value is not shown "
                    "here in case it is a password",
                )
            )
        elif name not in os.environ:
            issues.append((key, f"environment variable {name} is not set"))
        elif not os.environ[name]:
            issues.append((key, f"environment variable {name} is empty"))
        else:
            secret = os.environ[name]
    if secret is not None:
        broker["password"] = secret


def secret_path(path: Path, base: Path) -> Path:
    """Where a ``password_file`` is read: relative to systemd's credentials folder when set."""
    path = path.expanduser()
    if path.is_absolute():
        return path
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    return (Path(creds) / path) if creds else (base / path)


def _secret_holders(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    found: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    upstream = data.get("upstream")
    if isinstance(upstream, dict) and isinstance(upstream.get("broker"), dict):
        found.append((("upstream", "broker"), upstream["broker"]))
    outputs = data.get("outputs")
    if isinstance(outputs, list):
        for i, output in enumerate(outputs):
            if isinstance(output, dict) and isinstance(output.get("broker"), dict):
                found.append((("outputs", i, "broker"), output["broker"]))
    sources = data.get("sources")
    if isinstance(sources, list):
        for i, source in enumerate(sources):
            if isinstance(source, dict) and isinstance(source.get("broker"), dict):
                found.append((("sources", i, "broker"), source["broker"]))
            elif isinstance(source, dict) and source.get("type") == "opcua":
                found.append((("sources", i), source))  # its own username and password
    return found


def _resolve_paths(config: Config, base: Path) -> Config:
    def fix(path: Path | None) -> Path | None:
        return None if path is None else resolved(path, base)

    def fix_secret(path: Path | None) -> Path | None:
        # As secret_path reads it; a credential name stays one, so that it is shown as such.
        if path is None:
            return None
        path = path.expanduser()
        if not path.is_absolute() and os.environ.get("CREDENTIALS_DIRECTORY"):
            return path
        return fix(path)

    def fix_broker(broker: BrokerSection) -> BrokerSection:
        update: dict[str, Any] = {"password_file": fix_secret(broker.password_file)}
        if broker.tls is not None:
            files = ("ca_file", "cert_file", "key_file")
            tls = broker.tls.model_copy(update={k: fix(getattr(broker.tls, k)) for k in files})
            update["tls"] = tls
        return broker.model_copy(update=update)

    gateway = config.gateway.model_copy(update={"data_dir": fix(config.gateway.data_dir)})
    model = config.model.model_copy(update={"path": fix(config.model.path)})

    def fix_source(source: Any) -> Any:
        if isinstance(source, MqttSource):
            return source.model_copy(update={"broker": fix_broker(source.broker)})
        if isinstance(source, OpcuaSource):
            files = ("cert_file", "key_file", "server_cert_file")
            security = source.security.model_copy(
                update={k: fix(getattr(source.security, k)) for k in files}
            )
            update = {"security": security, "password_file": fix_secret(source.password_file)}
            return source.model_copy(update=update)
        return source

    sources = [fix_source(s) for s in config.sources]
    updates: dict[str, Any] = {"gateway": gateway, "model": model, "sources": sources}
    if config.upstream is not None:
        broker = fix_broker(config.upstream.broker)
        updates["upstream"] = config.upstream.model_copy(update={"broker": broker})

    def fix_output(output: OutputSection) -> OutputSection:
        if isinstance(output, MqttOutputSection):
            return output.model_copy(update={"broker": fix_broker(output.broker)})
        if isinstance(output, WebhookOutputSection):
            return output.model_copy(update={"secret_file": fix_secret(output.secret_file)})
        return output

    updates["outputs"] = [fix_output(o) for o in config.outputs]
    return config.model_copy(update=updates)


@dataclass(frozen=True)
class Located:
    """A loaded config with the file and line its keys stand on, so later checks can name
    file:line (``file`` is the main file; a key may stand in one it includes)."""

    config: Config
    file: str
    lines: Lines
    base: Path
    includes: tuple[str, ...] = ()  # the files merged into it, in merge order

    def issue(self, path: tuple[Any, ...], message: str) -> ConfigIssue:
        return _issue(self.lines, self.file, path, message)


def _issue(lines: Lines, file: str, path: tuple[Any, ...], message: str) -> ConfigIssue:
    where = lines.line_of(path)
    if path in lines.substituted:
        # A value from ${NAME} is shown as written, never as what it became: it may be a
        # secret in the wrong key. (Unquoted only when long enough not to be a word or a
        # digit of the message itself.)
        written, value = lines.substituted[path]
        message = message.replace(repr(value), repr(written))
        if len(value) >= 4:
            message = message.replace(value, written)
    if where is None:
        return ConfigIssue(file, None, format_path(path), message)
    return ConfigIssue(where[0], where[1], format_path(path), message)


def parse_config(text: str, filename: str = "<config>", base: Path | None = None) -> Config:
    """Validate YAML text. Raises ConfigError with every issue found."""
    return parse_located(text, filename, base).config


def parse_located(
    text: str, filename: str = "<config>", base: Path | None = None, path: Path | None = None
) -> Located:
    """As ``parse_config``, keeping the file and line of every key. ``path``: the file the
    text was read from (so that it cannot include itself); ``base`` its folder, which
    relative paths and include patterns are taken from."""
    base = base or Path.cwd()
    tree = read_tree(text, filename, base, path)
    data = construct(tree.root)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigIssue(filename, 1, "", "the config must be a mapping of sections")]
        )
    lines = tree.lines

    issues = [
        ConfigIssue(file, line, format_path(key), "duplicate key")
        for key, file, line in lines.duplicates
    ]
    raw_issues: list[tuple[tuple[Any, ...], str]] = []
    for where, broker in _secret_holders(data):
        _resolve_secret(broker, base, where, raw_issues)

    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            key = _data_path(data, tuple(error["loc"]))
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            raw_issues.append((key, message))

    issues += [_issue(lines, filename, key, message) for key, message in raw_issues]
    if issues:
        order = {name: n for n, name in enumerate(tree.files)}
        issues.sort(key=lambda i: (order.get(i.file, len(order)), i.line or 0, i.path))
        raise ConfigError(issues)
    assert config is not None
    return Located(_resolve_paths(config, base), filename, lines, base, tuple(tree.files[1:]))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file (and the files it includes); relative paths in them
    are taken from its folder."""
    return load_located(path).config


def load_located(path: str | os.PathLike[str]) -> Located:
    """As ``load_config``, keeping the file and line of every key."""
    file = Path(path)
    try:
        text = read_bounded(file, MAX_CONFIG_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, OSError):
            reason = f"cannot read: {exc.strerror}"
        elif isinstance(exc, UnicodeDecodeError):
            reason = "cannot read: not UTF-8 text"
        else:
            reason = f"refused: {exc}"
        raise ConfigError([ConfigIssue(str(file), None, "", reason)]) from exc
    base = file.resolve().parent
    return parse_located(text, filename=str(file), base=base, path=file)


def redacted(config: Config) -> dict[str, Any]:
    """The effective config as plain data, as ``config show`` prints it: every value as used,
    durations and sizes spelt as the config accepts them. No secret is in it (``password`` is
    excluded from dumps): the ``password_file`` or ``password_env`` it is read from is, so
    the output loads again."""
    return config.model_dump(mode="json")
