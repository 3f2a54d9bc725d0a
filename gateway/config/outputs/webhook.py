"""The ``type: webhook`` output's section (the output: gateway/outputs/webhook.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gateway.config.base import Name
from gateway.config.outputs.base import _OUTPUT_NAME, _HttpOutputSection


class WebhookOutputSection(_HttpOutputSection):
    """Each alert and event POSTed as JSON; 2xx is delivered, 4xx (but 408, 429) is refused
    for good, anything else is retried."""

    type: Literal["webhook"] = Field(description="webhook")
    name: Name = Field(examples=["ops-hook"], description=_OUTPUT_NAME)
    url: str = Field(
        examples=["https://ops.example.com/hooks/liquid-gateway"],
        description="http:// or https:// URL the records are POSTed to",
    )
    secret_file: Path | None = Field(
        None,
        description="file holding the HMAC-SHA256 key; the body's signature goes in X-Gateway-Signature: sha256=<hex> (relative: from $CREDENTIALS_DIRECTORY when set, else the config's folder); null: unsigned",
    )
