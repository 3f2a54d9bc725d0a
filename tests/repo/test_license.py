"""The licence the package declares is the one the repository ships."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_license_file_matches_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["license"]["text"]
    text = (REPO / "LICENSE").read_text()
    titles = {"Apache-2.0": ("Apache License", "Version 2.0, January 2004")}
    assert declared in titles, f"pyproject declares {declared}: add its title here"
    head = " ".join(text.split()[:8])
    for words in titles[declared]:
        assert words in head
    assert "END OF TERMS AND CONDITIONS" in text  # the whole licence, not its first lines
