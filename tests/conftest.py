"""Shared fixtures: a real Mosquitto broker on a free loopback port, and fresh data dirs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import stop_process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class Broker:
    """A Mosquitto process we own: it can be stopped and started again on the same port."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        # Started as root, mosquitto drops to the 'mosquitto' user, which cannot read pytest's
        # tmp folder (ACL files, persistence); "user root" keeps it as the invoking user.
        run_as = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            run_as + f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=log
            )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


def _have_mosquitto() -> bool:
    return bool(shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if not _have_mosquitto():
        pytest.fail("mosquitto is not installed: .ci/run installs it (apt-get install mosquitto)")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    b = Broker(workdir)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`run` invoked in-process points the root logger at the CLI runner's stream, which is
    closed afterwards; put the handlers back so later threads do not log into it."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# --- TLS: certificates made by the test, a Mosquitto with a TLS listener -----------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed P-256 CA: (certificate, key)."""
    crt, key = folder / f"{name}.crt", folder / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    return crt, key


def issue_cert(
    folder: Path, name: str, ca: tuple[Path, Path], san: str | None = None
) -> tuple[Path, Path]:
    """A P-256 certificate signed by ``ca``: (certificate, key); ``san`` like 'DNS:localhost'."""
    crt, key, csr = folder / f"{name}.crt", folder / f"{name}.key", folder / f"{name}.csr"
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    ext = folder / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext),
        cwd=folder,
    )  # fmt: skip
    return crt, key


class TlsBroker(Broker):
    """Mosquitto with a plaintext listener (for watchers) and a TLS listener that wants a
    client certificate from our CA and a user name and password."""

    USER = "gw-tls"
    PASSWORD = "s3cret-Pa55-never-logged"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.tls_port = free_port()
        pki = workdir / "pki"
        pki.mkdir()
        self.ca = make_ca(pki, "test-ca")
        self.other_ca = make_ca(pki, "other-ca")
        self.server = issue_cert(pki, "server", self.ca, "DNS:localhost")
        self.client = issue_cert(pki, "gw-client", self.ca)
        self.stranger = issue_cert(pki, "stranger", self.other_ca)
        passwords = workdir / "passwords"
        subprocess.run(
            ["mosquitto_passwd", "-b", "-c", str(passwords), self.USER, self.PASSWORD],
            check=True,
            capture_output=True,
        )
        run_as = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            run_as + "per_listener_settings true\n"
            "persistence false\nmax_queued_messages 100000\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"listener {self.tls_port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {passwords}\n"
            f"cafile {self.ca[0]}\ncertfile {self.server[0]}\nkeyfile {self.server[1]}\n"
            "require_certificate true\n"
        )

    def start(self) -> None:
        super().start()
        wait_for_port(self.tls_port)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    if not _have_mosquitto():
        pytest.fail("mosquitto is not installed: .ci/run installs it (apt-get install mosquitto)")
    if not shutil.which("openssl") or not shutil.which("mosquitto_passwd"):
        pytest.fail("the TLS tests need openssl and mosquitto_passwd (Debian: openssl, mosquitto)")
    workdir = tmp_path / "tls-broker"
    workdir.mkdir()
    b = TlsBroker(workdir)
    b.start()
    try:
        yield b
    finally:
        b.stop()


# --- the detector: both builds of its one source, the shipped model ------------------------


@pytest.fixture(params=["python", "compiled"])
def core(request: pytest.FixtureRequest) -> str:
    """Every detector and replay test runs on ``core.py`` as it is and on its mypyc build; a
    missing or stale build is a failure, not a skip (``python -m gateway.detector.build``)."""
    from gateway.detector.engine import COMPILED_PROBLEM, compiled_core_available

    if request.param == "compiled" and not compiled_core_available():
        pytest.fail(f"the compiled detector core is {COMPILED_PROBLEM}: run "
                    "python -m gateway.detector.build")  # fmt: skip
    return str(request.param)


@pytest.fixture(scope="session")
def model():  # noqa: ANN201 - a StepModel
    from gateway.model.runtime import load_model

    return load_model(None, "auto")
