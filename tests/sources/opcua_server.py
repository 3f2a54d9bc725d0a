"""A real asyncua OPC UA server on a loopback port, run on its own thread and event loop.

Tests drive it from their own thread: ``write`` changes a variable, ``stop`` and ``start``
take the server away and bring it back on the same port (a fresh server, as a restarted
PLC's would be: no sessions, no subscriptions survive).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import SimpleRoleRuleset, User, UserRole
from asyncua.server.user_managers import UserManager

NAMESPACE = "urn:liquid-gateway:test-plant"
# name -> initial value; strings and bools on purpose, beside numbers.
VARIABLES: dict[str, Any] = {
    "pump.temp": 21.5,
    "pump.pressure": 1.2,
    "pump.running": True,
    "pump.count": 7,
    "pump.label": "P-101",
}

logging.getLogger("asyncua").setLevel(logging.CRITICAL)


class Users(UserManager):
    """One user with one password; anonymous sessions only when no password is set."""

    def __init__(self, username: str | None, password: str | None) -> None:
        self.username, self.password = username, password

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> Any:
        if self.username is None:
            return User(role=UserRole.Admin)  # the tests write the variables
        if username == self.username and password == self.password:
            return User(role=UserRole.User)
        return None


class OpcuaServer:
    def __init__(
        self,
        port: int,
        *,
        cert: Path | None = None,
        key: Path | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.port = port
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/test/"
        self.cert, self.key = cert, key
        self.username, self.password = username, password
        self.values = dict(VARIABLES)
        self.ns = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="opcua-server", daemon=True
        )
        self._thread.start()
        self._server: Server | None = None
        self._nodes: dict[str, Any] = {}

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        self._run(self._start())

    def stop(self) -> None:
        self._run(self._stop())

    def write(
        self, name: str, value: Any, status: int | None = None, source_ts: dt.datetime | None = None
    ) -> None:
        self._run(self._write(name, value, status, source_ts))

    def bounce(self) -> None:
        """Close the listener and every session, then listen again: the same address space
        (quicker than a fresh server, which takes a second or two to build)."""
        self._run(self._bounce())

    async def _bounce(self) -> None:
        assert self._server is not None
        await self._server.stop()
        await self._server.start()

    def reset(self) -> None:
        """Up, with every variable at its initial value."""
        if self._server is None:
            self.start()
        for name, value in VARIABLES.items():
            if self.values[name] != value:
                self.write(name, value)

    def close(self) -> None:
        try:
            self.stop()
            self._run(self._cancel_the_rest())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    async def _start(self) -> None:
        server = Server(user_manager=Users(self.username, self.password))
        await server.init()
        server.set_endpoint(self.endpoint)
        if self.cert is not None:
            assert self.key is not None
            await server.load_certificate(str(self.cert))
            await server.load_private_key(str(self.key))
            server.set_security_policy(
                [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
                permission_ruleset=SimpleRoleRuleset(),
            )
        self.ns = await server.register_namespace(NAMESPACE)
        plant = await server.nodes.objects.add_object(self.ns, "Pump")
        self._nodes = {}
        for name, value in self.values.items():
            node = await plant.add_variable(ua.NodeId(name, self.ns), name, value)
            await node.set_writable()
            self._nodes[name] = node
        await server.start()
        self._server = server

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _cancel_the_rest(self) -> None:
        """The server leaves session tasks behind on stop: end them before the loop."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _write(
        self, name: str, value: Any, status: int | None, source_ts: dt.datetime | None
    ) -> None:
        node = self._nodes[name]
        variant_type = await node.read_data_type_as_variant_type()
        if status is None and source_ts is None:
            await node.write_value(ua.Variant(value, variant_type))
        else:
            data = ua.DataValue(
                ua.Variant(value, variant_type),
                StatusCode=ua.StatusCode(status if status is not None else ua.StatusCodes.Good),
                SourceTimestamp=source_ts,
                ServerTimestamp=dt.datetime.now(dt.UTC),
            )
            await node.write_value(data)
        if status is None:
            self.values[name] = value


def make_certificate(folder: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed application instance certificate (DER) and its key (PEM), as OPC UA
    wants them: the application URI in subjectAltName, RSA 2048, SHA-256."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
