"""The safety plugin's declared report schema: an honest analysis passes; wrong types and shapes do not."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from client.tasks.safety.report import SafetyReport

HONEST: dict[str, Any] = {
    "metrics": {"energy_rho_0.25": 0.4, "cos_to_ref": -0.1},
    "modules": {"layers.0.q": {"energy": 2.0, "rank": 2, "principal_cos": [0.9, 0.1]}},
    "bases": {"layers.0.q": {"U": [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], "s": [2.0, 0.5]}},
}


def test_an_honest_report_passes() -> None:
    SafetyReport.model_validate(HONEST)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metrics": {"cos_to_ref": "high"}}, "metrics.cos_to_ref"),
        ({"metrics": {"cos_to_ref": float("nan")}}, "metrics.cos_to_ref"),
        ({"bases": {"m": {"U": [[1.0, 0.0], [1.0]], "s": [1.0, 1.0]}}}, "ragged"),
        ({"bases": {"m": {"U": [[1.0, 0.0]], "s": [1.0]}}}, "2 columns but `s` has 1"),
        ({"bases": {"m": {"U": [[1.0]], "s": [-1.0]}}}, "bases.m.s.0"),
        ({"modules": {"m": {"energy": "x"}}}, "modules.m.energy"),
        ({"extra": 1}, "extra"),
    ],
)
def test_wrong_types_and_shapes_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        SafetyReport.model_validate({**HONEST, **change})
    assert message in str(info.value)
