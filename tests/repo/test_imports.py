"""The package's shape: imports follow the data flow, and SQL stays in the store.

The import contract itself is in pyproject.toml (``[tool.importlinter]``): this test only runs
``lint-imports`` on it, so the contract has one place and CI checks it with the suite.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "gateway"

# A line that talks to SQLite directly: the connection (``store.db...``, ``.conn``), an
# execute call, the sqlite3 module, or a SQL statement in a string.
RAW_SQL = re.compile(
    r"\.db[.\[]|\.conn\b|\.execute(?:many|script)?\(|\bimport sqlite3\b|\bsqlite_utils\b"
    r"|\bPRAGMA\s+\w|\bSELECT\b.+\bFROM\b|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b|\bDELETE\s+FROM\b"
    r"|\bUPDATE\s+\w+\s+SET\b|[\"']VACUUM[\"']"
)


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--no-cache", "--no-logo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contract_is_kept() -> None:
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_import_contract_names_the_stages() -> None:
    """The contract covers every subpackage: a new folder has to take its place in the layers."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {name.strip() for layer in layers for name in re.split(r"[|:]", layer)}
    packages = {f"gateway.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py") if p.parent.name}
    modules = {f"gateway.{p.stem}" for p in PACKAGE.glob("*.py") if not p.stem.startswith("_")}
    assert packages <= named, f"not in the layers contract: {sorted(packages - named)}"
    assert modules <= named, f"not in the layers contract: {sorted(modules - named)}"


def raw_sql_lines() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("gateway/store/"):
            continue
        lines = [
            f"{rel}:{n}: {line.strip()}"
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if RAW_SQL.search(line)
        ]
        if lines:
            found[rel] = lines
    return found


def test_no_raw_sql_outside_the_store() -> None:
    found = raw_sql_lines()
    assert not found, "raw SQL outside gateway/store (add a store function instead):\n" + "\n".join(
        line for lines in found.values() for line in lines
    )


def test_raw_sql_pattern_sees_the_usual_forms() -> None:
    for line in (
        'rows = store.db.execute("SELECT 1").fetchall()',
        "store.db['readings'].insert(row)",
        "import sqlite3",
        'sql = "SELECT ts FROM readings WHERE stream = ?"',
        'db.conn.executemany("INSERT OR REPLACE INTO t VALUES (?)", rows)',
        'q = "PRAGMA page_count"',
    ):
        assert RAW_SQL.search(line), line
    for line in ('help="Rewrite the whole file (VACUUM)"', "select = alerts[0]", "from x import y"):
        assert not RAW_SQL.search(line), line
