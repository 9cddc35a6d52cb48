"""``privacy.*``: client-side DP-SGD (Opacus) on the trainable adapter tensors.

This is the one definition of the section: its keys, defaults, bounds and the rule that DP needs
exactly one noise source (a given noise multiplier, or an ε budget to calibrate it to). The client
turns it into ``privacy.DPConfig`` (a subclass that reads "unset" as ``None`` and adds the δ
default and the calibration), so a bad run fails at start, on the server, with the same message.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .section import Section

# The largest δ any run may set (docs/privacy.md §3): δ must be below 1/n for every client, so only a
# client with fewer than 100 examples could use more, and "one example in a hundred may be released
# outright" is no guarantee. Below this, the server checks 1/n against the split it draws at start.
MAX_DELTA = 0.01


class PrivacyConfig(Section):
    """``privacy.*``: client-side DP-SGD (Opacus) on the trainable adapter tensors.

    TOML cannot say "unset", so ``0`` means unset for ``noise-multiplier``, ``target-epsilon`` and
    ``delta`` here; :meth:`is_set` is what a subclass with another spelling of "unset" overrides.
    """

    enabled: bool = Field(False, description="train with DP-SGD (per-example clipping + Gaussian noise)")
    noise_multiplier: float = Field(0.0, ge=0, le=1_000, description="noise std / clip norm; 0: calibrate to `target-epsilon`")
    target_epsilon: float = Field(0.0, ge=0, le=1_000, description="ε budget of the whole run per client; 0: use `noise-multiplier`")
    max_grad_norm: float = Field(1.0, gt=0, le=1e6, description="per-example clip norm C over all trainable tensors")
    delta: float = Field(
        0.0, ge=0, lt=MAX_DELTA,
        description="δ per example, below 0.01 and below 1/n for every client's n examples (docs/privacy.md §3); "
        "0: min(1e-5, 1/(10 n))",
    )
    accountant: Literal["rdp", "prv"] = Field("rdp", description="privacy accountant: `rdp` or `prv`")
    poisson_sampling: bool = Field(
        True, description="Poisson-sampled batches, as the accountant assumes (false: ε is not a guarantee, docs/privacy.md §8)"
    )
    secure_mode: bool = Field(False, description="cryptographically secure noise (needs torchcsprng)")

    @classmethod
    def is_set(cls, value: float | None) -> bool:
        """Whether an optional value (noise multiplier, ε, δ) is given: in the run config, above 0."""
        return value is not None and value > 0

    @model_validator(mode="after")
    def _exactly_one_noise_source(self) -> PrivacyConfig:
        if not self.enabled:
            return self
        noise, budget = self.is_set(self.noise_multiplier), self.is_set(self.target_epsilon)
        if noise and budget:
            raise ValueError(
                f"`privacy.noise-multiplier` = {self.noise_multiplier} and `privacy.target-epsilon` = "
                f"{self.target_epsilon} are both set; choose one: the noise is either given or calibrated "
                "to the budget (set the other to 0)"
            )
        if not noise and not budget:
            raise ValueError(
                "`privacy.enabled` = true needs `privacy.noise-multiplier` (e.g. 1.0) or "
                "`privacy.target-epsilon` (e.g. 8.0); set exactly one of them to a positive value"
            )
        return self
