"""Config loading: every shipped example validates; every error is located precisely."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.config import load_config, parse_config, parse_duration, parse_size, redacted
from gateway.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
runner = CliRunner()


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The production example names systemd credentials; give it a credentials directory.
    for name in ("mqtt-local", "mqtt-upstream", "opcua-password"):
        (tmp_path / name).write_text("s3cret-value\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load_config(path)
    assert config.gateway.id
    result = runner.invoke(app, ["config", "validate", str(path)])
    if path.name == "opcua.yaml":
        # Loads; validate names each certificate file this machine does not have.
        assert result.exit_code == 78, result.output
        for key in ("cert_file", "key_file", "server_cert_file"):
            assert f"sources[0].security.{key}: /etc/liquid-gateway/opcua/" in result.output
        assert result.output.count("does not exist") == 3
        return
    if path.name != "production.example.yaml":
        assert result.exit_code == 0, result.output
        return
    # Loads, but cannot run unedited: install.sh must not enable it (#14 item 1).
    assert result.exit_code == 78, result.output
    assert f"{path}:62: upstream.broker.host: broker.example.com is still the example host" in (
        result.output
    )
    assert f"{path}:64: upstream.broker.tls.ca_file: /etc/liquid-gateway/ca.pem does not exist" in (
        result.output
    )


def test_config_dir_has_the_documented_examples() -> None:
    names = {p.name for p in CONFIG_DIR.glob("*.yaml")}
    assert {
        "demo.yaml",
        "serial.yaml",
        "mqtt.yaml",
        "modbus.yaml",
        "opcua.yaml",
        "production.example.yaml",
    } <= names


BAD = """\
gateway:
  id: "bad id"
detector:
  warmup: -1
  cooldown: 5 parsecs
sources:
  - {type: simulate}
  - type: serial
    name: a
    port: loop://
    fields: [x]
    baudrate: fast
    colour: blue
"""


def test_every_error_has_file_line_and_path(tmp_path: Path) -> None:
    file = tmp_path / "gw.yaml"
    file.write_text(BAD)
    with pytest.raises(ConfigError) as info:
        load_config(file)
    text = [str(i) for i in info.value.issues]
    assert any(t.startswith(f"{file}:2: gateway.id:") for t in text), text
    assert any(t.startswith(f"{file}:4: detector.warmup:") for t in text), text
    assert any(t.startswith(f"{file}:5: detector.cooldown:") for t in text), text
    assert any(t.startswith(f"{file}:12: sources[1].baudrate:") for t in text), text
    assert f"{file}:13: sources[1].colour: unknown key" in text


def test_validate_and_run_exit_78_listing_every_error(tmp_path: Path) -> None:
    file = tmp_path / "gw.yaml"
    file.write_text(BAD)
    for args in (["config", "validate", str(file)], ["run", "-c", str(file)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 78
        assert "sources[1].colour: unknown key" in result.output
        assert "detector.warmup" in result.output


def test_invalid_yaml_and_duplicates_are_located() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("gateway:\n  id: a\n  id: b\n", "x.yaml")
    assert str(info.value.issues[0]) == "x.yaml:3: gateway.id: duplicate key"
    with pytest.raises(ConfigError) as info:
        parse_config("gateway: [unclosed\n", "y.yaml")
    assert info.value.issues[0].line is not None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("250ms", 0.25), (12, 12)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "5 parsecs", "-3", "1h5", "h", True, None, "\uff17d", "\u0667h", "\uff19\uff10"]
)
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sizes() -> None:
    assert parse_size("512MB") == 512_000_000
    assert parse_size("1GiB") == 2**30
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError):
        parse_size("\uff15\uff11\uff12MB")  # full-width digits are not a size
    with pytest.raises(ValueError):
        parse_size("lots")


def test_secret_from_file_is_redacted_and_never_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2\n")
    text = f"upstream:\n  broker: {{host: h, username: u, password_file: {tmp_path / 'pw'}}}\n"
    config = parse_config(text)
    assert config.upstream is not None
    assert config.upstream.broker.password is not None
    assert config.upstream.broker.password.get_secret_value() == "hunter2"
    assert "hunter2" not in str(redacted(config))
    assert "hunter2" not in repr(config)
    with pytest.raises(ConfigError, match="secrets may not be written"):
        parse_config("upstream:\n  broker: {host: h, password: hunter2}\n")


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_PW", "from-env")
    config = parse_config("upstream:\n  broker: {host: h, password_env: GW_PW}\n")
    assert config.upstream and config.upstream.broker.password
    assert config.upstream.broker.password.get_secret_value() == "from-env"
    monkeypatch.delenv("GW_PW")
    with pytest.raises(ConfigError, match="GW_PW is not set"):
        parse_config("upstream:\n  broker: {host: h, password_env: GW_PW}\n")


def test_config_show_redacts(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2")
    file = tmp_path / "gw.yaml"
    file.write_text("upstream:\n  broker: {host: h, password_file: pw}\n")
    result = runner.invoke(app, ["config", "show", "-c", str(file)])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    # Not even as '***': the file it is read from is shown, so the output loads again.
    assert "password:" not in result.output
    assert f"password_file: {tmp_path / 'pw'}" in result.output


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    file = tmp_path / "gw.yaml"
    file.write_text("gateway: {data_dir: state}\n")
    assert load_config(file).gateway.data_dir == tmp_path / "state"


def test_frozen_and_topic_safe_names() -> None:
    config = parse_config("gateway: {id: ok-1}\n")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        config.gateway.id = "other"  # type: ignore[misc]
    for bad in ("a/b", "a+b", "#", "with space"):
        with pytest.raises(ConfigError):
            parse_config(f"gateway: {{id: '{bad}'}}\n")
    # Checked whole: "$" in a re.match pattern would also match before a final newline.
    for bad in ("gw\\n", "gw\\r\\n", "plant\\n"):
        with pytest.raises(ConfigError):
            parse_config(f'gateway: {{id: "{bad}"}}\n')
        with pytest.raises(ConfigError):
            parse_config(f'upstream: {{topic_prefix: "{bad}"}}\n')


SOURCE_OPTIONS_BAD = """\
sources:
  - type: serial
    name: a
    port: loop://
    format: regex
    pattern: "(unclosed"
  - type: serial
    name: b
    port: loop://
    fields: [x]
    reconnect_min: 5s
    reconnect_max: 1s
  - type: modbus
    name: c
    port: /dev/ttyUSB0
    slaves:
      - {id: 300, registers: [{stream: v, address: 0, word_order: middle}]}
ingest:
  queue_size: 10
  overflow: block
  stale_factor: 0.5
"""


def test_source_and_ingest_options_are_validated_and_located(tmp_path: Path) -> None:
    file = tmp_path / "gw.yaml"
    file.write_text(SOURCE_OPTIONS_BAD)
    with pytest.raises(ConfigError) as info:
        load_config(file)
    text = "\n".join(str(i) for i in info.value.issues)
    assert f"{file}:2: sources[0]: pattern does not compile" in text, text
    assert f"{file}:7: sources[1]: reconnect_max must not be below reconnect_min" in text, text
    assert f"{file}:17: sources[2].slaves[0].id:" in text, text
    assert f"{file}:17: sources[2].slaves[0].registers[0].word_order:" in text, text
    for key, line in (("queue_size", 19), ("overflow", 20), ("stale_factor", 21)):
        assert f"{file}:{line}: ingest.{key}:" in text, text


# --- README: the configuration reference and the two commands it starts with ----------------

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _spelled(value: object) -> str:
    """A default as the reference table writes it (and as ``config show`` prints it)."""
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def test_readme_lists_every_detector_setting_with_its_default() -> None:
    from gateway.config import DetectorSection

    defaults = DetectorSection()
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in README.splitlines()
        if line.startswith("| `detector.")
    }
    for name in DetectorSection.model_fields:
        key = f"`detector.{name}`"
        assert key in rows, f"README's configuration reference has no row for {key}"
        assert rows[key] == f"`{_spelled(getattr(defaults, name))}`", key
    assert len(rows) == len(DetectorSection.model_fields), sorted(rows)


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    tests_line = ci.strip().splitlines()[-1]
    commands = [line for line in README.splitlines() if "python3 -m venv .venv" in line]
    assert len(commands) >= 2, "README starts with the demo and the test command"
    assert commands[1].endswith(tests_line), (commands[1], tests_line)
    extras = next(w for w in ci.split() if w.startswith("'.["))
    assert f"pip install {extras}" in commands[1]
    for command in commands[:2]:
        # As root (no sudo on a bare Debian) and as a sudo user; apt needs fresh lists.
        assert 'S=$([ "$(id -u)" = 0 ] || echo sudo)' in command
        assert "$S apt-get update" in command and "python3-venv" in command


def test_a_port_in_full_width_digits_is_not_a_port() -> None:
    with pytest.raises(ConfigError, match="listen must be host:port"):
        parse_config('metrics: {listen: "127.0.0.1:\uff19\uff14\uff16\uff14"}\n')
