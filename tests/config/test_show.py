"""``config show`` prints the effective config, and that text loads into the same config
(#14 item 6): every shipped example and edge cases, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.config import (
    Config,
    format_duration,
    format_size,
    load_config,
    parse_duration,
    parse_size,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
runner = CliRunner()


def _show(file: Path) -> str:
    result = runner.invoke(app, ["config", "show", "-c", str(file)])
    assert result.exit_code == 0, result.output
    return result.output


def _round_trip(file: Path, out: Path) -> tuple[Config, Config, str]:
    """Load ``file``, show it into ``out`` (another folder), load that again."""
    text = _show(file)
    out.write_text(text)
    return load_config(file), load_config(out), text


def _same(first: Config, second: Config) -> None:
    assert second == first
    for a, b in zip(_brokers(first), _brokers(second), strict=True):
        assert (a.password and a.password.get_secret_value()) == (
            b.password and b.password.get_secret_value()
        )


def _brokers(config: Config) -> list:
    found = [config.upstream.broker] if config.upstream else []
    return found + [s.broker for s in config.sources if hasattr(s, "broker")]


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_shows_as_itself(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    for name in ("mqtt-local", "mqtt-upstream", "opcua-password"):
        (creds / name).write_text("s3cret-value\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    first, second, text = _round_trip(path, tmp_path / "shown.yaml")
    _same(first, second)
    assert "s3cret-value" not in text
    assert "password:" not in text


def test_values_are_shown_as_used(tmp_path: Path) -> None:
    file = tmp_path / "gw.yaml"
    file.write_text(
        "sources:\n"
        "  - {type: mqtt, name: m, subscribe: [{topic: a/#}, {topic: b/+, format: number}]}\n"
        "  - type: modbus\n"
        "    name: bus\n"
        "    port: loop://\n"
        "    slaves: [{id: 3, registers: [{stream: v, address: 0}]}]\n"
        "upstream: {broker: {host: h}}\n"
    )
    config = load_config(file)
    shown = _show(file)
    source = config.sources[0]
    # A source subscribes with 3.1.1 unless told otherwise; show once said '5' here.
    assert source.type == "mqtt" and source.broker.protocol == "3.1.1"
    assert config.upstream is not None and config.upstream.broker.protocol == "5"
    assert [s.stream for s in source.subscribe] == ["{topic}.{field}", "{topic}"]
    assert "protocol: 3.1.1" in shown and "protocol: '5'" in shown
    assert "stream: '{topic}.{field}'" in shown and "stream: '{topic}'" in shown
    assert "name: slave-3" in shown


def test_durations_and_sizes_are_shown_as_the_config_spells_them(tmp_path: Path) -> None:
    file = tmp_path / "gw.yaml"
    file.write_text(
        "storage: {readings_retention: 36h, max_db_size: 1GiB, checkpoint_every: 90}\n"
        "ingest: {stale_min: 250ms, flap_window: 1.5s, max_clock_skew: null}\n"
        "detector: {baseline_halflife: 1h30m, cooldown: 0, max_gap: 12.5x}\n"
    )
    shown = _show(file)
    for line in (
        "readings_retention: 36h",
        "max_db_size: 1GiB",
        "checkpoint_every: 90s",
        "stale_min: 250ms",
        "flap_window: 1.5s",
        "max_clock_skew: null",
        "baseline_halflife: 90m",
        "cooldown: 0s",
        "max_gap: 12.5x",
        "stream_retention: 30d",
        "queue_size: 100000",
    ):
        assert f"  {line}\n" in shown, line
    out = tmp_path / "again.yaml"
    out.write_text(shown)
    assert load_config(out) == load_config(file)


def test_edge_configs_load_again_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "pw").write_text("hunter2\n")
    (site / "ca.pem").write_text("not checked by loading\n")
    monkeypatch.setenv("GW_PW", "from-env")
    file = site / "gw.yaml"
    file.write_text(
        "gateway: {id: 'on', data_dir: state, log_level: debug}\n"
        "model: {path: models/site.tflite}\n"
        "storage: {check_on_start: off}\n"
        "metrics: {listen: null}\n"
        "sources:\n"
        "  - {type: serial, name: s, port: loop://, format: regex, stopbits: 1.5,\n"
        "     pattern: 'T=(?P<t>\\S+) # \"x\": y', units: {t: {scale: 0.001, unit: '°C'}}}\n"
        "  - {type: mqtt, name: m, broker: {host: b, password_env: GW_PW, protocol: '5'},\n"
        "     subscribe: [{topic: '$share/g/a/#', stream: 'yes'}]}\n"
        "  - {type: simulate, fault_after: 0.001, drift_per_hour: 1e-3}\n"
        "assets: {pump: [s.t, 'null']}\n"
        "upstream:\n"
        "  broker: {host: h, port: 8883, password_file: pw, tls: {ca_file: ca.pem}}\n"
        "  confirm: echo\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first, second, text = _round_trip(file, elsewhere / "shown.yaml")
    _same(first, second)
    assert "hunter2" not in text and "from-env" not in text
    assert f"password_file: {site / 'pw'}" in text  # the file read, not the secret
    assert "password_env: GW_PW" in text
    assert second.gateway.data_dir == site / "state"


def test_a_credential_name_is_shown_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd a relative password_file names a credential: it must stay relative."""
    (tmp_path / "mqtt-upstream").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    file = tmp_path / "gw.yaml"
    file.write_text("upstream: {broker: {host: h, password_file: mqtt-upstream}}\n")
    text = _show(file)
    assert "password_file: mqtt-upstream\n" in text
    assert "s3cret" not in text


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_a_duration_reads_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=2**50))
def test_a_size_reads_back_exactly(size: int) -> None:
    assert parse_size(format_size(size)) == size
