"""`replay`: the DESIGN.md contract, through the CLI, on files we make here."""

from __future__ import annotations

import contextlib
import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.pipeline.replay import format_score

runner = CliRunner()


def write_csv(path: Path, n: int, sep: str = ",", shift_at: int | None = None) -> None:
    rng = np.random.default_rng(4)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=sep)
        writer.writerow(["datetime", "flow", "temp", "label"])
        for i in range(n):
            flow = 10 + rng.normal(0, 0.2) + (3.0 if shift_at is not None and i >= shift_at else 0)
            writer.writerow(
                [
                    f"2024-01-01 00:{i // 60 % 60:02d}:{i % 60:02d}" if i < 3600 else i,
                    f"{flow:.4f}",
                    f"{50 + rng.normal(0, 1):.3f}",
                    0,
                ]
            )


def read_out(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_output_contract(tmp_path: Path) -> None:
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(src, 900, sep=";", shift_at=600)
    result = runner.invoke(
        app, ["replay", str(src), "--out", str(out), "--sep", ";", "--ignore-column", "label"]
    )
    assert result.exit_code == 0, result.output
    rows = read_out(out)
    assert len(rows) == 900
    assert list(rows[0])[:3] == ["timestamp", "anomaly_score", "alert"]
    assert rows[0]["timestamp"] == "2024-01-01 00:00:00"  # as in the input
    scores = np.array([float(r["anomaly_score"]) for r in rows])
    alerts = np.array([int(r["alert"]) for r in rows])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert set(alerts) <= {0, 1}
    assert alerts[:600].sum() == 0 and alerts[610:].all()
    assert "expected_flow" in rows[0] and "expected_label" not in rows[0]


def test_strictly_causal(tmp_path: Path) -> None:
    """Row t's output must not change when rows after t are removed."""
    whole, part = tmp_path / "whole.csv", tmp_path / "part.csv"
    write_csv(whole, 800, shift_at=500)
    lines = whole.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[: 1 + 550]))
    for src in (whole, part):
        assert runner.invoke(app, ["replay", str(src), "-o", str(src) + ".out"]).exit_code == 0
    a, b = read_out(Path(str(whole) + ".out")), read_out(Path(str(part) + ".out"))
    assert a[:550] == b


def test_bad_cells_are_missing_values_not_crashes(tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(
        "time,x\n"
        + "".join(f"{i},{i % 7}\n" for i in range(50))
        + "50,oops\n51,nan\n52,\nnot-a-time,3\n53,1\n"
    )
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["replay", str(src), "--out", str(out), "--time-column", "time"])
    assert result.exit_code == 0, result.output
    assert len(read_out(out)) == 55
    assert "3 bad cells" in result.output and "1 bad timestamps" in result.output


def test_digits_of_other_scripts_are_bad_cells_as_in_the_sources(tmp_path: Path) -> None:
    """float() takes '１２３' and '٣'; replay takes numbers by the sources' rule (ASCII)."""
    src = tmp_path / "wide.csv"
    src.write_text(
        "time,x\n" + "".join(f"{i},{i % 7}\n" for i in range(50)) + "50,１２３\n51,٣\n52,4\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["replay", str(src), "--out", str(out), "--time-column", "time"])
    assert result.exit_code == 0, result.output
    assert len(read_out(out)) == 53
    assert "2 bad cells" in result.output


def test_a_column_of_other_scripts_digits_is_not_a_channel(tmp_path: Path) -> None:
    src = tmp_path / "wide.csv"
    src.write_text("time,x,y\n" + "".join(f"{i},{i % 7},１{i}\n" for i in range(60)))
    result = runner.invoke(app, ["replay", str(src), "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    assert "60 rows x 1 channels" in result.output, result.output


_ROWS = "".join(f"{i},{20 + i % 5},{i % 3}\n" for i in range(60))


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (b"", [], "empty"),
        (b"time,name\n1,abc\n", [], "no numeric columns"),
        # No header row: the data must not silently become column names.
        (_ROWS.encode(), [], "needs a header row"),
        # One column, and a separator in it that is not --sep: say which to use.
        (("time;x;y\n" + _ROWS.replace(",", ";")).encode(), [], "--sep ';'"),
        (("time,x,y\n" + _ROWS).encode(), ["--ignore-column", "label"], "'label': no such"),
        (("time,x,y\n" + _ROWS).encode(), ["--time-column", "nope"], "'nope'"),
        # Newest first: scoring it would run the detector backwards in time.
        (("time,x,y\n" + "".join(reversed(_ROWS.splitlines(True)))).encode(), [], "backwards"),
        (bytes(range(256)) * 64, [], "binary data"),
        (bytes(range(128, 256)) * 256, [], "not UTF-8"),
        # A line the csv module refuses (a 200 kB field), after the sniffed rows: its number.
        (("time,x,y\n" + _ROWS * 5 + "1," + "9" * 200_000 + ",2\n").encode(), [], "line 302"),
    ],
    ids=["empty", "no-numbers", "no-header", "wrong-sep", "unknown-ignore", "unknown-time",
         "reversed", "binary", "not-utf8", "huge-field"],
)  # fmt: skip
def test_bad_input_data_exits_65_with_a_reason(
    tmp_path: Path, content: bytes, args: list[str], message: str
) -> None:
    src = tmp_path / "x.csv"
    src.write_bytes(content)
    result = runner.invoke(app, ["replay", str(src), "-o", str(tmp_path / "out.csv"), *args])
    assert result.exit_code == 65, result.output
    assert message in result.output, result.output
    assert str(src) in result.output


def test_columns_named_0_1_2_are_a_header(tmp_path: Path) -> None:
    """pandas writes ``,0,1`` for a frame with unnamed columns: names, not a data row."""
    src = tmp_path / "x.csv"
    src.write_text(",0,1\n" + _ROWS)
    result = runner.invoke(app, ["replay", str(src), "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    assert "x 3 channels" in result.output  # the unnamed index column is numeric too


def test_a_file_that_is_not_there_is_a_runtime_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["replay", str(tmp_path / "missing.csv")])
    assert result.exit_code == 1 and "cannot open" in result.output


def test_scores_near_1_keep_the_digits_that_set_them_apart() -> None:
    scores = [0.5, 0.998, 0.9995, 1 - 1e-6, 1 - 1e-9, 1 - 1e-12, 1 - 1e-14]
    texts = [format_score(s) for s in scores]
    assert texts[:2] == ["0.500000", "0.998000"]  # six decimals where they are enough
    assert all(t != "1" and float(t) < 1.0 for t in texts)
    assert [float(t) for t in texts] == sorted({float(t) for t in texts})  # distinct, in order
    for s, t in zip(scores, texts, strict=True):
        assert abs(float(t) - s) <= 0.01 * (1.0 - s)  # within 1 % of the distance to 1


SKAB = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "skab" / "data"


def write_univariate_with_bad_cells(path: Path, n: int = 4000) -> None:
    """One drifting channel and two more (a cycle with a shift in it, a coarse count), with
    every kind of bad cell and bad timestamp replay counts."""
    rng = np.random.default_rng(11)
    rows = [["timestamp", "level", "cycle", "count"]]
    for i in range(n):
        cycle = 5 * np.sin(i / 20) + rng.normal(0, 0.1) + (6.0 if 2500 < i < 2600 else 0.0)
        cells = [f"{20 + i * 1e-3 + rng.normal():.4f}", f"{cycle:.4f}", str(i % 7)]
        if i % 53 == 0:
            cells[0] = "nan"
        if i % 71 == 0:
            cells[1] = "x"
        if i % 401 == 0:
            cells[2] = "inf"
        if i % 97 == 0:
            cells = cells[:1]  # a short row
        stamp = "garbage" if i % 211 == 0 else str(1_700_000_000 + i)
        if i % 307 == 0:
            stamp = 'no, "time"\nhere'  # the csv writer quotes it, in and out
        rows.append([stamp, *cells])
    with path.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def one_reading_at_a_time(
    path: Path, core: str, model: object, sep: str, time_column: str, ignore: tuple[str, ...]
) -> str:
    """What replay must write, made the daemon's way: a Reading per value and
    ``Detector.process`` per row, by the replay contract (a bad cell is a missing value that
    keeps its column's last expected value; a bad timestamp is the previous row's time)."""
    from gateway.config import Config
    from gateway.detector import Detector
    from gateway.pipeline.replay import _channel_name, parse_time
    from gateway.records import Reading
    from gateway.sources.parsers import ascii_float

    with path.open(newline="") as handle:
        table = list(csv.reader(handle, delimiter=sep))
    assert sep == ";" or any("\n" in row[0] for row in table)  # the odd stamps are there
    header = table[0]
    columns = [i for i, name in enumerate(header) if name != time_column and name not in ignore]
    used: set[str] = set()
    names = [_channel_name(header[i], used) for i in columns]  # the names replay writes
    asset = {_channel_name(path.stem, set(names)): names}
    detector = Detector(Config().detector, model, assets=asset, core=core)  # type: ignore[arg-type]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["timestamp", "anomaly_score", "alert"] + [f"expected_{n}" for n in names])
    expected = [""] * len(names)
    score, alert, ts = 0.0, False, 0.0
    for row in table[1:]:
        stamp = row[header.index(time_column)]
        with contextlib.suppress(ValueError):  # a bad timestamp: the previous row's time
            ts = parse_time(stamp)
        readings, slots = [], []
        for k, i in enumerate(columns):
            try:
                value = ascii_float(row[i]) if i < len(row) else math.nan
            except ValueError:
                value = math.nan
            if math.isfinite(value):
                readings.append(Reading(names[k], ts, value, "test"))
                slots.append(k)
        scored = detector.process(readings).scored
        for k, s in zip(slots, scored, strict=True):
            expected[k] = "" if s.expected is None else f"{s.expected:.6g}"
        if scored:
            score, alert = scored[-1].score, scored[-1].alert
        writer.writerow([stamp, format_score(score), int(alert), *expected])
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["skab", "univariate"])
def test_replay_writes_what_the_one_reading_at_a_time_path_gives(
    tmp_path: Path, model: object, core: str, name: str
) -> None:
    """Replay hands the detector a whole row at once (no Reading or ScoredReading per
    value); byte for byte, that must be the daemon's path, on both builds."""
    from gateway.config import Config
    from gateway.pipeline.replay import replay_to_string

    if name == "skab":
        if not SKAB.is_dir():
            pytest.fail(f"the SKAB data is expected at {SKAB} (../shared beside the checkout)")
        path, options = SKAB / "valve1" / "1.csv", {"sep": ";", "time_column": "datetime",
                                                    "ignore": ("anomaly", "changepoint")}  # fmt: skip
    else:
        path, options = tmp_path / "univariate.csv", {"sep": ",", "time_column": "timestamp",
                                                       "ignore": ()}  # fmt: skip
        write_univariate_with_bad_cells(path)
    text = replay_to_string(path, Config(), model, core=core, **options)  # type: ignore[arg-type]
    assert text == one_reading_at_a_time(path, core, model, **options)  # type: ignore[arg-type]
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert len(rows) > 1000 and any(r[2] == "1" for r in rows)  # it alerted
