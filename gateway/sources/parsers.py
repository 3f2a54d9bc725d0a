"""Turn one line or payload of device text into readings — pure functions, no I/O.

Every source funnels its input through here so that one set of rules decides what is a
reading and what is a dead letter, and so those rules can be tested without hardware.

Two kinds of failure:

* the record as a whole is unusable (not JSON, wrong number of CSV columns, a bad
  timestamp, too deep, too many fields): ``ParseError`` is raised and the source stores
  one dead letter for the whole record;
* some fields are bad and others good: the good readings are kept and the bad fields are
  returned as ``rejects``, which the source stores as ONE dead letter for the record
  (reason = the first bad field's reason, detail = every bad field). One dead letter per
  record, not per field, keeps a noisy device from flooding the table while the reason
  count still says what went wrong. A record whose fields are all bad raises
  ``ParseError`` like a wholly bad record.

Reason codes (stable, counted in ``status``): ``empty``, ``bad_utf8``,
``payload_too_large``, ``bad_json``, ``json_too_deep``, ``not_an_object``,
``field_count``, ``header``, ``too_many_fields``, ``bad_pair``, ``duplicate_field``,
``missing_value``, ``not_a_number``, ``non_finite``, ``no_numeric_fields``,
``bad_timestamp``, ``bad_stream_name``, ``no_match`` (a regex line that does not match),
and, from the sources, ``line_too_long``, ``partial_line``, ``no_route`` (an MQTT topic
that matches no subscription: an unknown stream), ``stream_collision`` (an MQTT topic or
field whose stream name another topic or field gave first), ``too_many_streams``,
``modbus_exception``, ``bad_response``.
Keys left out of a ``fields`` list are a deliberate selection, not bad input: skipped.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from gateway.config import FieldSpec, check_regex, is_name
from gateway.errors import ParseError
from gateway.records import Reading

Format = Literal["csv", "kv", "json", "regex", "number"]
StreamNamer = Callable[[str], str]

JSON_MAX_DEPTH = 8  # nesting of objects/arrays, checked before json.loads
MAX_FIELDS = 1024  # fields in one record; more is a misconfigured or hostile device
NUMBER_FIELD = "value"  # the field name a plain-number payload is known by
# Device timestamps outside this window are a device clock problem, not a reading time.
EPOCH_MIN = 946_684_800.0  # 2000-01-01
EPOCH_MAX = 4_102_444_800.0  # 2100-01-01
_MS_THRESHOLD = 1e11  # larger epoch numbers are milliseconds (1e11 s is the year 5138)

_NON_FINITE_RE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
_KV_SPLIT_RE = re.compile(r"[,\s]+")
# A JSON string, or an unterminated one running to the end: possessive, so linear time.
_JSON_STRING_RE = re.compile(r'"(?:[^"\\]|\\[\s\S])*+"?')
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_TEMPLATE_RE = re.compile(r"\{([^{}]*)\}")
_json_decode = json.JSONDecoder().decode  # json.loads(text) for text, without its wrapper


@dataclass(frozen=True, slots=True)
class FieldReject:
    field: str
    reason: str
    detail: str = ""


class Parsed(NamedTuple):
    """A record's readings and its rejected fields. A named tuple, not a frozen dataclass:
    one is made per message on the MQTT source's hot path (#16 item 5)."""

    readings: list[Reading]
    rejects: Sequence[FieldReject] = ()

    def rejects_detail(self, limit: int = 8) -> str:
        return describe_rejects(self.rejects, limit)


def describe_rejects(rejects: Sequence[FieldReject], limit: int = 8) -> str:
    parts = [f"{r.field}: {r.reason}" + (f" ({r.detail})" if r.detail else "") for r in rejects]
    text = "; ".join(parts[:limit])
    if len(parts) > limit:
        text += f"; +{len(parts) - limit} more"
    return text


def clip_text(value: Any, limit: int = 40) -> str:
    """Device text for a detail or log line: clipped, and quoted unless plainly printable
    (a newline in a field name must not forge a log line)."""
    text = value if isinstance(value, str) and value.isprintable() else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- payload and value checks ------------------------------------------------------------


def decode_payload(payload: bytes, max_bytes: int) -> str:
    """Bytes of one MQTT payload -> text, with the size bound checked first."""
    if len(payload) > max_bytes:
        raise ParseError("payload_too_large", f"{len(payload)} bytes, limit {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError("bad_utf8", f"invalid byte at offset {exc.start}") from exc
    if not text.strip():
        raise ParseError("empty")
    return text


def ascii_float(text: str) -> float:
    """The one rule for a number written as text, for every source and for replay: what
    ``float()`` takes of ASCII text, except ``_`` between digits. ``float()`` alone also takes
    the digits of other scripts (full-width ``１２３``, Arabic-Indic ``١٢٣``) and other
    blanks around them, which no device writes on purpose. ValueError for anything else;
    ``nan`` and ``inf`` pass, as with ``float()`` (callers decide about non-finite values)."""
    if text.isascii() and "_" not in text:
        return float(text)  # ValueError for the rest
    raise ValueError(f"not ASCII number text: {clip_text(text)}")


def parse_float(raw: Any) -> float:
    """A finite float from a JSON number or a decimal string (ASCII only: ``ascii_float``);
    never from bool or None."""
    if type(raw) is float and math.isfinite(raw):
        return raw  # a JSON number with a fraction: most readings
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ParseError("not_a_number", clip_text(raw))
    try:
        if isinstance(raw, str):
            text = raw.strip()
            if not text:
                raise ParseError("missing_value")
            if _NON_FINITE_RE.fullmatch(text):
                raise ParseError("non_finite", clip_text(raw))
            value = ascii_float(raw)  # the text as sent: blanks of other scripts too
        else:
            value = float(raw)
    except ValueError as exc:
        raise ParseError("not_a_number", clip_text(raw)) from exc
    except OverflowError as exc:  # a huge JSON integer
        raise ParseError("non_finite", "number too large") from exc
    if not math.isfinite(value):
        raise ParseError("non_finite", clip_text(raw))
    return value


def parse_number(text: str) -> float:
    """A plain-number payload such as ``21.5``."""
    if not text.strip():
        raise ParseError("empty")
    return parse_float(text)


def parse_timestamp(raw: Any) -> float:
    """Epoch seconds, epoch milliseconds or ISO 8601 (naive = UTC) -> epoch seconds."""
    if type(raw) is float and EPOCH_MIN <= raw <= EPOCH_MAX:
        return raw  # epoch seconds as a JSON number: what the checks below would return
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ParseError("bad_timestamp", clip_text(raw))
    if isinstance(raw, str) and len(raw) > 64:
        raise ParseError("bad_timestamp", "longer than 64 characters")
    try:
        value = ascii_float(raw) if isinstance(raw, str) else float(raw)
    except OverflowError as exc:
        raise ParseError("bad_timestamp", "number too large") from exc
    except ValueError:
        try:
            moment = dt.datetime.fromisoformat(str(raw).strip())  # only text gets here
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            value = moment.timestamp()
        except (ValueError, OverflowError, OSError) as exc:
            raise ParseError("bad_timestamp", clip_text(raw)) from exc
    if not math.isfinite(value):
        raise ParseError("bad_timestamp", clip_text(raw))
    if value >= _MS_THRESHOLD:
        value /= 1000.0
    if not EPOCH_MIN <= value <= EPOCH_MAX:
        raise ParseError("bad_timestamp", f"{clip_text(raw)} is not between 2000 and 2100")
    return value


def check_stream_name(name: str) -> str:
    if not is_name(name):
        raise ParseError("bad_stream_name", clip_text(name))
    return name


# --- tokenisers: text -> (field, raw value) pairs ----------------------------------------


def split_csv(text: str, fields: Sequence[str], delimiter: str = ",") -> list[tuple[str, str]]:
    """One CSV line whose columns are ``fields``, in order. No quoting: sensors do not quote."""
    cells = [cell.strip() for cell in text.strip().split(delimiter)]
    if len(cells) != len(fields):
        raise ParseError("field_count", f"{len(cells)} columns, expected {len(fields)}")
    if [c.strip("\"'").lower() for c in cells] == [f.lower() for f in fields]:
        raise ParseError("header", "a header line, not readings")
    return list(zip(fields, cells, strict=True))


def split_kv(text: str) -> tuple[list[tuple[str, str]], list[FieldReject]]:
    """``temperature=21.5 pressure=1.2`` or ``temperature=21.5,pressure=1.2``."""
    pairs: list[tuple[str, str]] = []
    rejects: list[FieldReject] = []
    for token in _KV_SPLIT_RE.split(text.strip()):
        if not token:
            continue
        key, sep, value = token.partition("=")
        if not sep or not key:
            rejects.append(FieldReject(clip_text(token, 24), "bad_pair", "expected key=value"))
        else:
            pairs.append((key, value))
        if len(pairs) + len(rejects) > MAX_FIELDS:
            raise ParseError("too_many_fields", f"more than {MAX_FIELDS}")
    return pairs, rejects


def split_regex(text: str, pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    """The named groups of the first match; groups that did not take part are left out."""
    match = pattern.search(text)
    if match is None:
        raise ParseError("no_match", "the line does not match the pattern")
    return [(name, value) for name, value in match.groupdict().items() if value is not None]


def check_json_depth(text: str, limit: int = JSON_MAX_DEPTH) -> None:
    """Reject nesting deeper than ``limit`` without parsing (json.loads recurses)."""
    if text.count("[") + text.count("{") <= limit:
        return  # brackets inside strings only add to this bound: the usual flat payload
    brackets = _NOT_BRACKET_RE.sub("", _JSON_STRING_RE.sub("", text))
    if brackets.count("[") + brackets.count("{") <= limit:
        return
    depth = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            if depth > limit:
                raise ParseError("json_too_deep", f"nesting deeper than {limit}")
        elif char in "]}":
            depth -= 1


def is_flat(document: dict[str, Any]) -> bool:
    """No nested object and at most ``MAX_FIELDS`` keys: its items are already the (key,
    leaf) pairs ``flatten_json`` gives. (``json.loads`` makes plain dicts only, so the type
    test runs in C.)"""
    return len(document) <= MAX_FIELDS and dict not in map(type, document.values())


def flatten_json(text: str, max_depth: int = JSON_MAX_DEPTH) -> list[tuple[str, Any]]:
    """A JSON object -> (dotted key, leaf) pairs; nested objects joined with '.'."""
    check_json_depth(text, max_depth)
    try:
        document = _json_decode(text)
    except (ValueError, RecursionError) as exc:
        raise ParseError("bad_json", str(exc)[:120]) from exc
    if not isinstance(document, dict):
        raise ParseError("not_an_object", f"a JSON {type(document).__name__}")
    if is_flat(document):
        return list(document.items())  # the common case: what walk() would return
    pairs: list[tuple[str, Any]] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            else:
                pairs.append((name, value))
                if len(pairs) > MAX_FIELDS:
                    raise ParseError("too_many_fields", f"more than {MAX_FIELDS}")

    walk(document, "")
    return pairs


# --- stream names ------------------------------------------------------------------------


def check_template(template: str) -> None:
    """Raise ValueError for placeholders other than {topic}, {field} and {0}, {1}, ..."""
    for match in _TEMPLATE_RE.finditer(template):
        key = match.group(1)
        if key not in ("topic", "field") and not key.isdigit():
            raise ValueError(f"unknown placeholder {{{key}}} (use {{topic}}, {{field}}, {{0}})")
    if "{" in _TEMPLATE_RE.sub("", template) or "}" in _TEMPLATE_RE.sub("", template):
        raise ValueError("unbalanced '{' or '}'")


@functools.lru_cache(maxsize=65_536)
def render_stream(template: str, topic: str, field_name: str) -> str:
    """Fill a stream template from an MQTT topic and a JSON key (no str.format: no attribute
    access from config text). A topic segment that does not exist is ``bad_stream_name``.
    Cached: a gateway sees the same few thousand topics and keys over and over (bounded, and
    a name that fails is not cached, so junk topics cannot crowd it)."""
    segments = topic.split("/")

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "topic":
            return ".".join(segments)
        if key == "field":
            return field_name
        index = int(key)
        if index >= len(segments):
            raise ParseError(
                "bad_stream_name", f"topic {clip_text(topic)} has no segment {{{key}}}"
            )
        return segments[index]

    return check_stream_name(_TEMPLATE_RE.sub(fill, template))


# --- pairs -> readings -------------------------------------------------------------------


class RecordParser:
    """One source's parsing rules, bound once from its config section."""

    def __init__(
        self,
        *,
        source: str,
        format: Format,
        fields: Sequence[str] = (),
        delimiter: str = ",",
        timestamp_field: str | None = None,
        units: Mapping[str, FieldSpec] | None = None,
        max_depth: int = JSON_MAX_DEPTH,
        pattern: str | None = None,
    ) -> None:
        if format == "csv" and not fields:
            raise ValueError("csv needs the list of fields")
        self.pattern = check_regex(pattern, timestamp_field) if format == "regex" else None
        self.source = source
        self.format = format
        self.fields = tuple(fields)
        self._take = frozenset(fields) if fields and format != "csv" else None
        self.delimiter = delimiter
        self.timestamp_field = timestamp_field
        self.units = dict(units or {})
        self.max_depth = max_depth

    def parse(self, text: str, received: float, stream_name: StreamNamer) -> Parsed:
        if not text.strip():
            raise ParseError("empty")
        rejects: list[FieldReject] = []
        pairs: list[tuple[str, Any]]
        if self.format == "csv":
            pairs = list(split_csv(text, self.fields, self.delimiter))
        elif self.format == "kv":
            kv_pairs, rejects = split_kv(text)
            pairs = list(kv_pairs)
        elif self.format == "json":
            pairs = flatten_json(text, self.max_depth)
        elif self.pattern is not None:
            pairs = list(split_regex(text, self.pattern))
        else:
            pairs = [(NUMBER_FIELD, parse_number(text))]
        if len(pairs) > MAX_FIELDS:
            raise ParseError("too_many_fields", f"{len(pairs)} fields, limit {MAX_FIELDS}")

        ts = received
        if self.timestamp_field is not None:
            for name, raw in pairs:
                if name == self.timestamp_field:  # the first one; _readings skips them all
                    ts = parse_timestamp(raw)
                    break
        readings = self._readings(pairs, ts, stream_name, rejects)
        if readings:
            return Parsed(readings, rejects)
        if rejects:
            raise ParseError(rejects[0].reason, describe_rejects(rejects))
        raise ParseError("no_numeric_fields", "nothing in the record is a number")

    def _readings(
        self,
        pairs: Iterable[tuple[str, Any]],
        ts: float,
        stream_name: StreamNamer,
        rejects: list[FieldReject],
    ) -> list[Reading]:
        readings: list[Reading] = []
        seen: set[str] = set()
        take, skip, units, source = self._take, self.timestamp_field, self.units, self.source
        # JSON is typed: without a field list, its strings and booleans are metadata
        # (ids, states), not readings. In CSV and key=value text every value should be a number.
        only_numbers = self.format == "json" and take is None
        for name, raw in pairs:
            if name == skip or (take is not None and name not in take):
                continue  # the timestamp field, or a key left out of the field list
            if only_numbers and (isinstance(raw, bool) or not isinstance(raw, int | float)):
                continue
            try:
                value = parse_float(raw)
                stream = stream_name(name)
                check_stream_name(stream)
                spec = (units.get(name) or units.get(stream)) if units else None
                if spec is not None:
                    value = value * spec.scale + spec.offset
                    if not math.isfinite(value):
                        raise ParseError("non_finite", "after scale/offset")
                if stream in seen:
                    raise ParseError("duplicate_field", stream)
            except ParseError as exc:
                rejects.append(FieldReject(clip_text(name, 64), exc.reason, exc.detail))
                continue
            seen.add(stream)
            unit = spec.unit if spec is not None else None
            readings.append(Reading(stream, ts, value, source, unit))
        return readings
