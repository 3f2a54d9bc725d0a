"""`config validate`'s offline checks (#14 item 1): what loads but cannot run is an error,
named by file:line and key; `run` stops at start, exit 78, on a file that does not exist."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.app import app
from gateway.ops.metrics import MetricsServer, Readout
from tests.conftest import free_port, make_ca

runner = CliRunner()


def _config(folder: Path, broker: str, extra: str = "") -> Path:
    file = folder / "gw.yaml"
    file.write_text(
        f"gateway: {{id: gw, data_dir: {folder / 'data'}}}\n"
        "metrics: {listen: null}\n"
        "upstream:\n"
        "  broker:\n"
        f"    {broker}\n" + extra
    )
    return file


def _validate(file: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["config", "validate", str(file), *args])
    return result.exit_code, result.output


def test_a_missing_ca_file_is_named_by_validate_and_by_run(tmp_path: Path) -> None:
    file = _config(tmp_path, "{host: 127.0.0.1, port: 8883, tls: {ca_file: nope.pem}}")
    expected = f"{file}:5: upstream.broker.tls.ca_file: {tmp_path / 'nope.pem'} does not exist"
    code, output = _validate(file)
    assert code == 78 and expected in output, output
    result = runner.invoke(app, ["run", "-c", str(file), "--duration", "1s"])
    assert result.exit_code == 78 and expected in result.output, result.output


def test_a_ca_file_that_is_no_certificate_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    file = _config(tmp_path, "{host: 127.0.0.1, tls: {ca_file: ca.pem}}")
    code, output = _validate(file)
    assert code == 78, output
    assert f"{file}:5: upstream.broker.tls.ca_file: {tmp_path / 'ca.pem'} holds no usable CA" in (
        output
    )
    crt, _ = make_ca(tmp_path, "site-ca")
    file = _config(tmp_path, f"{{host: 127.0.0.1, tls: {{ca_file: {crt.name}}}}}")
    code, output = _validate(file)
    assert code == 0, output


@pytest.mark.parametrize(
    "host", ["broker.example.com", "EXAMPLE.org", "mqtt.example", "gw.invalid", "b.test."]
)
def test_an_example_host_is_refused(tmp_path: Path, host: str) -> None:
    file = _config(tmp_path, f"{{host: {host}}}")
    code, output = _validate(file)
    assert code == 78, output
    assert f"{file}:5: upstream.broker.host: {host} is still the example host" in output


def test_a_real_host_named_like_an_example_is_not(tmp_path: Path) -> None:
    file = _config(tmp_path, "{host: example.com.plant.local}")
    assert _validate(file)[0] == 0


@pytest.mark.slow
def test_a_busy_metrics_port_is_refused(tmp_path: Path) -> None:
    port = free_port()
    file = tmp_path / "gw.yaml"
    file.write_text(f"metrics:\n  listen: 127.0.0.1:{port}\n")
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        code, output = _validate(file)
    assert code == 78, output
    assert f"{file}:2: metrics.listen: cannot listen on 127.0.0.1:{port}:" in output
    assert _validate(file)[0] == 0  # free again


@pytest.mark.parametrize(
    ("listen", "exposed"),
    [
        ("127.0.0.1", None),
        ("127.0.0.2", None),
        ("localhost", None),
        ("[::1]", None),
        ("[::ffff:127.0.0.1]", None),
        ("0.0.0.0", "on every interface"),
        ("[::]", "on every interface"),
        ("::", "on every interface"),
        ("192.168.7.20", "on 192.168.7.20"),
        ("gw-7.plant.lan", "on whatever gw-7.plant.lan resolves to"),
    ],
)
def test_a_metrics_endpoint_others_can_reach_is_a_warning(listen: str, exposed: str | None) -> None:
    """One function words it; `config validate` prints it and the daemon logs it."""
    from gateway.config import MetricsSection

    warning = MetricsSection(listen=f"{listen}:9464").exposure_warning()
    if exposed is None:
        assert warning is None
    else:
        assert warning is not None and exposed in warning and "127.0.0.1:PORT" in warning
        assert warning.startswith(f"metrics.listen {listen}:9464: ")
    assert MetricsSection(listen=None).exposure_warning() is None


def test_config_validate_warns_of_a_metrics_endpoint_on_every_interface(tmp_path: Path) -> None:
    port = free_port()
    file = tmp_path / "gw.yaml"
    printed = {}
    for host in ("127.0.0.1", "0.0.0.0"):
        file.write_text(f"metrics: {{listen: '{host}:{port}'}}\n")
        code, printed[host] = _validate(file)
        assert code == 0, printed[host]
    assert "warning" not in printed["127.0.0.1"]
    (warning,) = [line for line in printed["0.0.0.0"].splitlines() if line.startswith("warning:")]
    assert f"metrics.listen 0.0.0.0:{port}:" in warning and "on every interface" in warning


def test_the_port_held_by_a_running_gateway_is_fine(tmp_path: Path) -> None:
    """An upgrade validates the config while the old daemon still serves its metrics."""
    readout = Readout(gateway_id="gw", model_id="m", started_at=0.0, database_path=tmp_path / "db")
    server = MetricsServer(lambda: readout)
    port = free_port()
    assert server.start(f"127.0.0.1:{port}")
    try:
        file = tmp_path / "gw.yaml"
        file.write_text(f"metrics: {{listen: '127.0.0.1:{port}'}}\n")
        code, output = _validate(file)
    finally:
        server.stop()
    assert code == 0, output
    assert "held by a running Liquid Gateway" in output


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another user can enter (pytest's tmp_path is 0700 root)."""
    folder = Path(tempfile.mkdtemp(prefix="lg-checks-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="checking as another user needs root")
def test_files_are_checked_as_the_service_user(shared_dir: Path) -> None:
    secret = shared_dir / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    crt, _ = make_ca(shared_dir, "ca")
    crt.chmod(0o644)
    file = _config(
        shared_dir, f"{{host: 127.0.0.1, password_file: pw, tls: {{ca_file: {crt.name}}}}}"
    )
    file.chmod(0o644)
    assert _validate(file)[0] == 0  # root reads everything
    code, output = _validate(file, "--user", "nobody")
    assert code == 78, output
    assert f"{file}:5: upstream.broker.password_file: {secret} cannot be read by nobody" in output
    assert "s3cret" not in output
    secret.chmod(0o644)
    assert _validate(file, "--user", "nobody")[0] == 0
    file.chmod(0o600)
    code, output = _validate(file, "--user", "nobody")
    assert code == 78 and f"{file} cannot be read by nobody" in output, output
    assert os.geteuid() == 0 and os.getegid() == 0  # ids restored


@pytest.mark.skipif(os.geteuid() != 0, reason="checking as another user needs root")
def test_included_files_are_checked_as_the_service_user(shared_dir: Path) -> None:
    (shared_dir / "conf.d").mkdir(mode=0o755)
    included = shared_dir / "conf.d" / "sensor.yaml"
    included.write_text("sources: [{type: simulate, name: a}]\n")
    included.chmod(0o600)
    file = shared_dir / "gw.yaml"
    file.write_text("include: [conf.d/*.yaml]\nmetrics: {listen: null}\n")
    file.chmod(0o644)
    assert _validate(file)[0] == 0
    code, output = _validate(file, "--user", "nobody")
    assert code == 78 and f"{included}: {included} cannot be read by nobody" in output, output


def test_an_unknown_user_is_a_usage_error(tmp_path: Path) -> None:
    file = tmp_path / "gw.yaml"
    file.write_text("metrics: {listen: null}\n")
    assert _validate(file, "--user", "no-such-user-here")[0] == 2
