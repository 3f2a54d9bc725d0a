"""Offline backtest: a CSV file through the same detector the daemon runs, row by row.

Strictly causal: row t's output depends only on rows <= t (rows are fed one tick each, in
file order, and the output row is written before the next input row is read). Every numeric
column other than the time column is one channel; all channels of a file form one asset.
Output: one row per input row, same order: ``timestamp`` (as in the input),
``anomaly_score``, ``alert``, then ``expected_<channel>`` for each channel.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TextIO

from gateway.config import Config, check_name
from gateway.detector import Detector
from gateway.errors import GatewayError
from gateway.model.runtime import StepModel
from gateway.sources.parsers import ascii_float

log = logging.getLogger(__name__)

TIME_COLUMN_NAMES = ("timestamp", "datetime", "time", "date", "ts")
_SNIFF_ROWS = 200
_NUMERIC_SHARE = 0.8


class ReplayError(GatewayError):
    pass


class BadInputError(ReplayError):
    """The file was read but is not a table replay can score (the CLI exits 65, EX_DATAERR)."""


_SEPARATORS = (",", ";", "\t", "|")
_BINARY_SHARE = 0.05  # more undecodable characters than this in the first 64 KiB: not text


@dataclass
class ReplaySummary:
    rows: int = 0
    channels: list[str] = field(default_factory=list)
    alerts_raised: int = 0
    bad_cells: int = 0  # non-numeric or non-finite cells, taken as missing
    bad_timestamps: int = 0
    seconds: float = 0.0
    core: str = ""  # the detector core that ran: "compiled" or "python"


def parse_time(text: str) -> float:
    text = text.strip()
    if ":" not in text:  # a number never has a colon: ISO times skip the failing attempt
        try:
            value = ascii_float(text)
        except ValueError:
            pass
        else:
            if not math.isfinite(value):
                raise ValueError("non-finite timestamp")
            return value / 1000.0 if value > 1e11 else value  # epoch milliseconds
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:  # UTC: what timestamp() of it as UTC is (the same timedelta)
        return (moment - _EPOCH).total_seconds()
    return moment.timestamp()


_EPOCH = dt.datetime(1970, 1, 1)  # naive, as the times without a zone are taken: UTC


def _is_number(text: str) -> bool:
    """Number text by the sources' one rule (``ascii_float``: ASCII only); ``nan`` counts."""
    try:
        ascii_float(text)
    except ValueError:
        return False
    return True


def _looks_like_data(header: list[str]) -> bool:
    """A first line of numbers only is data, not column names; but 0, 1, 2, ... (the header
    pandas writes for unnamed columns) are names."""
    named = [h for h in header if h]
    if not named or not all(_is_number(h) for h in named):
        return False
    if all(h.isdigit() for h in named):
        first = int(named[0])
        return [int(h) for h in named] != list(range(first, first + len(named)))
    return True


def _channel_name(column: str, used: set[str]) -> str:
    """A stream name for a CSV column: readable, valid in topics, unique in the file."""
    name = "".join(c if c.isalnum() or c in "_.:-" else "_" for c in column.strip()) or "column"
    if not name[0].isalnum():
        name = "c" + name
    name = name[:120]
    base, k = name, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return check_name(name, "channel name")


def open_table(
    handle: TextIO, sep: str, time_column: str | None, ignore: tuple[str, ...] = ()
) -> tuple[list[str], int | None, list[int], Iterator[list[str]]]:
    """Read the header, pick the time column and the numeric columns from the first rows."""
    reader = csv.reader(handle, delimiter=sep)
    try:
        header = next(reader)
    except StopIteration as exc:
        raise BadInputError("the input file is empty") from exc
    except csv.Error as exc:
        raise BadInputError(f"cannot read the CSV header: {exc}") from exc
    header = [h.strip() for h in header]
    if _looks_like_data(header):
        raise BadInputError(
            f"the first line holds only numbers ({', '.join(header[:4])}): the file needs a "
            "header row naming its columns"
        )
    if len(header) == 1:
        other = next((c for c in _SEPARATORS if c != sep and c in header[0]), None)
        if other is not None:
            shown = "\\t" if other == "\t" else other
            raise BadInputError(
                f"only one column found ({header[0][:60]!r}): is the separator {shown!r}? "
                f"(--sep '{shown}')"
            )
    unknown = [name for name in ignore if name not in header]
    if unknown:
        raise BadInputError(
            f"--ignore-column {', '.join(map(repr, unknown))}: no such column (the columns are "
            f"{', '.join(header[:20])})"
        )
    if time_column is not None:
        if time_column not in header:
            raise BadInputError(f"time column {time_column!r} is not in the header: {header}")
        time_index: int | None = header.index(time_column)
    else:
        lowered = [h.lower() for h in header]
        time_index = next((lowered.index(n) for n in TIME_COLUMN_NAMES if n in lowered), None)
    sample: list[list[str]] = []
    try:
        for row in reader:
            sample.append(row)
            if len(sample) >= _SNIFF_ROWS:
                break
    except csv.Error as exc:
        raise BadInputError(f"line {reader.line_num}: {exc}") from exc
    if time_index is not None:
        _check_time_order(sample, time_index)
    numeric = []
    for i, name in enumerate(header):
        if i == time_index or name in ignore:
            continue
        cells = [r[i].strip() for r in sample if i < len(r) and r[i].strip()]
        # Mostly numbers is a channel; the odd bad cell is then counted as a missing value.
        if cells and sum(_is_number(c) for c in cells) >= _NUMERIC_SHARE * len(cells):
            numeric.append(i)
    if not numeric:
        raise BadInputError("no numeric columns found: nothing to score")

    return header, time_index, numeric, chain(sample, _rows(reader))


def _rows(reader: Iterator[list[str]]) -> Iterator[list[str]]:
    """The rest of the file; a line the csv module cannot read is a clear error."""
    try:
        yield from reader
    except csv.Error as exc:
        raise BadInputError(f"line {getattr(reader, 'line_num', '?')}: {exc}") from exc


def _check_time_order(sample: list[list[str]], time_index: int) -> None:
    """A file sorted newest first is refused: scoring it would run the detector backwards."""
    times = []
    for row in sample:
        try:
            times.append(parse_time(row[time_index]))
        except (ValueError, OverflowError, IndexError):
            continue
    steps = [b - a for a, b in zip(times, times[1:], strict=False) if b != a]
    backwards = sum(1 for step in steps if step < 0)
    if steps and backwards > len(steps) / 2:
        raise BadInputError(
            f"the timestamps run backwards ({backwards} of {len(steps)} steps in the first "
            f"{len(sample)} rows): sort the file oldest first"
        )


def _check_text(path: Path) -> None:
    """Binary data (NUL bytes, or mostly bytes that are not UTF-8) is not a CSV to guess at."""
    try:
        with open(path, "rb") as raw:
            head = raw.read(65536)
    except OSError as exc:
        raise ReplayError(f"cannot open {path}: {exc.strerror}") from exc
    if b"\x00" in head:
        raise BadInputError("binary data (NUL bytes), not a text CSV")
    text = head.decode("utf-8", "replace")
    if text and text.count("\ufffd") > _BINARY_SHARE * len(text):
        raise BadInputError("mostly not UTF-8 text: not a CSV replay can read")


def format_score(score: float) -> str:
    """Six decimals, and as many more as a score near 1 needs to stay apart from 1: the
    score never saturates (``D / (1 + D)``), and its text must not either, or the rows of
    the largest faults would all read 1.000000 and stop ranking."""
    gap = 1.0 - score
    places = 6 if gap >= 1e-3 else min(15, 3 - math.floor(math.log10(gap)) if gap > 0 else 15)
    return f"{score:.{places}f}"


def replay(
    input_path: Path,
    output: TextIO,
    config: Config,
    model: StepModel,
    sep: str = ",",
    time_column: str | None = None,
    ignore: tuple[str, ...] = (),
    core: str | None = None,
) -> ReplaySummary:
    """``core``: the detector core ("python" or "compiled"; None = the default)."""
    import time as _time

    started = _time.perf_counter()
    summary = ReplaySummary()
    _check_text(input_path)
    try:
        handle = open(input_path, newline="", encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError as exc:
        raise ReplayError(f"cannot open {input_path}: {exc.strerror}") from exc
    with handle:
        header, time_index, numeric, rows = open_table(handle, sep, time_column, ignore)
        used: set[str] = set()
        channels = [_channel_name(header[i], used) for i in numeric]
        summary.channels = channels
        asset = _channel_name(input_path.stem or "asset", set(channels))
        detector = Detector(config.detector, model, assets={asset: channels}, core=core)
        summary.core = detector.core
        writer = csv.writer(output, lineterminator="\n")
        writer.writerow(
            ["timestamp", "anomaly_score", "alert"] + [f"expected_{c}" for c in channels]
        )
        # Per row this loop is a good part of the cost: names and constants are hoisted,
        # the detector takes the row's values as they are (no Reading per value) and gives
        # back each one's expected value (no ScoredReading), and a row whose timestamp
        # needs no quoting is written as one formatted line, not through the csv writer.
        to_float, process_row, isfinite = ascii_float, detector.process_row, math.isfinite
        write, plain, cells = output.write, _needs_no_quotes, _expected_cells(len(channels))
        last_ts = 0.0
        expected = [math.nan] * len(channels)  # each column's last expected value
        score, alert = 0.0, False
        for number, row in enumerate(rows):
            if time_index is None:
                stamp = str(number)
                ts = float(number)
            else:
                stamp = row[time_index] if time_index < len(row) else ""
                try:
                    ts = parse_time(stamp)
                except (ValueError, OverflowError):
                    summary.bad_timestamps += 1
                    ts = last_ts  # keep the row: same time as the previous one
            last_ts = ts
            try:  # the common row: every cell a finite number
                values = [to_float(row[i]) for i in numeric]
                complete = all(map(isfinite, values))
            except (ValueError, IndexError):
                complete = False
            if complete:
                out = process_row(channels, ts, values)
                expected = out.expected
            else:
                values = [_cell(row, i) for i in numeric]
                out = process_row(channels, ts, values)  # skips the values that are nan
                expected = list(expected)
                for k, value in enumerate(values):
                    if isfinite(value):  # a missing value keeps the column's last expected
                        expected[k] = out.expected[k]
                    else:
                        summary.bad_cells += 1
            if out.scored_values:
                score, alert = out.score, out.alert
            if out.alerts:
                summary.alerts_raised += sum(1 for a in out.alerts if a.state == "raised")
            if plain(stamp):
                write(f"{stamp},{format_score(score)},{int(alert)},{cells(expected)}\n")
            else:
                writer.writerow(
                    [stamp, format_score(score), int(alert), *cells(expected).split(",")]
                )
            summary.rows += 1
    summary.seconds = _time.perf_counter() - started
    return summary


_EXPECTED = "%.6g"


def _expected_cells(size: int) -> Callable[[list[float]], str]:
    """The ``expected_<channel>`` cells of a row of ``size`` channels, comma separated: six
    significant digits (``%.6g`` is ``{:.6g}``), empty for nan (none yet). All the row's
    values in one format call; a row with a nan (rare: the first row, a missing cell
    before its column had one) cell by cell."""
    line = ",".join([_EXPECTED] * size)

    def cells(expected: list[float]) -> str:
        text = line % tuple(expected)
        if "nan" not in text:  # never in a finite number's digits
            return text
        return ",".join("" if e != e else _EXPECTED % e for e in expected)

    return cells


_QUOTED = frozenset(',"\r\n')  # what makes the csv writer quote a field (QUOTE_MINIMAL)


def _needs_no_quotes(stamp: str) -> bool:
    """The csv writer would write ``stamp`` as it is: it holds no separator, quote or line
    break."""
    return _QUOTED.isdisjoint(stamp)


def _cell(row: list[str], i: int) -> float:
    """A cell as a number; nan for a missing cell or one that is not a number (surrounding
    whitespace is ignored, as float() does)."""
    try:
        return ascii_float(row[i]) if i < len(row) else math.nan
    except ValueError:
        return math.nan


def replay_to_string(input_path: Path, config: Config, model: StepModel, **kw: object) -> str:
    buffer = io.StringIO()
    replay(input_path, buffer, config, model, **kw)  # type: ignore[arg-type]
    return buffer.getvalue()
