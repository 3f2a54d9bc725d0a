"""Credentials and TLS for every paho client we make (source, upstream, Home Assistant).

One place, so the three clients cannot drift apart: the password comes from the config's
SecretStr and is handed to paho only; with ``tls`` configured the client verifies the broker's
certificate and host name, and a TLS setup problem is an error, never a plaintext fallback.
"""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt

from gateway.config import BrokerSection
from gateway.errors import GatewayError


class TlsSetupError(GatewayError):
    """The configured CA, certificate or key cannot be used: do not connect at all."""


def secure(client: mqtt.Client, broker: BrokerSection) -> None:
    if broker.username is not None:
        password = broker.password.get_secret_value() if broker.password else None
        client.username_pw_set(broker.username, password)
    if broker.tls is None:
        return
    tls = broker.tls
    try:
        client.tls_set(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise TlsSetupError(str(exc)) from exc
