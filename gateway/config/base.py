"""What every config section is built of: the frozen ``Section`` base, durations and sizes
as the config spells them (``90s``, ``512MB``), detector spans (``300x``), names, and the
broker and TLS sections that sources and outputs share.

The sections themselves live beside each other by what they configure: one module per
source type in ``sources/``, one per output type in ``outputs/``, the rest in ``schema.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    field_validator,
)

from gateway.config.locate import is_name

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


def sections_by_type(union: Any) -> dict[str, type[Section]]:
    """The registry of a discriminated union of sections: each member under its ``type``
    tag, in the union's order (the order an error lists the expected tags in)."""
    members = get_args(get_args(union)[0]) or (get_args(union)[0],)
    registry: dict[str, type[Section]] = {}
    for member in members:
        (tag,) = get_args(member.model_fields["type"].annotation)
        if tag in registry:
            raise TypeError(f"two sections have type {tag!r}")
        registry[tag] = member
    return registry
