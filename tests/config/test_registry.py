"""The lists of source and output types (gateway/config/sources, gateway/config/outputs):
each section sits beside its driver's name, and a type tag is taken once (#15 item 1)."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import Field

from gateway.config.base import Section, sections_by_type
from gateway.config.outputs import OUTPUT_SECTIONS
from gateway.config.sources import SOURCE_SECTIONS
from gateway.outputs import OUTPUT_TYPES
from gateway.sources import SOURCE_TYPES


@pytest.mark.parametrize(
    ("sections", "drivers", "package"),
    [
        (SOURCE_SECTIONS, SOURCE_TYPES, "gateway.config.sources"),
        (OUTPUT_SECTIONS, OUTPUT_TYPES, "gateway.config.outputs"),
    ],
    ids=["sources", "outputs"],
)
def test_each_section_is_in_the_module_named_as_its_driver(
    sections: dict[str, type[Section]], drivers: dict[str, tuple[str, str]], package: str
) -> None:
    assert set(sections) == set(drivers)
    for tag, section in sections.items():
        driver_module = drivers[tag][0].rpartition(".")[2]
        assert section.__module__ == f"{package}.{driver_module}", tag
        assert section.model_fields["type"].annotation == Literal[tag]


def test_a_type_tag_is_taken_once() -> None:
    class One(Section):
        type: Literal["same"]

    class Other(Section):
        type: Literal["same"]

    with pytest.raises(TypeError, match="two sections have type 'same'"):
        sections_by_type(Annotated[One | Other, Field(discriminator="type")])
    assert sections_by_type(Annotated[One, Field()]) == {"same": One}
