"""README's performance commands run as written: every ``python tools/bench_e2e.py`` and
``python tools/bench_parse.py`` line it shows parses with the tool's own arguments."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tools import bench_e2e, bench_parse

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
TOOLS = {"bench_e2e.py": bench_e2e.build_parser, "bench_parse.py": bench_parse.build_parser}


def commands(tool: str) -> list[list[str]]:
    """The arguments of each README line that runs ``tool``, optional ``[...]`` included."""
    lines = [line.strip() for line in README.splitlines()]
    found = [line for line in lines if line.startswith(f"python tools/{tool}")]
    return [shlex.split(re.sub(r"[\[\]]", "", line))[2:] for line in found]


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_readme_shows_the_command_and_it_parses(tool: str) -> None:
    shown = commands(tool)
    assert shown, f"README's Performance section shows no python tools/{tool} command"
    for args in shown:
        TOOLS[tool]().parse_args(args)  # SystemExit (a failed test) for an unknown option
