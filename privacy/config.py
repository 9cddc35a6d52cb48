"""``privacy.*``: the DP-SGD settings of a client, as one frozen, validated model.

DP-SGD (Abadi et al. 2016, arXiv 1607.00133, Algorithm 1) clips every per-example gradient to
L2 norm ``C`` (``privacy.max-grad-norm``), adds ``N(0, σ²C²I)`` to their sum and divides by the
expected batch size. The noise multiplier ``σ`` is either given (``privacy.noise-multiplier``) or
calibrated so that the whole planned run spends at most ``privacy.target-epsilon`` (see
``privacy.accounting.calibrate_noise``); exactly one of the two is set when DP is on.

The privacy unit is one training example of one client: (ε, δ)-DP with respect to the client's own
shard, composed over all its rounds. δ is per *example*, never per batch (the Fed-SB DP script's
``δ = 1 / len(dataloader)`` is the counter-example, ``docs/privacy.md §3``). Left unset, it defaults to
``min(1e-5, 1 / (10 n))`` for the client's ``n`` examples: always an order of magnitude below
``1/n`` (the Opacus maintainers' advice is "orders of magnitude less than 1/N"; TF Privacy's guide
says "less than the inverse of the training data size"), and never looser than the ``1e-5`` of
Abadi et al. 2016 §5. A ``δ ≥ 1/n`` is rejected: it permits releasing one example outright.

Flower's run config (TOML) cannot hold "unset", so :meth:`DPConfig.from_values` reads ``0`` as unset
for ``noise-multiplier``, ``target-epsilon`` and ``delta`` (none of them is meaningful at 0 in a DP
run). The Python constructor takes ``None`` for unset and accepts ``noise_multiplier=0`` (clipping
only, ε = ∞) for tests and ablations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError

from contract.config import MAX_DELTA, PrivacyConfig, kebab

PREFIX = "privacy."
UNSET_WHEN_ZERO = ("noise-multiplier", "target-epsilon", "delta")  # run-config sentinel: 0 = unset
DEFAULT_DELTA_CAP = 1e-5  # Abadi et al. 2016 §5 (MNIST, n = 60,000)


class DPConfigError(ValueError):
    """A ``privacy.*`` setting that cannot be used; the message names the key and the fix."""


class DPConfig(PrivacyConfig):
    """``privacy.*``: DP-SGD with Opacus on the client's trainable adapter tensors.

    The keys, bounds and the one-noise-source rule are the run-config section's
    (:class:`contract.config.PrivacyConfig`); here "unset" is ``None`` instead of ``0``, so the three
    optional values are redeclared as optional and :meth:`is_set` reads ``None`` as unset (a given
    ``noise_multiplier = 0`` is clipping only, ε = ∞).

    Attributes
    ----------
    enabled : bool (default: False)
        Run local training as DP-SGD.
    noise_multiplier : float or None (default: None)
        σ, the noise std in units of the clip norm. Exactly one of this and ``target_epsilon``.
    target_epsilon : float or None (default: None)
        ε budget of the whole planned run; σ is calibrated to it and a round that would exceed it
        is refused (``privacy.BudgetExhausted``).
    max_grad_norm : float (default: 1.0)
        C, the per-example clip norm over all trainable tensors together ("flat" clipping).
    delta : float or None (default: None)
        δ per example; None gives ``min(1e-5, 1/(10 n))`` for the client's ``n`` examples.
    accountant : {"rdp", "prv"} (default: "rdp")
        RDP (Mironov 2017, arXiv 1702.07476) or PRV (Gopi et al. 2021, arXiv 2106.02848).
    poisson_sampling : bool (default: True)
        Poisson-sampled batches (each example joins a step with probability q), the sampling the
        accountants assume. False keeps fixed-size shuffled batches (ε is then only approximate).
    secure_mode : bool (default: False)
        Opacus's cryptographically secure RNG and floating-point-attack-resistant noise
        (needs ``torchcsprng``); off is fine for experiments.
    """

    # the three optional values widen PrivacyConfig's floats (0 = unset there) to None = unset, on purpose
    noise_multiplier: float | None = Field(  # type: ignore[assignment]  # see above
        None, ge=0, description="noise std / clip norm (σ); 0 in the run config means unset"
    )
    target_epsilon: float | None = Field(  # type: ignore[assignment]  # widened, as noise_multiplier
        None, gt=0, description="ε budget of the whole planned run; 0 in the run config means unset"
    )
    delta: float | None = Field(  # type: ignore[assignment]  # widened, as noise_multiplier
        None, gt=0, lt=MAX_DELTA, description="δ per example; 0 (unset): min(1e-5, 1/(10 n)) for the client's n examples"
    )

    @classmethod
    def is_set(cls, value: float | None) -> bool:
        """Whether an optional value is given: anything but ``None`` (``0`` is a given σ)."""
        return value is not None

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> DPConfig:
        """Build from plain values as the user writes them.

        ``values`` is either Flower's whole flat run config (only its ``privacy.*`` keys are read) or
        one section's ``{"noise-multiplier": ..., ...}`` (kebab- or snake-case). ``0`` means unset for
        ``noise-multiplier``, ``target-epsilon`` and ``delta``.

        Raises
        ------
        DPConfigError
            Every invalid value, each naming its ``privacy.*`` key and the fix.
        """
        if any(str(k).startswith(PREFIX) for k in values):
            section = {str(k)[len(PREFIX):]: v for k, v in values.items() if str(k).startswith(PREFIX)}
        else:
            section = {str(k): v for k, v in values.items()}
        section = {kebab(k): v for k, v in section.items()}
        for key in UNSET_WHEN_ZERO:
            if key in section and not isinstance(section[key], bool) and section[key] == 0:
                section[key] = None
        try:
            return cls.model_validate(section)
        except ValidationError as exc:
            raise DPConfigError(_describe(exc, section)) from None

    def delta_for(self, num_examples: int) -> float:
        """δ for a client holding ``num_examples`` examples (the set value, or the default).

        Raises
        ------
        DPConfigError
            If a set ``privacy.delta`` is not below ``1/n``.
        """
        if num_examples < 1:
            raise ValueError(f"a DP client needs at least one example, got num_examples = {num_examples}")
        if self.delta is None:
            return min(DEFAULT_DELTA_CAP, 1.0 / (10 * num_examples))
        if self.delta >= 1.0 / num_examples:
            raise DPConfigError(
                f"`privacy.delta` = {self.delta:g} is not below 1/n = {1.0 / num_examples:.3g} for this client's "
                f"n = {num_examples} examples; such a δ allows releasing one example outright. Set a smaller "
                "`privacy.delta` or 0 for the default min(1e-5, 1/(10 n))"
            )
        return self.delta


def _describe(exc: ValidationError, section: Mapping[str, Any]) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if key:
            hint = " (0 means unset)" if key in UNSET_WHEN_ZERO else ""
            problems.append(
                f"`{PREFIX}{key}` = {section.get(key, err.get('input'))!r}: {msg}{hint}; fix it in "
                f"[tool.flwr.app.config] or with --run-config '{PREFIX}{key}=...'"
            )
        else:
            problems.append(msg)
    return "invalid DP settings:\n  - " + "\n  - ".join(problems)
