"""What the output sections share: the back-off check and the HTTP outputs' base."""

from __future__ import annotations

import urllib.parse
from typing import Any, Self

from pydantic import Field, field_validator, model_validator

from gateway.config.base import Duration, Section


def check_backoff(section: Any) -> None:
    """An output's back-off bounds: after no answer (reconnect) and after a refusal (retry)."""
    if (
        section.reconnect_min_delay <= 0
        or section.reconnect_min_delay > section.reconnect_max_delay
    ):
        raise ValueError("need 0 < reconnect_min_delay <= reconnect_max_delay")
    if section.retry_min_delay <= 0 or section.retry_min_delay > section.retry_max_delay:
        raise ValueError("need 0 < retry_min_delay <= retry_max_delay")


_OUTPUT_NAME = (
    "the output's name in status, metrics and its delivery state (letters, digits, _ . : -)"
)


class _HttpOutputSection(Section):
    """What every output that POSTs to an HTTP server has: a request time-out, the back-off
    after no answer and after a refusal, the SIGTERM bound; ``url`` is checked the same way.
    Each type declares ``type``, ``name`` and ``url`` itself (``config sample`` and ``config
    show`` print ``type`` and ``name`` first, then a type's own keys, then these)."""

    timeout: Duration = Field(10.0, gt=0.0, le=300.0, description="how long one request may take")
    reconnect_min_delay: Duration = Field(
        1.0, description="after a request that got no answer, wait this long, doubling..."
    )
    reconnect_max_delay: Duration = Field(60.0, description="...up to this")
    retry_min_delay: Duration = Field(
        2.0, description="a record refused with 5xx, 408 or 429 is retried after this, doubling..."
    )
    retry_max_delay: Duration = Field(300.0, description="...up to this")
    drain_timeout: Duration = Field(
        5.0, description="on SIGTERM, how long the last requests may take"
    )

    @field_validator("url", check_fields=False)
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("url must not hold credentials; use secret_file to sign requests")
        return value

    @model_validator(mode="after")
    def _delays_ordered(self) -> Self:
        check_backoff(self)
        return self
