"""``safety.*``: the safety-subspace analysis of client updates (arXiv 2505.14185).

Read by the ``safety-*`` tasks (``client.tasks.safety``), which wrap an ordinary training task and
measure every client's adapter update against a reference subspace each round.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from contract.config import Section, parse_fractions, register_section


class SafetyConfig(Section):
    """``safety.*`` (read by the ``safety-*`` tasks)."""

    reference_kind: Literal["basis", "adapter", "checkpoint"] = Field(
        "basis",
        description="`basis`: a safetensors file of <module>.U/.S/.Vh; `adapter`: a PEFT LoRA folder (ΔA = s·B·A); "
        "`checkpoint`: an aligned model folder, ΔA = aligned - the run's base",
    )
    reference_path: str = Field("", description="the reference file or folder (required by the safety-* tasks)")
    rhos: str = Field("0.01,0.05,0.25", description="fractions ρ: energy in the reference top-k, k = round(ρ·min(m, n))")
    etas: str = Field("0.5,0.9", description="energy fractions η of the bases compared by MSO")
    project: Literal["none", "same", "orth", "opp"] = Field(
        "none", description="intervention on each client update before it is sent (the paper's projections)"
    )
    project_rho: float = Field(0.25, gt=0, le=1, description="ρ of the subspace `safety.project` projects on")
    report_rank: int = Field(8, ge=1, le=4096, description="most basis columns per module a client sends for inter-client MSO")
    max_reference_rank: int = Field(64, ge=1, le=65_536, description="singular directions kept from a dense reference delta")
    activation: bool = Field(True, description="also report the activation-space MSO of two prompt sets at evaluation")
    prompts_a: str = Field("", description="text file, one prompt a line (empty: the task's own test prompts)")
    prompts_b: str = Field("", description="text file, one prompt a line (empty: built-in off-task prompts)")

    @field_validator("rhos", "etas")
    @classmethod
    def _fractions(cls, value: str) -> str:
        parse_fractions(value)
        return value


register_section("safety", SafetyConfig, owner="client.tasks.safety")
