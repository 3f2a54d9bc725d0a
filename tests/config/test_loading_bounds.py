"""The loader's bounds (#13 item 10): what a config file can make it read or build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.config import load_config, parse_config
from gateway.config.documents import MAX_CONFIG_BYTES, MAX_CONFIG_NODES
from gateway.config.schema import MAX_SECRET_BYTES
from gateway.errors import ConfigError

runner = CliRunner()


def _refused(file: Path) -> str:
    result = runner.invoke(app, ["config", "validate", str(file)])
    assert result.exit_code == 78, result.output
    return result.output


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 9):
        refs = ", ".join([f"*a{n - 1}"] * 9)
        levels.append(f"a{n}: &a{n} [{refs}]")
    file = tmp_path / "bomb.yaml"
    file.write_text("\n".join(levels) + "\n")
    assert f"more than {MAX_CONFIG_NODES} YAML nodes" in _refused(file)


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "loop.yaml"
    file.write_text("assets: &a {pump: *a}\n")
    assert "refers to the node it is inside of" in _refused(file)


def test_a_small_alias_still_works() -> None:
    config = parse_config(
        "sources:\n  - &s {type: simulate, name: a}\n  - {<<: *s, name: b}\n", "ok.yaml"
    )
    assert [s.name for s in config.sources] == ["a", "b"]


def test_config_file_size_is_capped(tmp_path: Path) -> None:
    file = tmp_path / "big.yaml"
    file.write_text("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    assert f"larger than {MAX_CONFIG_BYTES} bytes" in _refused(file)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config("/dev/zero")


def _with_secret(tmp_path: Path, content: bytes | None = None, path: str = "pw") -> Path:
    if content is not None:
        (tmp_path / path).write_bytes(content)
    file = tmp_path / "gw.yaml"
    file.write_text(f"upstream:\n  broker:\n    host: h\n    password_file: {path}\n")
    return file


def test_a_secret_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    file = _with_secret(tmp_path, b"\xff\xfe secret")
    assert f"{file}:4: upstream.broker.password_file: {tmp_path / 'pw'} is not UTF-8" in (
        _refused(file)
    )


def test_secret_files_are_read_bounded_and_must_hold_something(tmp_path: Path) -> None:
    output = _refused(_with_secret(tmp_path, b"x" * (MAX_SECRET_BYTES + 1)))
    assert f"is larger than {MAX_SECRET_BYTES} bytes" in output
    assert "is not a regular file" in _refused(_with_secret(tmp_path, path="/dev/zero"))
    assert "is empty: write the password into it" in _refused(_with_secret(tmp_path, b"\n"))


def test_a_fifo_as_secret_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    assert "is not a regular file" in _refused(_with_secret(tmp_path, path="fifo"))


def test_a_password_written_into_password_env_is_not_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("upstream:\n  broker: {host: h, password_env: 'hunter2!x'}\n", "gw.yaml")
    message = str(info.value)
    assert "hunter2" not in message
    assert "gw.yaml:2: upstream.broker.password_env: must name an environment variable" in message
    monkeypatch.setenv("GW_PW", "")
    with pytest.raises(ConfigError, match="environment variable GW_PW is empty"):
        parse_config("upstream:\n  broker: {host: h, password_env: GW_PW}\n")


@pytest.mark.parametrize("spelling", ["off", "'off'", "quick", "full"])
def test_check_on_start_off_unquoted_is_accepted(spelling: str) -> None:
    config = parse_config(f"storage: {{check_on_start: {spelling}}}\n")
    assert config.storage.check_on_start == spelling.strip("'")
    with pytest.raises(ConfigError, match="check_on_start"):
        parse_config("storage: {check_on_start: on}\n")
