"""The commands an operator types most import only what they use (#14 item 10).

A wall-clock budget would fail on a loaded box and pass on a fast one; what made these
commands slow was what they imported (numpy and the detector to print a score, the pydantic
schema to find the database), and that can be checked exactly: each command runs as a fresh
process, as from a shell, and reports the modules it had loaded when it exited.
tools/bench_cli.py measures the time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.records import AlertChange, Batch
from gateway.store import Store

ROOT = Path(__file__).resolve().parents[2]

# Runs the CLI as `python -m gateway` does and, at exit, writes sys.modules to argv[1].
HOOK = """
import atexit, json, runpy, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["liquid-gateway", *sys.argv[2:]]
runpy.run_module("gateway", run_name="__main__", alter_sys=True)
"""

# Never for these commands: the runtime stack (numpy, the model, MQTT, the field buses), the
# writer's sqlite-utils, the plotting and Rich rendering libraries.
HEAVY = (
    "numpy", "paho", "ai_edge_litert", "tflite_runtime", "sqlite_utils", "matplotlib", "rich",
    "asyncua", "pymodbus", "serial", "prometheus_client", "gateway.detector", "gateway.model",
    "gateway.pipeline", "gateway.sources", "gateway.outputs", "gateway.mqtt",
)  # fmt: skip
# Query commands find the database without the config schema (gateway/config/locate.py).
SCHEMA = (
    "gateway.config.schema", "gateway.config.base", "gateway.config.sources",
    "gateway.config.outputs", "gateway.config.checks", "gateway.config.render",
)  # fmt: skip
# version, --help and completion read no config and no database at all, and log nothing.
NO_CONFIG = ("gateway.config", "gateway.store", "yaml", "logging")
ALERT = "abcdef0123456789abcdef0123456789"


def _modules(tmp_path: Path, args: list[str], env: dict[str, str] | None = None) -> set[str]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", HOOK, str(out), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 3), done.stderr  # status: 3, no daemon runs here
    return set(json.loads(out.read_text()))


def _imported(modules: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == b or m.startswith(b + ".") for b in banned))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    raised = AlertChange(ALERT, "line.t", "raised", 1e9, 0.9, 9.0, 1.0, (0.5, 1.5), None, "m")
    with Store.open(tmp_path / "gateway.db", gateway_id="gw") as store:
        store.write_batch(Batch(alerts=[raised]))  # for `alerts show` to show
    file = tmp_path / "gw.yaml"
    file.write_text(f"gateway: {{id: gw, data_dir: {tmp_path}}}\nsources: [{{type: simulate}}]\n")
    return file


@pytest.mark.parametrize(
    "args",
    [["status"], ["streams"], ["alerts", "list"], ["alerts", "show", "abcdef"], ["events", "list"]],
    ids=" ".join,
)
def test_query_commands_import_neither_the_runtime_nor_the_schema(
    args: list[str], config: Path, tmp_path: Path
) -> None:
    modules = _modules(tmp_path, [*args, "-c", str(config)])
    assert "gateway.store" in modules and "gateway.config.locate" in modules  # it ran
    assert _imported(modules, HEAVY + SCHEMA) == []


@pytest.mark.parametrize("args", [["version"], ["--help"], ["alerts", "--help"]], ids=" ".join)
def test_commands_that_read_no_config_import_no_config(args: list[str], tmp_path: Path) -> None:
    assert _imported(_modules(tmp_path, args), HEAVY + NO_CONFIG) == []


def test_tab_completion_imports_no_config(tmp_path: Path) -> None:
    env = {"_LIQUID_GATEWAY_COMPLETE": "complete_bash", "COMP_WORDS": "liquid-gateway al"}
    modules = _modules(tmp_path, [], env | {"COMP_CWORD": "1"})
    assert "gateway.cli.app" in modules
    assert _imported(modules, HEAVY + NO_CONFIG) == []


def test_the_hook_sees_what_a_command_imports(tmp_path: Path) -> None:
    """The check itself: a command that loads the whole config is seen to import the schema
    (so an empty list above means the command ran without it, not that nothing was seen)."""
    config = tmp_path / "gw.yaml"
    config.write_text("sources: [{type: simulate}]\n")
    modules = _modules(tmp_path, ["config", "validate", str(config)])
    assert "gateway.config.schema" in _imported(modules, SCHEMA)
