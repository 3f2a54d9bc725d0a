"""The ``type: simulate`` source's section (the driver: gateway/sources/simulate.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.config.base import Duration, Name, Section


class SimulateSource(Section):
    type: Literal["simulate"] = Field(
        description="simulated sensors with injected faults, for a demo: no hardware needed"
    )
    name: Name = Field("sim", description="the source's name")
    streams: int = Field(4, ge=1, le=10_000, description="how many simulated streams")
    rate_hz: float = Field(10.0, gt=0.0, le=10_000.0, description="readings per second per stream")
    seed: int = Field(7, description="random seed: the same seed, the same readings")
    faults: bool = Field(True, description="inject faults")
    fault_after: Duration = Field(60.0, description="first fault, after start")
    fault_every: Duration = Field(45.0, description="time between faults")
    fault_length: Duration = Field(10.0, description="how long each fault lasts")
    drift_per_hour: float = Field(
        2.0, description="slow drift, in noise standard deviations per hour"
    )
