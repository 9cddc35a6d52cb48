"""The declared shape of a safety-subspace client report (``docs/tasks.md §5``, ``docs/trust.md §5``).

:func:`client.tasks.safety.analysis.analyse_update` writes ``{"metrics", "modules", "bases"}``; the
server validates every report against :class:`SafetyReport` before merging, so strings where
numbers belong, NaN or infinite values, or a basis whose singular values do not match its columns
are skipped and counted, never merged.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

_Name = Annotated[str, Field(strict=True, min_length=1, max_length=300)]
_Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_NonNegative = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]


class SafetyBasis(BaseModel):
    """A module's leading left singular vectors ``U: (m, k)`` and singular values ``s: (k,)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    U: list[list[_Finite]]
    s: list[_NonNegative]

    @model_validator(mode="after")
    def _shapes(self) -> SafetyBasis:
        columns = {len(row) for row in self.U}
        if len(columns) > 1:
            raise ValueError(f"`U` is ragged: its rows have {sorted(columns)} entries")
        k = columns.pop() if columns else 0
        if self.U and k != len(self.s):
            raise ValueError(f"`U` has {k} columns but `s` has {len(self.s)} values")
        return self


class SafetyReport(BaseModel):
    """One client's update analysis: scalar metrics, per-module detail and the bases it sends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: dict[_Name, _Finite]
    modules: dict[_Name, dict[_Name, _Finite | list[_Finite]]] = {}
    bases: dict[_Name, SafetyBasis] = {}
