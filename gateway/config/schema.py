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
import urllib.parse
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

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
from gateway.errors import ConfigError, ConfigIssue

# A password_file is read this far at most (the config's own bounds are in documents.py).
MAX_SECRET_BYTES = 65_536

_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*")
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``90s``, ``1.5h``, ``1h30m``, ``250ms``. Rejects negatives and junk."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 90s, 5m or 1h")
    text = value.strip().lower()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration (use e.g. 90s, 5m, 1h30m, 7d)")
    return total


def parse_size(value: Any) -> int:
    """Bytes from ``4096``, ``512MB`` (10^6), ``1GiB`` (2^30)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("expected a size such as 512MB")
    match = _SIZE_RE.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not a size (use e.g. 512MB, 2GiB, 100000)")
    number, prefix, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** _SIZE_POWERS[prefix.lower()])


def format_duration(seconds: float) -> str:
    """The shortest spelling that ``parse_duration`` reads back exactly: ``90s``, ``5m``,
    ``1h``, ``250ms``; ``1.5s`` when no unit divides it."""
    for unit in ("w", "d", "h", "m", "s") if seconds >= 1 else ("ms",):
        count = seconds / _DURATION_UNITS[unit]
        if count >= 1 and count.is_integer():
            text = f"{int(count)}{unit}"
            if parse_duration(text) == seconds:
                return text
    return f"{_plain_number(seconds)}s"


def _plain_number(value: float) -> str:
    """``value`` in positional notation (``0.00001``, not ``1e-05``, which a duration or a
    span does not accept), digit for digit as ``repr`` has it, so it reads back exactly."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_size(size: int) -> str:
    """The shortest spelling that ``parse_size`` reads back exactly: ``512MB``, ``1GiB``."""
    for power, prefix in ((4, "T"), (3, "G"), (2, "M"), (1, "k")):
        for base, infix in ((1000, ""), (1024, "i")):
            count, rest = divmod(size, base**power)
            if size and not rest:
                text = f"{count}{prefix.upper() if infix else prefix}{infix}B"
                if parse_size(text) == size:
                    return text
    return str(size)


# In JSON mode (``config show``) both are written as the config accepts them: ``10s``, ``512MB``.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str, when_used="json"),
]


@dataclass(frozen=True)
class Span:
    """A detector time constant: ``value`` typical intervals of the stream (``300x``), or
    ``value`` seconds when pinned by a site (``1h``, ``90s``)."""

    value: float
    per_interval: bool

    def __str__(self) -> str:
        return f"{_plain_number(self.value)}x" if self.per_interval else format_duration(self.value)


def parse_span(value: Any, allow_zero: bool = False) -> Span:
    """``300x`` (typical intervals of each stream) or a duration (``1h``, ``90``: seconds)."""
    if isinstance(value, Span):
        return value
    least = "0 or longer" if allow_zero else "longer than 0"
    if isinstance(value, str) and value.strip().lower().endswith("x"):
        number = value.strip()[:-1].strip()
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", number) or (
            float(number) <= 0.0 and not allow_zero
        ):
            raise ValueError(
                f"{value!r} is not a number of intervals {least} (use e.g. 300x: 300 times "
                "each stream's typical interval)"
            )
        return Span(float(number), True)
    seconds = parse_duration(value)
    if seconds < 0.0 or (seconds == 0.0 and not allow_zero):
        raise ValueError(f"a time constant must be {least}")
    return Span(seconds, False)


def parse_pause(value: Any) -> Span:
    """A span that may be 0 (none): the cooldown."""
    return parse_span(value, allow_zero=True)


SpanField = Annotated[Span, BeforeValidator(parse_span), PlainSerializer(str, return_type=str)]
PauseField = Annotated[Span, BeforeValidator(parse_pause), PlainSerializer(str, return_type=str)]


def check_name(value: str, what: str = "name") -> str:
    if not is_name(value):
        raise ValueError(
            f"{value!r} is not a valid {what}: use letters, digits and _ . : - "
            "(no spaces, '/', '+' or '#'), at most 128 characters"
        )
    return value


Name = Annotated[str, BeforeValidator(lambda v: check_name(v) if isinstance(v, str) else v)]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def check_regex(pattern: str | None, timestamp_field: str | None = None) -> re.Pattern[str]:
    """A line pattern for format regex: it must compile and name at least one group."""
    if not pattern:
        raise ValueError("format regex needs a 'pattern' with named groups, e.g. (?P<temp>\\S+)")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"pattern does not compile: {exc}") from exc
    names = set(compiled.groupindex)
    if not names - {timestamp_field}:
        raise ValueError("pattern needs at least one named group (?P<name>...) for a reading")
    return compiled


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


class TlsSection(Section):
    ca_file: Path | None = Field(
        None,
        description="CA certificate(s) (PEM) the broker's certificate is checked against; null: the system's",
    )
    cert_file: Path | None = Field(
        None, description="client certificate (PEM), for brokers that want one"
    )
    key_file: Path | None = Field(
        None, description="the client certificate's key (PEM, no passphrase), if not in cert_file"
    )


class BrokerSection(Section):
    host: str = Field("127.0.0.1", description="the broker's host name or address")
    port: int = Field(1883, ge=1, le=65535, description="1883 plain, usually 8883 with TLS")
    tls: TlsSection | None = Field(None, description="TLS settings; null: no TLS")
    username: str | None = Field(None, description="MQTT user name")
    password_file: Path | None = Field(
        None,
        description="file holding the password (relative: from $CREDENTIALS_DIRECTORY when set, else the config's folder)",
    )
    password_env: str | None = Field(
        None, description="or the name of an environment variable holding it (A-Z, 0-9, _)"
    )
    keepalive: int = Field(30, ge=5, le=3600, description="seconds between MQTT pings")
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT version: '5' (sees a refused publish) or '3.1.1'"
    )
    client_id: Name | None = Field(
        None,
        description="MQTT client id; null: <gateway.id>-upstream upstream, a random one for a source",
    )
    # Filled by load_config from password_file / password_env; never read from YAML.
    password: SecretStr | None = Field(None, exclude=True)

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("host must not be empty")
        return value


class SourceBrokerSection(BrokerSection):
    """A source's broker: as upstream's, but MQTT 3.1.1 unless set. A subscriber uses nothing
    of MQTT 5, and for every PUBLISH paho builds an MQTT 5 ``Properties`` object even when
    there are none: about a tenth of the source thread's time at a few thousand messages/s.
    (The upstream client keeps MQTT 5 by default: it reads PUBACK reason codes.)"""

    protocol: Literal["5", "3.1.1"] = Field(
        "3.1.1",
        description="MQTT version: '3.1.1' (cheaper per message; a subscriber needs nothing of 5) or '5' (the broker then never sends more than max_payload)",
    )


class FieldSpec(Section):
    """How to turn one raw field into a stream value."""

    scale: float = Field(1.0, description="value = raw * scale + offset")
    offset: float = Field(0.0, description="added after scaling")
    unit: str | None = Field(None, description="unit shown with the stream, e.g. bar")


class SerialSource(Section):
    type: Literal["serial"] = Field(
        description="a serial line: a device, or a pyserial URL (loop://, socket://host:port, rfc2217://host:port)"
    )
    name: Name = Field(description="the source's name, in events and status", examples=["line-a"])
    port: str = Field(
        description="/dev/serial/by-id/... survives re-enumeration; or a pyserial URL",
        examples=["/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"],
    )
    baudrate: int = Field(9600, ge=50, le=4_000_000, description="bits per second")
    bytesize: Literal[5, 6, 7, 8] = Field(8, description="data bits: 5, 6, 7 or 8")
    parity: Literal["N", "E", "O", "M", "S"] = Field("N", description="N, E, O, M or S")
    # A float, not a Literal: a Literal of floats is not a valid type for mypy.
    stopbits: float = Field(1, description="1, 1.5 or 2")
    format: Literal["csv", "kv", "json", "regex"] = Field(
        "csv", description="csv, kv (temperature=21.5 pressure=1013), json or regex"
    )
    fields: list[Name] = Field(
        default_factory=list,
        description="column names (required for csv); for kv and json the keys to take (empty: every number)",
        examples=[["temperature", "pressure"]],
    )
    delimiter: str = Field(
        ",", min_length=1, max_length=1, description="csv column separator (one character)"
    )
    pattern: str | None = Field(
        None,
        max_length=4096,
        description="format regex: named groups are the fields, e.g. T=(?P<temperature>\\S+)",
    )
    timestamp_field: str | None = Field(
        None,
        description="field with the device's time (epoch s or ms, or ISO 8601); null: time of receipt",
    )
    max_line: int = Field(
        4096,
        ge=16,
        le=1_048_576,
        description="longer lines are dead letters (line_too_long), in bytes",
    )
    read_timeout: Duration = Field(1.0, description="how long one read waits")
    stream_prefix: str = Field("", description="stream name = stream_prefix + field name")
    units: dict[str, FieldSpec] = Field(
        default_factory=dict,
        description="scale, offset and unit per field: {field: {scale, offset, unit}}",
    )
    reconnect_min: Duration = Field(
        0.5, gt=0.0, le=60.0, description="a lost port is reopened after this, the wait doubling..."
    )
    reconnect_max: Duration = Field(2.0, gt=0.0, le=300.0, description="...up to this")

    @model_validator(mode="after")
    def _format_needs(self) -> SerialSource:
        if self.format == "csv" and not self.fields:
            raise ValueError("format csv needs a 'fields' list naming the columns")
        if self.format == "regex":
            check_regex(self.pattern, self.timestamp_field)
        elif self.pattern is not None:
            raise ValueError("'pattern' is only used with format regex")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be below reconnect_min")
        return self

    @field_validator("stopbits")
    @classmethod
    def _standard_stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("stopbits must be 1, 1.5 or 2")
        return value


class Subscription(Section):
    topic: str = Field(
        description="topic filter; + and # wildcards, $share/group/... for a shared subscription",
        examples=["plant/+/telemetry"],
    )
    format: Literal["json", "number"] = Field(
        "json", description="json (each number a stream) or number (the payload is one number)"
    )
    qos: Literal[0, 1, 2] = Field(1, description="0, 1 or 2")
    stream: str = Field(
        "",
        description="stream name template: {topic} (/ turned into .), {0}, {1}... (topic levels), {field} (JSON key); left out: {topic}.{field} for json, {topic} for number",
    )
    fields: list[str] = Field(
        default_factory=list, description="JSON keys (or dotted paths) to take; empty: every number"
    )
    timestamp_field: str | None = Field(
        None,
        description="JSON key with the device's time (epoch s or ms, or ISO 8601); null: time of receipt",
    )
    max_payload: int = Field(
        65536,
        ge=16,
        le=16_777_216,
        description="larger payloads are dead letters (payload_too_large), in bytes",
    )
    units: dict[str, FieldSpec] = Field(
        default_factory=dict, description="scale, offset and unit per JSON key or stream name"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_stream(cls, data: Any) -> Any:
        # Filled in here, not where it is used, so that `config show` prints the template used.
        if isinstance(data, dict) and not data.get("stream"):
            number = data.get("format") == "number"
            data = {**data, "stream": "{topic}" if number else "{topic}.{field}"}
        return data

    @field_validator("topic")
    @classmethod
    def _valid_filter(cls, value: str) -> str:
        if not value or "\x00" in value:
            raise ValueError("topic filter must not be empty")
        parts = value.split("/")
        for i, part in enumerate(parts):
            if "#" in part and (part != "#" or i != len(parts) - 1):
                raise ValueError("'#' must be a whole last level of the topic filter")
            if "+" in part and part != "+":
                raise ValueError("'+' must stand for a whole topic level")
        return value


class MqttSource(Section):
    type: Literal["mqtt"] = Field(description="an MQTT broker the sensors publish to")
    name: Name = Field(description="the source's name, in events and status", examples=["plant"])
    broker: SourceBrokerSection = Field(
        default_factory=SourceBrokerSection, description="the broker to subscribe at"
    )
    subscribe: list[Subscription] = Field(
        min_length=1,
        description="what to subscribe to (at least one); renewed after every reconnect",
    )


class SimulateSource(Section):
    type: Literal["simulate"] = Field(
        description="simulated sensors with injected faults, for a demo: no hardware needed"
    )
    name: Name = Field("sim", description="the source's name")
    streams: int = Field(4, ge=1, le=10_000, description="how many simulated streams")
    rate_hz: float = Field(10.0, gt=0.0, le=10_000.0, description="readings per second per stream")
    seed: int = Field(7, description="random seed: the same seed, the same readings")
    faults: bool = Field(True, description="inject faults")
    fault_after: Duration = Field(60.0, description="first fault, after start")
    fault_every: Duration = Field(45.0, description="time between faults")
    fault_length: Duration = Field(10.0, description="how long each fault lasts")
    drift_per_hour: float = Field(
        2.0, description="slow drift, in noise standard deviations per hour"
    )


class ModbusRegister(Section):
    """One value read from a slave: a holding/input register run, a coil or a discrete input."""

    stream: Name = Field(
        description="the stream name (the slave's stream_prefix is put in front)", examples=["flow"]
    )
    address: int = Field(
        ge=0,
        le=65535,
        description="0-based protocol address (register 40001 is address 0)",
        examples=[0],
    )
    function: Literal["holding", "input", "coil", "discrete"] = Field(
        "holding", description="holding, input, coil or discrete"
    )
    type: Literal["int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"] = (
        Field(
            "uint16",
            description="int16, uint16, int32, uint32, float32, int64, uint64 or float64 "
            "(coils and discrete inputs: leave out)",
        )
    )
    byte_order: Literal["big", "little"] = Field(
        "big", description="bytes inside each 16-bit register: big or little"
    )
    word_order: Literal["big", "little"] = Field(
        "big", description="big: the first register holds the high word; or little"
    )
    scale: float = Field(1.0, description="value = raw * scale + offset")
    offset: float = Field(0.0, description="added after scaling")
    unit: str | None = Field(None, description="unit shown with the stream")

    @model_validator(mode="after")
    def _bits_are_plain(self) -> ModbusRegister:
        if self.function in ("coil", "discrete") and self.type != "uint16":
            raise ValueError("coils and discrete inputs are bits: leave 'type' out")
        if self.address + register_count(self.type) > 65536:
            raise ValueError("the value runs past register 65535")
        return self


def register_count(dtype: str) -> int:
    """16-bit registers a value of this type occupies."""
    return {"16": 1, "32": 2, "64": 4}[dtype[-2:]]


class ModbusSlave(Section):
    id: int = Field(
        ge=1, le=247, description="the slave's (unit's) address on the bus, 1-247", examples=[1]
    )
    name: Name | None = Field(None, description="for events and logs; left out: slave-<id>")
    poll_interval: Duration = Field(1.0, ge=0.01, description="how often its registers are read")
    timeout: Duration = Field(
        0.5,
        gt=0.0,
        le=30.0,
        description="per request: a dead slave costs this much of the bus's time",
    )
    backoff_max: Duration = Field(
        30.0, gt=0.0, description="a failing slave is retried at most this rarely"
    )
    stream_prefix: str = Field("", description="put in front of each register's stream name")
    registers: list[ModbusRegister] = Field(
        min_length=1, description="the values read from it (at least one)"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        # Filled in here, so that `config show` prints the name events and logs use.
        slave = data.get("id") if isinstance(data, dict) else None
        if isinstance(slave, int | str) and str(slave).isdigit() and data.get("name") is None:
            data = {**data, "name": f"slave-{int(slave)}"}
        return data

    @property
    def label(self) -> str:
        assert self.name is not None  # filled in by _default_name
        return self.name


class ModbusSource(Section):
    """One RS-485 bus (one port), polled by one thread, with any number of slaves."""

    type: Literal["modbus"] = Field(description="a Modbus RTU bus (RS-485), polled by one thread")
    name: Name = Field(description="the source's name, in events and status", examples=["bus-1"])
    port: str = Field(description="as for serial", examples=["/dev/ttyUSB0"])
    baudrate: int = Field(19200, ge=50, le=4_000_000, description="bits per second")
    bytesize: Literal[7, 8] = Field(8, description="data bits: 7 or 8")
    parity: Literal["N", "E", "O"] = Field(
        "E", description="N, E or O (Modbus RTU's default is 8E1)"
    )
    stopbits: Literal[1, 2] = Field(1, description="1 or 2")
    reconnect_min: Duration = Field(
        0.5, gt=0.0, le=60.0, description="a lost port is reopened after this, the wait doubling..."
    )
    reconnect_max: Duration = Field(2.0, gt=0.0, le=300.0, description="...up to this")
    slaves: list[ModbusSlave] = Field(
        min_length=1, description="the devices on the bus (at least one)"
    )

    @model_validator(mode="after")
    def _unique(self) -> ModbusSource:
        ids = [s.id for s in self.slaves]
        if len(set(ids)) != len(ids):
            raise ValueError("slave ids must be unique on one bus")
        streams = [s.stream_prefix + r.stream for s in self.slaves for r in s.registers]
        dupes = sorted({n for n in streams if streams.count(n) > 1})
        if dupes:
            raise ValueError(f"stream names must be unique: {', '.join(dupes)}")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be below reconnect_min")
        return self


# An OPC UA node id as text (Part 6, 5.3.1.10): an optional namespace (ns=<index> or
# nsu=<uri>), then i=<number>, s=<string>, g=<guid> or b=<base64>.
OPCUA_NODE_PATTERN = (
    r"(?:(?:ns=[0-9]{1,5}|nsu=[^;]{1,1024});)?"
    r"(?:i=[0-9]{1,10}|s=.{1,4096}|g=[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
    r"|b=[A-Za-z0-9+/=]{1,4096})"
)
_OPCUA_ENDPOINT_PATTERN = r"opc\.tcp://[^\s/:]{1,255}(?::[0-9]{1,5})?(?:/[^\s]{0,1024})?"


class OpcuaNode(Section):
    """One variable on the server, subscribed to for data changes: one stream."""

    node: str = Field(
        description="the node id: ns=<index>;s=<name>, ns=<index>;i=<number>, nsu=<uri>;s=...",
        examples=["ns=2;s=Line1.Pump.Temperature"],
    )
    stream: Name = Field(
        description="the stream name (the source's stream_prefix is put in front)",
        examples=["pump.temperature"],
    )
    scale: float = Field(1.0, description="value = raw * scale + offset")
    offset: float = Field(0.0, description="added after scaling")
    unit: str | None = Field(None, description="unit shown with the stream")

    @field_validator("node")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not re.fullmatch(OPCUA_NODE_PATTERN, value, flags=re.DOTALL) or "\x00" in value:
            raise ValueError(
                "not an OPC UA node id: write ns=<index>;s=<name>, ns=<index>;i=<number>, "
                "or nsu=<namespace uri>;s=<name>"
            )
        return value


class OpcuaSecurity(Section):
    """How the channel to the server is secured. ``None`` sends everything in clear text;
    Basic256Sha256 signs (and with SignAndEncrypt encrypts) it with the client's certificate
    and trusts exactly the server certificate named here."""

    policy: Literal["None", "Basic256Sha256"] = Field(
        "None", description="None (no security) or Basic256Sha256"
    )
    mode: Literal["Sign", "SignAndEncrypt"] = Field(
        "SignAndEncrypt", description="with Basic256Sha256: Sign or SignAndEncrypt"
    )
    cert_file: Path | None = Field(
        None, description="the client's application instance certificate (DER or PEM)"
    )
    key_file: Path | None = Field(None, description="its private key (PEM, no passphrase)")
    server_cert_file: Path | None = Field(
        None,
        description="the server's certificate (DER or PEM), trusted as it is: get it from the server's admin, not over the network",
    )

    @model_validator(mode="after")
    def _files_for_policy(self) -> OpcuaSecurity:
        files = {"cert_file": self.cert_file, "key_file": self.key_file}
        files["server_cert_file"] = self.server_cert_file
        if self.policy == "None":
            given = [k for k, v in files.items() if v is not None]
            if given:
                raise ValueError(f"policy None uses no certificates: {', '.join(given)} set")
        else:
            missing = [k for k, v in files.items() if v is None]
            if missing:
                raise ValueError(f"policy {self.policy} needs {', '.join(missing)}")
        return self


class OpcuaSource(Section):
    """One OPC UA server: one session, one subscription for every node listed."""

    type: Literal["opcua"] = Field(
        description="an OPC UA server: data-change subscriptions on its variables"
    )
    name: Name = Field(description="the source's name, in events and status", examples=["press-1"])
    endpoint: str = Field(
        description="the server's endpoint URL, opc.tcp://host:port/path",
        examples=["opc.tcp://192.0.2.10:4840/"],
    )
    nodes: list[OpcuaNode] = Field(
        min_length=1, max_length=10_000, description="the variables read (at least one)"
    )
    stream_prefix: str = Field("", description="put in front of each node's stream name")
    publishing_interval: Duration = Field(
        1.0, ge=0.01, le=3600.0, description="how often the server sends the changes it has"
    )
    sampling_interval: Duration | None = Field(
        None,
        ge=0.0,
        le=3600.0,
        description="how often the server samples each variable; null: the publishing interval",
    )
    timestamps: Literal["source", "server", "receipt"] = Field(
        "source",
        description="a reading's time: source (the device's, else the server's), server, or receipt",
    )
    timeout: Duration = Field(4.0, gt=0.0, le=60.0, description="how long one request waits")
    reconnect_min: Duration = Field(
        0.5,
        gt=0.0,
        le=60.0,
        description="a lost server is tried again after this, the wait doubling...",
    )
    reconnect_max: Duration = Field(2.0, gt=0.0, le=300.0, description="...up to this")
    security: OpcuaSecurity = Field(
        default_factory=OpcuaSecurity, description="None, or Basic256Sha256 with certificates"
    )
    username: str | None = Field(None, description="user name; null: anonymous")
    password_file: Path | None = Field(
        None,
        description="file holding the password (relative: from $CREDENTIALS_DIRECTORY when set, else the config's folder)",
    )
    password_env: str | None = Field(
        None, description="or the name of an environment variable holding it (A-Z, 0-9, _)"
    )
    # Filled by load_config from password_file / password_env; never read from YAML.
    password: SecretStr | None = Field(None, exclude=True)

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        if not re.fullmatch(_OPCUA_ENDPOINT_PATTERN, value):
            raise ValueError("must be an opc.tcp://host:port/ URL")
        return value

    @model_validator(mode="after")
    def _unique(self) -> OpcuaSource:
        streams = [self.stream_prefix + n.stream for n in self.nodes]
        bad = sorted({s for s in streams if not is_name(s)})
        if bad:
            raise ValueError(f"stream_prefix + stream is not a valid name: {', '.join(bad)}")
        dupes = sorted({s for s in streams if streams.count(s) > 1})
        if dupes:
            raise ValueError(f"stream names must be unique: {', '.join(dupes)}")
        nodes = [n.node for n in self.nodes]
        dupes = sorted({n for n in nodes if nodes.count(n) > 1})
        if dupes:
            raise ValueError(f"a node is listed twice: {', '.join(dupes)}")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be below reconnect_min")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("a password needs a username")
        return self


# The one list of source types: a new driver's section goes here, and the loader's error
# paths (``_is_union_tag``) and ``SOURCE_TYPES`` in gateway/sources follow it.
SourceSection = Annotated[
    SerialSource | MqttSource | SimulateSource | ModbusSource | OpcuaSource,
    Field(discriminator="type"),
]


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


def check_backoff(section: Any) -> None:
    """An output's back-off bounds: after no answer (reconnect) and after a refusal (retry)."""
    if (
        section.reconnect_min_delay <= 0
        or section.reconnect_min_delay > section.reconnect_max_delay
    ):
        raise ValueError("need 0 < reconnect_min_delay <= reconnect_max_delay")
    if section.retry_min_delay <= 0 or section.retry_min_delay > section.retry_max_delay:
        raise ValueError("need 0 < retry_min_delay <= retry_max_delay")


class UpstreamSection(Section):
    broker: BrokerSection = Field(description="the broker alerts and events are published to")
    topic_prefix: str = Field("liquid-gateway", description="topics are <prefix>/<gateway.id>/...")
    qos: Literal[1, 2] = Field(1, description="1 or 2")
    max_inflight: int = Field(20, ge=1, le=1000, description="unacknowledged publishes at most")
    # Jittered so that a fleet that lost the same broker does not come back in lock-step.
    reconnect_min_delay: Duration = Field(
        1.0, description="reconnect back-off: doubles per failed attempt, jittered to 50-100 %..."
    )
    reconnect_max_delay: Duration = Field(60.0, description="...up to this")
    retry_min_delay: Duration = Field(
        2.0, description="a row the broker refused is parked and retried after this, doubling..."
    )
    retry_max_delay: Duration = Field(300.0, description="...up to this")
    drain_timeout: Duration = Field(
        5.0, description="on SIGTERM, how long in-flight publishes may take to be acknowledged"
    )
    confirm: Literal["none", "echo"] = Field(
        "none",
        description="none, or echo: a row is delivered only when it comes back from the broker (the only way to see refusals under 3.1.1)",
    )
    confirm_timeout: Duration = Field(
        10.0, description="with confirm: echo, a row not seen back by then is parked and retried"
    )

    @model_validator(mode="after")
    def _delays_ordered(self) -> UpstreamSection:
        check_backoff(self)
        if self.confirm_timeout <= 0:
            raise ValueError("confirm_timeout must be positive")
        return self

    def refusal_warning(self) -> str | None:
        """Why a publish the broker refuses would be counted as delivered, or None."""
        if self.broker.protocol == "3.1.1" and self.confirm == "none":
            return (
                'upstream.broker.protocol "3.1.1": the broker cannot signal a refused publish '
                "(an ACL denial is acknowledged like a success), so refused alerts are marked "
                'delivered and never retried; use protocol "5", or upstream.confirm: echo'
            )
        return None

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        parts = value.split("/")
        if not value or any(not is_name(p) for p in parts):
            raise ValueError(
                "topic_prefix must be '/'-separated names of letters, digits and _ . : -"
            )
        return value


_OUTPUT_NAME = (
    "the output's name in status, metrics and its delivery state (letters, digits, _ . : -)"
)


class MqttOutputSection(UpstreamSection):
    """One more MQTT broker alerts and events are published to, as ``upstream:`` is."""

    type: Literal["mqtt"] = Field(description="mqtt")
    name: Name = Field(examples=["site-broker"], description=_OUTPUT_NAME)


class _HttpOutputSection(Section):
    """What every output that POSTs to an HTTP server has: a request time-out, the back-off
    after no answer and after a refusal, the SIGTERM bound; ``url`` is checked the same way.
    Each type declares ``type``, ``name`` and ``url`` itself (``config sample`` and ``config
    show`` print ``type`` and ``name`` first, then a type's own keys, then these)."""

    timeout: Duration = Field(10.0, gt=0.0, le=300.0, description="how long one request may take")
    reconnect_min_delay: Duration = Field(
        1.0, description="after a request that got no answer, wait this long, doubling..."
    )
    reconnect_max_delay: Duration = Field(60.0, description="...up to this")
    retry_min_delay: Duration = Field(
        2.0, description="a record refused with 5xx, 408 or 429 is retried after this, doubling..."
    )
    retry_max_delay: Duration = Field(300.0, description="...up to this")
    drain_timeout: Duration = Field(
        5.0, description="on SIGTERM, how long the last requests may take"
    )

    @field_validator("url", check_fields=False)
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("url must not hold credentials; use secret_file to sign requests")
        return value

    @model_validator(mode="after")
    def _delays_ordered(self) -> Self:
        check_backoff(self)
        return self


class WebhookOutputSection(_HttpOutputSection):
    """Each alert and event POSTed as JSON; 2xx is delivered, 4xx (but 408, 429) is refused
    for good, anything else is retried."""

    type: Literal["webhook"] = Field(description="webhook")
    name: Name = Field(examples=["ops-hook"], description=_OUTPUT_NAME)
    url: str = Field(
        examples=["https://ops.example.com/hooks/liquid-gateway"],
        description="http:// or https:// URL the records are POSTed to",
    )
    secret_file: Path | None = Field(
        None,
        description="file holding the HMAC-SHA256 key; the body's signature goes in X-Gateway-Signature: sha256=<hex> (relative: from $CREDENTIALS_DIRECTORY when set, else the config's folder); null: unsigned",
    )


class AlertmanagerOutputSection(_HttpOutputSection):
    """Alerts as Prometheus Alertmanager alerts (POST /api/v2/alerts), so its silences,
    grouping and routing (email, Slack, PagerDuty) apply; events are not sent."""

    type: Literal["alertmanager"] = Field(description="alertmanager")
    name: Name = Field(examples=["alertmanager"], description=_OUTPUT_NAME)
    url: str = Field(
        examples=["http://127.0.0.1:9093"],
        description="Alertmanager's base URL (http:// or https://); alerts go to <url>/api/v2/alerts",
    )
    severity: Name = Field("warning", description="the severity label of every alert")
    resend_interval: Duration = Field(
        60.0,
        ge=1.0,
        le=3600.0,
        description="re-send every alert still active this often, as Prometheus does, so Alertmanager keeps it firing however long it lasts",
    )
    raised_for: Duration | None = Field(
        None,
        gt=0.0,
        description="endsAt of a raised alert, from when it is (re-)sent: Alertmanager resolves it by then unless re-sent (its clear ends it sooner); null: 4 resend_intervals",
    )

    @model_validator(mode="after")
    def _outlasts_a_resend(self) -> AlertmanagerOutputSection:
        if self.raised_for is not None and self.raised_for <= self.resend_interval:
            raise ValueError(
                "raised_for must be longer than resend_interval, or every alert resolves "
                "itself between two re-sends"
            )
        return self

    @property
    def ends_after(self) -> float:
        """How far ahead of a (re-)send a raised alert's endsAt is."""
        return self.raised_for if self.raised_for is not None else 4 * self.resend_interval


# The one list of output types: a new output's section goes here, and OUTPUT_TYPES in
# gateway/outputs names its class (tests/outputs/test_registry.py keeps the two in step).
OutputSection = Annotated[
    MqttOutputSection | WebhookOutputSection | AlertmanagerOutputSection,
    Field(discriminator="type"),
]

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
    """How much the gateway keeps track of: every stream costs memory (about 16 KiB once warm)
    and a checkpoint row (about 1 KB, 7.5 KB once its cycle history is full), so their number
    is capped."""

    max_streams: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="streams scored at once (~16 KiB of memory each); a reading of a new stream past it is a dead letter",
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


def _source_tags() -> frozenset[str]:
    """The ``type`` of every source section, read off the one union."""
    members = get_args(get_args(SourceSection)[0])
    return frozenset(get_args(m.model_fields["type"].annotation)[0] for m in members)


SOURCE_TAGS = _source_tags()


def _output_tags() -> frozenset[str]:
    """The ``type`` of every output section, read off the one union."""
    members = get_args(get_args(OutputSection)[0]) or (get_args(OutputSection)[0],)
    return frozenset(get_args(m.model_fields["type"].annotation)[0] for m in members)


OUTPUT_TAGS = _output_tags()


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
