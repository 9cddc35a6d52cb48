"""``faults.*``: deterministic fault injection for tests and demos (issue 5).

Each selected client draws, from ``(seed, round, partition)``, whether it fails this round (raises:
an error reply), replies with a malformed update (a NaN in its first array: the server drops it),
or is slow (sleeps ``slow-seconds`` before replying: with ``round-timeout`` below that, the server
stops waiting and counts it as timed out). The three are exclusive; the fractions are of the
clients selected in each round, in expectation. The draw itself is ``client.faults``.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from .section import Section


class FaultsConfig(Section):
    """``faults.*``: off unless a fraction is above 0."""

    fail_fraction: float = Field(0.0, ge=0, le=1, description="fraction of selected clients whose round raises")
    malformed_fraction: float = Field(0.0, ge=0, le=1, description="fraction that reply with a NaN in their update")
    slow_fraction: float = Field(0.0, ge=0, le=1, description="fraction that sleep `faults.slow-seconds` first")
    slow_seconds: float = Field(0.0, ge=0, le=86_400, description="how long a slow client sleeps before training")

    @model_validator(mode="after")
    def _fractions_fit(self) -> FaultsConfig:
        total = self.fail_fraction + self.malformed_fraction + self.slow_fraction
        if total > 1:
            raise ValueError(
                f"`faults.fail-fraction` + `faults.malformed-fraction` + `faults.slow-fraction` = {total:g} > 1; "
                "the three faults are exclusive, so their fractions must sum to at most 1"
            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether any fault is injected."""
        return self.fail_fraction + self.malformed_fraction + self.slow_fraction > 0
