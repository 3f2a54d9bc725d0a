"""Helpers for the tests that watch what the gateway publishes upstream."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

from gateway.records import AlertChange
from tests import helpers
from tests.helpers import Received

__all__ = ["GW", "PREFIX", "Received", "Subscriber", "alert", "reconfigure"]

if TYPE_CHECKING:
    from tests.conftest import Broker

PREFIX = "plant/line1"
GW = "gw-7"


def reconfigure(broker: Broker, lines: str) -> None:
    """Add to the broker's config and restart it."""
    with broker.conf.open("a") as conf:
        conf.write(lines)
    broker.restart()


class Subscriber(helpers.Subscriber):
    """The shared subscriber, on everything under the gateway's prefix."""

    def __init__(self, broker: Broker, persistent: bool = False) -> None:
        super().__init__(broker, f"{PREFIX}/#", persistent=persistent)

    def on(self, suffix: str) -> list[Received]:
        return self.on_topic(f"{PREFIX}/{GW}/{suffix}")

    def alerts(self) -> list[dict]:
        return [json.loads(m.payload) for m in self.messages if "/alerts/" in m.topic]


def alert(stream: str, state: str = "raised", alert_id: str | None = None) -> AlertChange:
    return AlertChange(
        alert_id=alert_id or uuid.uuid4().hex,
        stream=stream,
        state=state,
        ts=1_700_000_000.5,
        score=0.9993,
        observed=81.5,
        expected=60.25,
        band=(55.0, 65.5),
        unit="degC",
        model="cfc-default@3f2a9c1e",
    )
