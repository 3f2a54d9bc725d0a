"""The ``type: opcua`` source's section (the driver: gateway/sources/opcua.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.config.base import Duration, Name, Section
from gateway.config.locate import is_name

# An OPC UA node id as text (Part 6, 5.3.1.10): an optional namespace (ns=<index> or
# nsu=<uri>), then i=<number>, s=<string>, g=<guid> or b=<base64>.
OPCUA_NODE_PATTERN = (
    r"(?:(?:ns=[0-9]{1,5}|nsu=[^;]{1,1024});)?"
    r"(?:i=[0-9]{1,10}|s=.{1,4096}|g=[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
    r"|b=[A-Za-z0-9+/=]{1,4096})"
)
_OPCUA_ENDPOINT_PATTERN = r"opc\.tcp://[^\s/:]{1,255}(?::[0-9]{1,5})?(?:/[^\s]{0,1024})?"


class OpcuaNode(Section):
    """One variable on the server, subscribed to for data changes: one stream."""

    node: str = Field(
        description="the node id: ns=<index>;s=<name>, ns=<index>;i=<number>, nsu=<uri>;s=...",
        examples=["ns=2;s=Line1.Pump.Temperature"],
    )
    stream: Name = Field(
        description="the stream name (the source's stream_prefix is put in front)",
        examples=["pump.temperature"],
    )
    scale: float = Field(1.0, description="value = raw * scale + offset")
    offset: float = Field(0.0, description="added after scaling")
    unit: str | None = Field(None, description="unit shown with the stream")

    @field_validator("node")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not re.fullmatch(OPCUA_NODE_PATTERN, value, flags=re.DOTALL) or "\x00" in value:
            raise ValueError(
                "not an OPC UA node id: write ns=<index>;s=<name>, ns=<index>;i=<number>, "
                "or nsu=<namespace uri>;s=<name>"
            )
        return value


class OpcuaSecurity(Section):
    """How the channel to the server is secured. ``None`` sends everything in clear text;
    Basic256Sha256 signs (and with SignAndEncrypt encrypts) it with the client's certificate
    and trusts exactly the server certificate named here."""

    policy: Literal["None", "Basic256Sha256"] = Field(
        "None", description="None (no security) or Basic256Sha256"
    )
    mode: Literal["Sign", "SignAndEncrypt"] = Field(
        "SignAndEncrypt", description="with Basic256Sha256: Sign or SignAndEncrypt"
    )
    cert_file: Path | None = Field(
        None, description="the client's application instance certificate (DER or PEM)"
    )
    key_file: Path | None = Field(None, description="its private key (PEM, no passphrase)")
    server_cert_file: Path | None = Field(
        None,
        description="the server's certificate (DER or PEM), trusted as it is: get it from the server's admin, not over the network",
    )

    @model_validator(mode="after")
    def _files_for_policy(self) -> OpcuaSecurity:
        files = {"cert_file": self.cert_file, "key_file": self.key_file}
        files["server_cert_file"] = self.server_cert_file
        if self.policy == "None":
            given = [k for k, v in files.items() if v is not None]
            if given:
                raise ValueError(f"policy None uses no certificates: {', '.join(given)} set")
        else:
            missing = [k for k, v in files.items() if v is None]
            if missing:
                raise ValueError(f"policy {self.policy} needs {', '.join(missing)}")
        return self


class OpcuaSource(Section):
    """One OPC UA server: one session, one subscription for every node listed."""

    type: Literal["opcua"] = Field(
        description="an OPC UA server: data-change subscriptions on its variables"
    )
    name: Name = Field(description="the source's name, in events and status", examples=["press-1"])
    endpoint: str = Field(
        description="the server's endpoint URL, opc.tcp://host:port/path",
        examples=["opc.tcp://192.0.2.10:4840/"],
    )
    nodes: list[OpcuaNode] = Field(
        min_length=1, max_length=10_000, description="the variables read (at least one)"
    )
    stream_prefix: str = Field("", description="put in front of each node's stream name")
    publishing_interval: Duration = Field(
        1.0, ge=0.01, le=3600.0, description="how often the server sends the changes it has"
    )
    sampling_interval: Duration | None = Field(
        None,
        ge=0.0,
        le=3600.0,
        description="how often the server samples each variable; null: the publishing interval",
    )
    timestamps: Literal["source", "server", "receipt"] = Field(
        "source",
        description="a reading's time: source (the device's, else the server's), server, or receipt",
    )
    timeout: Duration = Field(4.0, gt=0.0, le=60.0, description="how long one request waits")
    reconnect_min: Duration = Field(
        0.5,
        gt=0.0,
        le=60.0,
        description="a lost server is tried again after this, the wait doubling...",
    )
    reconnect_max: Duration = Field(2.0, gt=0.0, le=300.0, description="...up to this")
    security: OpcuaSecurity = Field(
        default_factory=OpcuaSecurity, description="None, or Basic256Sha256 with certificates"
    )
    username: str | None = Field(None, description="user name; null: anonymous")
    password_file: Path | None = Field(
        None,
        description="file holding the password (relative: from $CREDENTIALS_DIRECTORY when set, else the config's folder)",
    )
    password_env: str | None = Field(
        None, description="or the name of an environment variable holding it (A-Z, 0-9, _)"
    )
    # Filled by load_config from password_file / password_env; never read from YAML.
    password: SecretStr | None = Field(None, exclude=True)

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        if not re.fullmatch(_OPCUA_ENDPOINT_PATTERN, value):
            raise ValueError("must be an opc.tcp://host:port/ URL")
        return value

    @model_validator(mode="after")
    def _unique(self) -> OpcuaSource:
        streams = [self.stream_prefix + n.stream for n in self.nodes]
        bad = sorted({s for s in streams if not is_name(s)})
        if bad:
            raise ValueError(f"stream_prefix + stream is not a valid name: {', '.join(bad)}")
        dupes = sorted({s for s in streams if streams.count(s) > 1})
        if dupes:
            raise ValueError(f"stream names must be unique: {', '.join(dupes)}")
        nodes = [n.node for n in self.nodes]
        dupes = sorted({n for n in nodes if nodes.count(n) > 1})
        if dupes:
            raise ValueError(f"a node is listed twice: {', '.join(dupes)}")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be below reconnect_min")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("a password needs a username")
        return self
