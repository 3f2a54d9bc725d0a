"""The ``upstream:`` section and the ``type: mqtt`` output's, which is one more of it
(the output: gateway/outputs/mqtt.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import BrokerSection, Duration, Name, Section
from gateway.config.locate import is_name
from gateway.config.outputs.base import _OUTPUT_NAME, check_backoff


class UpstreamSection(Section):
    broker: BrokerSection = Field(description="the broker alerts and events are published to")
    topic_prefix: str = Field("liquid-gateway", description="topics are <prefix>/<gateway.id>/...")
    qos: Literal[1, 2] = Field(1, description="1 or 2")
    max_inflight: int = Field(20, ge=1, le=1000, description="unacknowledged publishes at most")
    # Jittered so that a fleet that lost the same broker does not come back in lock-step.
    reconnect_min_delay: Duration = Field(
        1.0, description="reconnect back-off: doubles per failed attempt, jittered to 50-100 %..."
    )
    reconnect_max_delay: Duration = Field(60.0, description="...up to this")
    retry_min_delay: Duration = Field(
        2.0, description="a row the broker refused is parked and retried after this, doubling..."
    )
    retry_max_delay: Duration = Field(300.0, description="...up to this")
    drain_timeout: Duration = Field(
        5.0, description="on SIGTERM, how long in-flight publishes may take to be acknowledged"
    )
    confirm: Literal["none", "echo"] = Field(
        "none",
        description="none, or echo: a row is delivered only when it comes back from the broker (the only way to see refusals under 3.1.1)",
    )
    confirm_timeout: Duration = Field(
        10.0, description="with confirm: echo, a row not seen back by then is parked and retried"
    )

    @model_validator(mode="after")
    def _delays_ordered(self) -> UpstreamSection:
        check_backoff(self)
        if self.confirm_timeout <= 0:
            raise ValueError("confirm_timeout must be positive")
        return self

    def refusal_warning(self) -> str | None:
        """Why a publish the broker refuses would be counted as delivered, or None."""
        if self.broker.protocol == "3.1.1" and self.confirm == "none":
            return (
                'upstream.broker.protocol "3.1.1": the broker cannot signal a refused publish '
                "(an ACL denial is acknowledged like a success), so refused alerts are marked "
                'delivered and never retried; use protocol "5", or upstream.confirm: echo'
            )
        return None

    @field_validator("topic_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        parts = value.split("/")
        if not value or any(not is_name(p) for p in parts):
            raise ValueError(
                "topic_prefix must be '/'-separated names of letters, digits and _ . : -"
            )
        return value


class MqttOutputSection(UpstreamSection):
    """One more MQTT broker alerts and events are published to, as ``upstream:`` is."""

    type: Literal["mqtt"] = Field(description="mqtt")
    name: Name = Field(examples=["site-broker"], description=_OUTPUT_NAME)
