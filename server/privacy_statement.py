"""What a DP run's ε covers, stated in the log and in ``summary.json``: no silent gaps.

Clients report ε for their DP-SGD steps (``privacy/``); the server records the max over clients per
round. Client data can reach the server outside DP-SGD only through an adapter kind's set-up, which
the kind declares (``AdapterKind.privacy_gaps``): Fed-SB's federated set-up (``adapter.init =
federated``, arXiv 2502.15436; ``docs/algorithms.md §9.2``), where each client uploads its summed raw
gradient once, unclipped and un-noised, to build LoRA-SB's frozen B and A. Corolla does not
privatise that upload, so such a run says so; ``adapter.init = server`` builds B and A from the
server's own calibration sample and touches no client data.
"""

from __future__ import annotations

from logging import WARNING
from typing import Any

from flwr.common.logger import log

from adapters.kind_registry import get_adapter_kind
from contract import RunConfig


def privacy_statement(config: RunConfig, adapter_kind: str) -> dict[str, Any] | None:
    """The DP settings and what ε covers with ``adapter_kind`` (``None`` when DP is off); logs each gap
    as a warning."""
    if not config.privacy.enabled:
        return None
    privacy = config.privacy
    gaps = list(get_adapter_kind(adapter_kind).privacy_gaps(config))
    for gap in gaps:
        log(WARNING, "DP: %s", gap)
    return {
        "mechanism": "DP-SGD (Opacus), per-example clipping of the trainable adapter tensors",
        "unit": "one training example of one client; ε composed over all of that client's rounds",
        "accountant": privacy.accountant,
        "noise_multiplier": privacy.noise_multiplier or None,
        "target_epsilon": privacy.target_epsilon or None,
        "max_grad_norm": privacy.max_grad_norm,
        "delta": privacy.delta or "min(1e-5, 1/(10 n)) per client",
        "poisson_sampling": privacy.poisson_sampling,
        "not_covered": gaps,
    }
