"""``digit-parity.*``: the example task's own keys (registered here, next to the task)."""

from __future__ import annotations

from pydantic import Field

from contract.config import Section, register_section


class DigitParityConfig(Section):
    """``digit-parity.*``: sizes of the generated digit-word sequences."""

    num_train: int = Field(400, ge=8, le=1_000_000, description="training pool size (rows)")
    num_test: int = Field(100, ge=4, le=100_000, description="held-out test split size (rows)")
    length: int = Field(4, ge=1, le=32, description="digit words per example")


register_section("digit-parity", DigitParityConfig, owner=__name__)
