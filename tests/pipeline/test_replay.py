"""`replay`: the DESIGN.md contract, through the CLI, on files we make here."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gateway.cli.app import app

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


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "empty"), ("time,name\n1,abc\n", "no numeric columns")],
)
def test_unusable_files_exit_1_with_a_reason(tmp_path: Path, content: str, message: str) -> None:
    src = tmp_path / "x.csv"
    src.write_text(content)
    result = runner.invoke(app, ["replay", str(src)])
    assert result.exit_code == 1
    assert message in result.output


def test_missing_time_column_is_reported(tmp_path: Path) -> None:
    src = tmp_path / "x.csv"
    write_csv(src, 10)
    result = runner.invoke(app, ["replay", str(src), "--time-column", "nope"])
    assert result.exit_code == 1 and "nope" in result.output
