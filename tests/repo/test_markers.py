"""The fast lane: ``pytest -m "not slow"`` is what a developer runs while working; CI runs
everything. The lane only works while the marker is registered (a misspelt ``@pytest.mark.slwo``
is then an error, not a silently fast test) and used."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_slow_is_registered_and_markers_are_strict() -> None:
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert any(m.split(":")[0].strip() == "slow" for m in options["markers"])
    assert "--strict-markers" in options["addopts"].split()


def test_slow_tests_are_marked_in_every_area_that_has_them() -> None:
    marked = {
        path.relative_to(REPO / "tests").parts[0]
        for path in (REPO / "tests").rglob("test_*.py")
        if re.search(r"^\s*@pytest\.mark\.slow\b", path.read_text(), re.MULTILINE)
    }
    # The daemon-level scenarios and the packaging tests are the bulk of the suite's time.
    assert {"scenarios", "ops", "detector", "outputs", "sources"} <= marked


def test_the_readme_gives_the_fast_lane_and_ci_runs_the_full_suite() -> None:
    readme = (REPO / "README.md").read_text()
    assert 'pytest -q -m "not slow"' in readme
    ci = (REPO / ".ci" / "run").read_text()
    command = next(
        line for line in ci.splitlines() if "pytest" in line and not line.startswith("#")
    )
    assert "-m" not in command.split("pytest", 1)[1].split()  # no marker filter in CI
