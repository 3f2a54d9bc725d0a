"""Offline checks: whether a gateway can run with a config on this machine.

Loading (``schema.py``) answers "does this file parse into a Config"; these checks answer
what can be known without connecting anywhere: the files it names exist and can be read by
the user the service runs as, the CA and client certificate load (and an OPC UA source's
certificates and key), no broker is still an example host, the metrics port is free (the
config file and every file it includes count).
``config validate`` runs all of them; ``run`` runs ``file_issues`` so that a missing file
stops it at start with the same message (exit 78).
Every issue names file:line and the key.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import re
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config.base import BrokerSection
from gateway.config.schema import Located, secret_path
from gateway.config.sources.opcua import OpcuaSource
from gateway.errors import ConfigIssue

# RFC 2606 names, reserved for examples: a host still spelt like this was never edited.
EXAMPLE_HOST_PATTERN = r"(?:.+\.)?(?:example\.(?:com|net|org)|example|invalid|test)\.?"
_PROBE_BYTES = 65_536


@dataclass(frozen=True)
class Reader:
    """Whose permissions count for "readable": the service user, or whoever runs the check."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def current(cls) -> Reader:
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, os.getegid(), tuple(os.getgroups()))

    @classmethod
    def named(cls, name: str) -> Reader:
        """KeyError if there is no such user."""
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(name, entry.pw_gid)))


@dataclass
class Report:
    issues: list[ConfigIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _as(reader: Reader) -> Iterator[None]:
    """Take the reader's effective ids for a moment (only root can; the caller checks)."""
    if reader.uid == os.geteuid():
        yield
        return
    saved = (os.getgroups(), os.getegid(), os.geteuid())
    os.setgroups(list(reader.groups))
    os.setegid(reader.gid)
    os.seteuid(reader.uid)
    try:
        yield
    finally:
        os.seteuid(saved[2])
        os.setegid(saved[1])
        os.setgroups(saved[0])


def _brokers(located: Located) -> Iterator[tuple[tuple[Any, ...], BrokerSection]]:
    config = located.config
    if config.upstream is not None:
        yield ("upstream", "broker"), config.upstream.broker
    for index, output in enumerate(config.outputs):
        broker = getattr(output, "broker", None)
        if isinstance(broker, BrokerSection):
            yield ("outputs", index, "broker"), broker
    for index, source in enumerate(config.sources):
        broker = getattr(source, "broker", None)
        if isinstance(broker, BrokerSection):
            yield ("sources", index, "broker"), broker


def _opcua(located: Located) -> Iterator[tuple[tuple[Any, ...], OpcuaSource]]:
    for index, source in enumerate(located.config.sources):
        if isinstance(source, OpcuaSource):
            yield ("sources", index), source


_OPCUA_FILES = ("cert_file", "key_file", "server_cert_file")


def _files(located: Located) -> Iterator[tuple[tuple[Any, ...], Path]]:
    """Every file a run opens, with its key path."""
    if located.config.model.path is not None:
        yield ("model", "path"), located.config.model.path
    for where, source in _opcua(located):
        for key in _OPCUA_FILES:
            path = getattr(source.security, key)
            if path is not None:
                yield where + ("security", key), path
    for index, output in enumerate(located.config.outputs):
        secret = getattr(output, "secret_file", None)
        if secret is not None and secret.is_absolute():  # else a systemd credential's name
            yield ("outputs", index, "secret_file"), secret
    for where, broker in _brokers(located):
        if broker.tls is not None:
            for key in ("ca_file", "cert_file", "key_file"):
                path = getattr(broker.tls, key)
                if path is not None:
                    yield where + ("tls", key), path


def _unreadable(path: Path, reader: Reader) -> str | None:
    try:
        with _as(reader):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.close(fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return f"{path} does not exist"
        return f"{path} cannot be read by {reader.name}: {exc.strerror}"
    return None


def file_issues(located: Located, reader: Reader | None = None) -> list[ConfigIssue]:
    """Files the config names that are missing or that ``reader`` cannot open."""
    reader = reader or Reader.current()
    issues = []
    for key, path in _files(located):
        problem = _unreadable(path, reader)
        if problem:
            issues.append(located.issue(key, problem))
    return issues


def _tls_issues(located: Located, reader: Reader) -> list[ConfigIssue]:
    issues = []
    for where, broker in _brokers(located):
        tls = broker.tls
        if tls is None:
            continue
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            with _as(reader):
                if tls.ca_file is not None and tls.ca_file.exists():
                    context.load_verify_locations(cafile=str(tls.ca_file))
        except (ssl.SSLError, ValueError) as exc:
            issues.append(
                located.issue(
                    where + ("tls", "ca_file"),
                    f"{tls.ca_file} holds no usable CA certificate (PEM): {exc}",
                )
            )
        try:
            with _as(reader):
                if tls.cert_file is not None and tls.cert_file.exists():
                    # No prompt for a passphrase: the daemon could not answer one either.
                    context.load_cert_chain(
                        str(tls.cert_file), str(tls.key_file) if tls.key_file else None, b""
                    )
        except (ssl.SSLError, ValueError) as exc:
            issues.append(
                located.issue(
                    where + ("tls", "cert_file"),
                    f"{tls.cert_file} and its key do not load as a client certificate: {exc}",
                )
            )
    return issues


def certificate_format(data: bytes) -> str:
    """ "pem" or "der": OPC UA tools write either, whatever the file is called."""
    return "pem" if data.lstrip().startswith(b"-----BEGIN") else "der"


def _load_certificate(data: bytes) -> None:
    from cryptography import x509  # asyncua's dependency; only configs with OPC UA need it

    if certificate_format(data) == "pem":
        x509.load_pem_x509_certificate(data)
    else:
        x509.load_der_x509_certificate(data)


def _load_key(data: bytes) -> None:
    from cryptography.hazmat.primitives import serialization

    if certificate_format(data) == "pem":
        serialization.load_pem_private_key(data, password=None)
    else:
        serialization.load_der_private_key(data, password=None)


def _opcua_security_issues(located: Located, reader: Reader) -> list[ConfigIssue]:
    """Each certificate and key an OPC UA source names loads as one (missing files are
    ``file_issues``' to report)."""
    issues = []
    for where, source in _opcua(located):
        for key in _OPCUA_FILES:
            path = getattr(source.security, key)
            if path is None:
                continue
            try:
                with _as(reader):
                    data = path.read_bytes()
            except OSError:
                continue
            what = "a private key (PEM or DER, no passphrase)"
            try:
                if key == "key_file":
                    _load_key(data)
                else:
                    what = "a certificate (DER or PEM)"
                    _load_certificate(data)
            except (ValueError, TypeError) as exc:
                issues.append(
                    located.issue(where + ("security", key), f"{path} is not {what}: {exc}")
                )
    return issues


def _secret_issues(located: Located, reader: Reader) -> list[ConfigIssue]:
    """The loader read each password_file as whoever ran it; the service user must too
    (unless systemd hands it over as a credential)."""
    issues = []
    handed_over = bool(os.environ.get("CREDENTIALS_DIRECTORY"))
    holders: list[tuple[tuple[Any, ...], BrokerSection | OpcuaSource]] = [*_brokers(located)]
    holders += _opcua(located)
    for where, broker in holders:
        if broker.password_file is None:
            continue
        if not (handed_over and not broker.password_file.expanduser().is_absolute()):
            path = secret_path(broker.password_file, located.base)
            problem = _unreadable(path, reader)
            if problem:
                issues.append(located.issue(where + ("password_file",), problem))
    return issues


def is_example_host(host: str) -> bool:
    return re.fullmatch(EXAMPLE_HOST_PATTERN, host, flags=re.IGNORECASE) is not None


def _host_issues(located: Located) -> list[ConfigIssue]:
    return [
        located.issue(
            where + ("host",),
            f"{broker.host} is still the example host (RFC 2606 reserves example.com/.net/.org,"
            " .example, .invalid and .test): put your broker's name here",
        )
        for where, broker in _brokers(located)
        if is_example_host(broker.host)
    ]


def _is_running_gateway(host: str, port: int) -> bool:
    """Whether the listener on host:port is a Liquid Gateway's metrics endpoint (an upgrade
    validates while the old daemon still runs)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 - http only
            body = response.read(_PROBE_BYTES)
    except OSError:
        return False
    return b"liquid_gateway_" in body


def _port_issues(located: Located, report: Report) -> list[ConfigIssue]:
    listen = located.config.metrics.listen
    if listen is None:
        return []
    host, _, port_text = listen.rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    key = ("metrics", "listen")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            # As the HTTP server does, so a closed connection in TIME_WAIT is no conflict.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except socket.gaierror as exc:
        return [located.issue(key, f"cannot resolve {host}: {exc.strerror}")]
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and _is_running_gateway(host, port):
            report.notes.append(f"{listen} is held by a running Liquid Gateway (metrics)")
            return []
        return [located.issue(key, f"cannot listen on {listen}: {exc.strerror}")]
    return []


def offline_issues(located: Located, reader: Reader | None = None) -> Report:
    """Everything ``config validate`` checks beyond loading."""
    reader = reader or Reader.current()
    report = Report()
    if reader.uid != os.geteuid() and os.geteuid() != 0:
        report.notes.append(
            f"not root: files checked as {Reader.current().name}, not {reader.name}"
        )
        reader = Reader.current()
    for file in (located.file, *located.includes):
        problem = _unreadable(Path(file), reader)
        if problem:
            report.issues.append(ConfigIssue(file, None, "", problem))
    report.issues += file_issues(located, reader)
    report.issues += _tls_issues(located, reader)
    report.issues += _secret_issues(located, reader)
    report.issues += _opcua_security_issues(located, reader)
    report.issues += _host_issues(located)
    report.issues += _port_issues(located, report)
    report.issues.sort(key=lambda i: (i.line or 0, i.path))
    return report
