"""The outputs' config sections: one module per output type, named as its output in
gateway/outputs, and below the one list of them.

A new output type is a module here with its section (``type: Literal["<tag>"]`` first), its
class in ``OutputSection``, and its output's line in ``OUTPUT_TYPES`` (gateway/outputs;
tests/outputs check that the two agree). The ``upstream:`` section is ``UpstreamSection``
in ``mqtt.py``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gateway.config.base import sections_by_type
from gateway.config.outputs.alertmanager import AlertmanagerOutputSection
from gateway.config.outputs.mqtt import MqttOutputSection
from gateway.config.outputs.webhook import WebhookOutputSection

# The one list of output types, in the order an error lists them. A union, not a dict, so
# that a type checker sees each member; the registry below is read off it.
OutputSection = Annotated[
    MqttOutputSection | WebhookOutputSection | AlertmanagerOutputSection,
    Field(discriminator="type"),
]

# type tag -> section class
OUTPUT_SECTIONS = sections_by_type(OutputSection)

__all__ = ["OUTPUT_SECTIONS", "OutputSection"]
