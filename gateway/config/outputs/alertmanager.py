"""The ``type: alertmanager`` output's section (the output: gateway/outputs/alertmanager.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gateway.config.base import Duration, Name
from gateway.config.outputs.base import _OUTPUT_NAME, _HttpOutputSection


class AlertmanagerOutputSection(_HttpOutputSection):
    """Alerts as Prometheus Alertmanager alerts (POST /api/v2/alerts), so its silences,
    grouping and routing (email, Slack, PagerDuty) apply; events are not sent."""

    type: Literal["alertmanager"] = Field(description="alertmanager")
    name: Name = Field(examples=["alertmanager"], description=_OUTPUT_NAME)
    url: str = Field(
        examples=["http://127.0.0.1:9093"],
        description="Alertmanager's base URL (http:// or https://); alerts go to <url>/api/v2/alerts",
    )
    severity: Name = Field("warning", description="the severity label of every alert")
    resend_interval: Duration = Field(
        60.0,
        ge=1.0,
        le=3600.0,
        description="re-send every alert still active this often, as Prometheus does, so Alertmanager keeps it firing however long it lasts",
    )
    raised_for: Duration | None = Field(
        None,
        gt=0.0,
        description="endsAt of a raised alert, from when it is (re-)sent: Alertmanager resolves it by then unless re-sent (its clear ends it sooner); null: 4 resend_intervals",
    )

    @model_validator(mode="after")
    def _outlasts_a_resend(self) -> AlertmanagerOutputSection:
        if self.raised_for is not None and self.raised_for <= self.resend_interval:
            raise ValueError(
                "raised_for must be longer than resend_interval, or every alert resolves "
                "itself between two re-sends"
            )
        return self

    @property
    def ends_after(self) -> float:
        """How far ahead of a (re-)send a raised alert's endsAt is."""
        return self.raised_for if self.raised_for is not None else 4 * self.resend_interval
