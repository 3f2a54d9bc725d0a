"""Parsers and line framing: pure functions, tested directly and with Hypothesis."""

from __future__ import annotations

import contextlib
import json
import math
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.config import NAME_PATTERN, FieldSpec
from gateway.errors import ParseError
from gateway.sources.framing import LineFramer, Oversize
from gateway.sources.parsers import (
    JSON_MAX_DEPTH,
    MAX_FIELDS,
    RecordParser,
    ascii_float,
    check_json_depth,
    check_template,
    decode_payload,
    flatten_json,
    parse_number,
    parse_timestamp,
    render_stream,
)

NOW = 1_700_000_000.0
names = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


def same(name: str) -> str:
    return name


def parser(fmt: str, **kwargs: object) -> RecordParser:
    return RecordParser(source="test", format=fmt, **kwargs)  # type: ignore[arg-type]


def reason_of(fmt: str, text: str, **kwargs: object) -> str:
    with pytest.raises(ParseError) as info:
        parser(fmt, **kwargs).parse(text, NOW, same)
    return info.value.reason


# --- CSV -----------------------------------------------------------------------------------


def test_csv_line_gives_one_reading_per_field_with_units() -> None:
    p = parser(
        "csv",
        fields=["temperature", "pressure"],
        units={"pressure": FieldSpec(scale=0.001, offset=1.0, unit="bar")},
    )
    parsed = p.parse("21.5, 1200\r", NOW, lambda f: "line-a." + f)
    assert [(r.stream, r.value, r.unit, r.ts) for r in parsed.readings] == [
        ("line-a.temperature", 21.5, None, NOW),
        ("line-a.pressure", pytest.approx(2.2), "bar", NOW),
    ]
    assert parsed.rejects == []


def test_csv_bad_records() -> None:
    fields = ["a", "b"]
    assert reason_of("csv", "1,2,3", fields=fields) == "field_count"
    assert reason_of("csv", "a,b", fields=fields) == "header"
    assert reason_of("csv", "x,y", fields=fields) == "not_a_number"
    assert reason_of("csv", "   ", fields=fields) == "empty"
    assert reason_of("csv", "nan,inf", fields=fields) == "non_finite"
    assert reason_of("csv", "1,2", fields=fields, delimiter=";") == "field_count"


def test_csv_partly_bad_record_keeps_good_fields_and_reports_the_rest() -> None:
    parsed = parser("csv", fields=["a", "b", "c"]).parse("1.5,oops,", NOW, same)
    assert [(r.stream, r.value) for r in parsed.readings] == [("a", 1.5)]
    assert [(r.field, r.reason) for r in parsed.rejects] == [
        ("b", "not_a_number"),
        ("c", "missing_value"),
    ]
    assert "b: not_a_number" in parsed.rejects_detail()


def test_csv_timestamp_column() -> None:
    p = parser("csv", fields=["ts", "t"], timestamp_field="ts")
    parsed = p.parse("1700000123456,20", NOW, same)
    assert [(r.stream, r.ts) for r in parsed.readings] == [("t", 1_700_000_123.456)]
    assert reason_of("csv", "yesterday,20", fields=["ts", "t"], timestamp_field="ts") == (
        "bad_timestamp"
    )


@given(st.dictionaries(names, finite, min_size=1, max_size=8), st.sampled_from([",", ";", "\t"]))
def test_csv_round_trip(values: dict[str, float], delimiter: str) -> None:
    line = delimiter.join(repr(v) for v in values.values())
    parsed = parser("csv", fields=list(values), delimiter=delimiter).parse(line, NOW, same)
    assert {r.stream: r.value for r in parsed.readings} == values


# --- key=value -----------------------------------------------------------------------------


def test_kv_space_and_comma_separated() -> None:
    p = parser("kv")
    for line in (
        "temperature=21.5 pressure=1.2",
        "temperature=21.5,pressure=1.2",
        "temperature=21.5, pressure=1.2\r",
    ):
        parsed = p.parse(line, NOW, same)
        assert {r.stream: r.value for r in parsed.readings} == {
            "temperature": 21.5,
            "pressure": 1.2,
        }


def test_kv_bad_parts_and_names() -> None:
    parsed = parser("kv").parse("a=1 junk b=x bad/name=3 a=2", NOW, same)
    assert [r.stream for r in parsed.readings] == ["a"]
    assert sorted(r.reason for r in parsed.rejects) == [
        "bad_pair",
        "bad_stream_name",
        "duplicate_field",
        "not_a_number",
    ]
    assert reason_of("kv", "junk") == "bad_pair"


def test_kv_field_list_selects_keys() -> None:
    parsed = parser("kv", fields=["a"]).parse("a=1 status=OK", NOW, same)
    assert [(r.stream, r.value) for r in parsed.readings] == [("a", 1.0)]
    assert parsed.rejects == []


@given(st.dictionaries(names, finite, min_size=1, max_size=8), st.sampled_from([" ", ",", ", "]))
def test_kv_round_trip(values: dict[str, float], separator: str) -> None:
    line = separator.join(f"{k}={v!r}" for k, v in values.items())
    parsed = parser("kv").parse(line, NOW, same)
    assert {r.stream: r.value for r in parsed.readings} == values


# --- JSON ------------------------------------------------------------------------------------


def test_json_flattens_nested_objects_and_ignores_metadata() -> None:
    text = '{"id": "pump-1", "on": true, "t": 21.5, "motor": {"rpm": 1450, "temp": 60.5}}'
    parsed = parser("json").parse(text, NOW, same)
    assert {r.stream: r.value for r in parsed.readings} == {
        "t": 21.5,
        "motor.rpm": 1450.0,
        "motor.temp": 60.5,
    }
    assert parsed.rejects == []


def test_json_explicit_fields_accept_numeric_strings_and_reject_others() -> None:
    p = parser("json", fields=["a", "b", "c"])
    parsed = p.parse('{"a": "1.5", "b": "high", "c": null, "d": 4}', NOW, same)
    assert [(r.stream, r.value) for r in parsed.readings] == [("a", 1.5)]
    assert [r.reason for r in parsed.rejects] == ["not_a_number", "not_a_number"]


def test_json_bad_records() -> None:
    assert reason_of("json", "{nope") == "bad_json"
    assert reason_of("json", "[1, 2]") == "not_an_object"
    assert reason_of("json", '{"state": "ok"}') == "no_numeric_fields"
    assert reason_of("json", '{"t": NaN}') == "non_finite"
    assert reason_of("json", '{"t": 1e999}') == "non_finite"
    assert reason_of("json", '{"t": ' + "9" * 400 + "}") == "non_finite"
    assert reason_of("json", '{"t": ' + "9" * 5000 + "}") == "bad_json"
    assert reason_of("json", '{"bad name": 1}') == "bad_stream_name"
    # "$" in a re.match pattern also matches before a final newline: names are checked whole.
    assert reason_of("json", '{"ok\\n": 1}') == "bad_stream_name"
    deep = '{"a":' * (JSON_MAX_DEPTH + 1) + "1" + "}" * (JSON_MAX_DEPTH + 1)
    assert reason_of("json", deep) == "json_too_deep"
    many = json.dumps({f"f{i}": i for i in range(MAX_FIELDS + 1)})
    assert reason_of("json", many) == "too_many_fields"


def test_json_depth_is_checked_before_parsing_and_ignores_brackets_in_strings() -> None:
    check_json_depth('{"a": "[[[[[[[[[[[[[[[[[[[[", "b": "\\"{{{{{{{{{{{{{{"}')
    with pytest.raises(ParseError, match="json_too_deep"):
        check_json_depth("[" * 100_000)  # json.loads would hit the recursion limit
    ok = '{"a":' * JSON_MAX_DEPTH + "1" + "}" * JSON_MAX_DEPTH
    assert flatten_json(ok) == [("a." * (JSON_MAX_DEPTH - 1) + "a", 1)]


def test_json_timestamps() -> None:
    p = parser("json", timestamp_field="ts")
    cases = {
        '{"ts": 1700000000, "t": 1}': 1_700_000_000.0,
        '{"ts": 1700000000500, "t": 1}': 1_700_000_000.5,
        '{"ts": "2023-11-14T22:13:20Z", "t": 1}': 1_700_000_000.0,
        '{"ts": "2023-11-14T23:13:20+01:00", "t": 1}': 1_700_000_000.0,
        '{"ts": "2023-11-14 22:13:20", "t": 1}': 1_700_000_000.0,
        '{"t": 1}': NOW,
    }
    for text, ts in cases.items():
        assert [r.ts for r in p.parse(text, NOW, same).readings] == [ts], text
    for bad in ('"soon"', "12", "true", "1e300", '"2023-13-45"'):
        assert reason_of("json", f'{{"ts": {bad}, "t": 1}}', timestamp_field="ts") == (
            "bad_timestamp"
        )


@given(st.dictionaries(names, st.one_of(finite, st.dictionaries(names, finite, max_size=3))))
def test_json_round_trip(document: dict[str, object]) -> None:
    expected = {}
    for key, value in document.items():
        if isinstance(value, dict):
            expected.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            expected[key] = value
    if not expected:
        assert reason_of("json", json.dumps(document)) == "no_numeric_fields"
        return
    parsed = parser("json").parse(json.dumps(document), NOW, same)
    assert {r.stream: r.value for r in parsed.readings} == expected


# --- plain numbers, payloads, timestamps, templates -------------------------------------


def test_plain_number() -> None:
    assert parse_number(" 21.5\n") == 21.5
    assert parse_number("-1e3") == -1000.0
    for text, reason in [
        ("", "empty"),
        ("abc", "not_a_number"),
        ("1_000", "not_a_number"),
        ("nan", "non_finite"),
        ("-Infinity", "non_finite"),
        ("0x10", "not_a_number"),
    ]:
        with pytest.raises(ParseError) as info:
            parse_number(text)
        assert info.value.reason == reason, text


# Digits that float() takes but no device writes on purpose: full-width (U+FF10..),
# Arabic-Indic (U+0660..), Devanagari (U+0966..), alone or among ASCII digits.
NOT_ASCII_NUMBERS = ["１２３", "２１.５", "-１e3", "١٢٣", "२१", "2\u0661", "1.5e\uff12"]


@pytest.mark.parametrize("text", NOT_ASCII_NUMBERS)
def test_only_ascii_number_text_is_a_number(text: str) -> None:
    """Every format's values go through one rule: ``float()`` alone would take these."""
    with pytest.raises(ValueError):
        ascii_float(text)
    with pytest.raises(ParseError) as info:
        parse_number(text)
    assert info.value.reason == "not_a_number"
    with pytest.raises(ParseError) as info:
        parse_timestamp(text)
    assert info.value.reason == "bad_timestamp"
    # csv, key=value, JSON strings named in fields, regex groups: the value is rejected,
    # the ASCII value beside it is kept.
    for fmt, kwargs, record in [
        ("csv", {"fields": ["a", "b"]}, f"{text},7"),
        ("kv", {}, f"a={text} b=7"),
        ("json", {"fields": ["a", "b"]}, json.dumps({"a": text, "b": 7})),
        ("regex", {"pattern": r"a=(?P<a>\S+) b=(?P<b>\S+)"}, f"a={text} b=7"),
    ]:
        parsed = parser(fmt, **kwargs).parse(record, NOW, same)
        assert [(r.stream, r.value) for r in parsed.readings] == [("b", 7.0)], fmt
        assert [(j.field, j.reason) for j in parsed.rejects] == [("a", "not_a_number")], fmt
    assert ascii_float(" 21.5\t") == 21.5 and ascii_float("-1E3") == -1000.0


@given(finite)
def test_plain_number_round_trip(value: float) -> None:
    assert parse_number(repr(value)) == value


def test_decode_payload() -> None:
    assert decode_payload(b"21.5", 16) == "21.5"
    for payload, reason in [
        (b"1" * 17, "payload_too_large"),
        (b"\xff\xfe", "bad_utf8"),
        (b"", "empty"),
        (b" \n", "empty"),
    ]:
        with pytest.raises(ParseError) as info:
            decode_payload(payload, 16)
        assert info.value.reason == reason


def test_timestamp_range() -> None:
    assert parse_timestamp("946684800") == 946_684_800.0
    with pytest.raises(ParseError):
        parse_timestamp(-5)
    with pytest.raises(ParseError):
        parse_timestamp(float("nan"))


def test_stream_templates() -> None:
    topic = "plant/pump-1/telemetry"
    assert render_stream("{topic}.{field}", topic, "t") == "plant.pump-1.telemetry.t"
    assert render_stream("{1}.{field}", topic, "t") == "pump-1.t"
    assert render_stream("{0}-{2}", topic, "") == "plant-telemetry"
    for template, bad_topic in [("{5}", topic), ("{topic}", "plant/a b"), ("{0}", "+weird")]:
        with pytest.raises(ParseError, match="bad_stream_name"):
            render_stream(template, bad_topic, "t")
    check_template("{topic}.{field}")
    for bad in ("{topic.__class__}", "{x}", "{topic", "a}"):
        with pytest.raises(ValueError):
            check_template(bad)


# --- robustness: only ParseError, ever; every stream name valid ------------------------

name_re = re.compile(NAME_PATTERN)
all_parsers = [
    parser("csv", fields=["a", "b", "c"]),
    parser("csv", fields=["ts", "a"], delimiter=";", timestamp_field="ts"),
    parser("kv"),
    parser("kv", timestamp_field="ts", units={"a": FieldSpec(scale=1e308)}),
    parser("json"),
    parser("json", fields=["a", "b.c"], timestamp_field="ts"),
    parser("number"),
    parser("regex", pattern=r"T=(?P<t>\S+)(?: P=(?P<p>\S+))?", units={"t": FieldSpec(scale=2)}),
    parser("regex", pattern=r"^(?P<ts>\d+);(?P<a>[^;]*)$", timestamp_field="ts"),
]
json_like = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
).map(lambda doc: json.dumps(doc))
texts = st.one_of(
    st.text(max_size=300),
    st.text(alphabet='0123456789.,;=eE+- \t{}[]":abnt\\', max_size=200),
    json_like,
)


@settings(max_examples=300)
@given(texts)
@example('{"ok\\n": 1}')
def test_parsers_raise_only_parse_error(text: str) -> None:
    for p in all_parsers:
        try:
            parsed = p.parse(text, NOW, lambda f: "s." + f)
        except ParseError as exc:
            assert re.fullmatch(r"[a-z_]+", exc.reason)
            continue
        assert parsed.readings
        for reading in parsed.readings:
            assert math.isfinite(reading.value)
            assert math.isfinite(reading.ts)
            assert name_re.fullmatch(reading.stream)


@given(st.binary(max_size=300))
def test_payload_bytes_raise_only_parse_error(payload: bytes) -> None:
    try:
        text = decode_payload(payload, 256)
    except ParseError:
        return
    for p in all_parsers:
        with contextlib.suppress(ParseError):
            p.parse(text, NOW, same)


@given(st.text(max_size=40), st.text(max_size=12), st.text(max_size=12))
def test_templates_raise_only_parse_error(topic: str, field: str, template: str) -> None:
    for tpl in ("{topic}.{field}", "{0}.{1}", template):
        try:
            check_template(tpl)
            name = render_stream(tpl, topic, field)
        except (ParseError, ValueError):
            continue
        assert name_re.fullmatch(name)


# --- framing ---------------------------------------------------------------------------------

line_bytes = st.binary(max_size=40).filter(lambda b: b"\n" not in b and not b.endswith(b"\r"))


@given(
    st.lists(line_bytes, max_size=20),
    st.sampled_from([b"\n", b"\r\n"]),
    st.lists(st.integers(1, 50), min_size=1, max_size=30),
)
def test_framer_any_chunking_gives_the_same_lines(
    lines: list[bytes], end: bytes, cuts: list[int]
) -> None:
    stream = b"".join(line + end for line in lines)
    framer = LineFramer(max_line=40)
    out: list[bytes | Oversize] = []
    pos, i = 0, 0
    while pos < len(stream):
        size = cuts[i % len(cuts)]
        out += framer.feed(stream[pos : pos + size])
        pos, i = pos + size, i + 1
    assert out == lines
    assert framer.pending == b""


@given(st.integers(41, 500), st.lists(st.integers(1, 64), min_size=1, max_size=10))
def test_framer_oversized_line_then_resync(long: int, cuts: list[int]) -> None:
    stream = b"ok1\r\n" + b"x" * long + b"\r\nok2\npart"
    framer = LineFramer(max_line=40)
    out: list[bytes | Oversize] = []
    pos, i = 0, 0
    while pos < len(stream):
        out += framer.feed(stream[pos : pos + cuts[i % len(cuts)]])
        pos, i = pos + cuts[i % len(cuts)], i + 1
    assert out[0] == b"ok1"
    assert isinstance(out[1], Oversize) and out[1].head.startswith(b"x" * 40)
    assert out[2:] == [b"ok2"]
    assert framer.pending == b"part"


def test_framer_line_of_exactly_max_line_is_kept() -> None:
    framer = LineFramer(max_line=4)
    assert framer.feed(b"abcd\r") == []
    assert framer.feed(b"\nabcde\n") == [b"abcd", Oversize(b"abcde", 4)]


# --- regex ---------------------------------------------------------------------------------


def test_regex_named_groups_are_fields_with_units_and_device_time() -> None:
    p = parser(
        "regex",
        pattern=r"(?P<ts>\S+) T=(?P<temperature>\S+)C P=(?P<pressure>\S+)mbar",
        timestamp_field="ts",
        units={"pressure": FieldSpec(scale=0.001, unit="bar")},
    )
    parsed = p.parse("2023-11-14T22:13:20Z T=21.5C P=1013mbar", NOW, lambda f: "x." + f)
    assert [(r.stream, r.value, r.unit, r.ts) for r in parsed.readings] == [
        ("x.temperature", 21.5, None, 1_700_000_000.0),
        ("x.pressure", pytest.approx(1.013), "bar", 1_700_000_000.0),
    ]


def test_regex_bad_lines() -> None:
    pattern = r"T=(?P<t>\S+)(?: P=(?P<p>\S+))?"
    assert reason_of("regex", "hello", pattern=pattern) == "no_match"
    assert reason_of("regex", "T=hot", pattern=pattern) == "not_a_number"
    assert reason_of("regex", "T=nan", pattern=pattern) == "non_finite"
    only_t = parser("regex", pattern=pattern).parse("T=1", NOW, same)  # optional group absent
    assert [(r.stream, r.value) for r in only_t.readings] == [("t", 1.0)]


def test_regex_patterns_are_checked() -> None:
    with pytest.raises(ValueError, match="compile"):
        parser("regex", pattern="(?P<a>")
    with pytest.raises(ValueError, match="named group"):
        parser("regex", pattern=r"(\d+)")
    with pytest.raises(ValueError, match="named group"):
        parser("regex", pattern=r"(?P<ts>\d+)", timestamp_field="ts")


@given(st.dictionaries(names, finite, min_size=1, max_size=6))
def test_regex_round_trip(values: dict[str, float]) -> None:
    pattern = " ".join(f"{k}:(?P<{k}>\\S+)" for k in values)
    line = " ".join(f"{k}:{v!r}" for k, v in values.items())
    parsed = parser("regex", pattern=pattern).parse(line, NOW, same)
    assert {r.stream: r.value for r in parsed.readings} == values
