"""Fed-SB: federated LoRA-SB, averaging only the small r×r matrix R, exactly.

Singhal et al., "Fed-SB: A Silver Bullet for Extreme Communication Efficiency and Performance in
(Private) Federated LoRA Fine-Tuning", arXiv 2502.15436, §3. Every client shares frozen
``B: (m, r)`` and ``A: (r, n)`` from the LoRA-SB initialisation (arXiv 2411.19557 §2.3) and trains
``R: (r, r)``; ``Σ p_i B R_i A == B (Σ p_i R_i) A``, so the weighted mean of the R's is the mean
of the clients' models (``docs/algorithms.md §9.1``). Per round each client sends and receives
``M·r²`` values (+ head), independent of the number of clients; B and A travel once
(``r·Σ(m+n)``) and are booked as set-up traffic.
"""

from __future__ import annotations

from .comm_cost import CommCost, CommInputs
from .frozen_factors import FrozenFactorsStrategy
from .registry import StrategyInfo, register_strategy


def fedsb_comm(inputs: CommInputs) -> CommCost:
    """``M·r²`` each way (``R`` only, whatever ``K``); ``B`` and ``A`` once, ``r·Σ(m+n)``
    (``docs/communication.md §2``, ``§4``)."""
    latent = inputs.modules * inputs.rank * inputs.rank
    return CommCost(latent, latent, inputs.lora_factors)


@register_strategy(StrategyInfo(
    name="fedsb",
    summary="FedAvg of the r x r latent R over frozen, shared B and A (Fed-SB); exact",
    exact=True,
    adapter_kinds=("lora-sb",),
    comm=fedsb_comm,
    docs="docs/algorithms.md §9; arXiv:2502.15436",
    linear=True,  # the aggregate is a weighted mean of the payloads: SecAgg applies
    fixed_rank_reason="Fed-SB averages LoRA-SB's r×r matrix R between B and A that every client shares, so R has "
    "one shape (r×r) for all clients",
))
class FedSB(FrozenFactorsStrategy):
    """Fed-SB (arXiv 2502.15436): FedAvg of R (and the head) over frozen, shared B and A."""
