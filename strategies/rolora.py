"""RoLoRA: alternate rounds train and send only ``B`` or only ``A``; exact every round.

Chen et al., "Robust Federated Finetuning of LLMs via Alternating Optimization of LoRA",
arXiv 2502.01755, §3: in an odd round every client trains ``B`` over the common, fixed ``A``; in an
even round ``A`` over the common ``B``. The half that trains is averaged; the fixed half is the same
on every client, so ``Σ p_i s·B_i A == s·(Σ p_i B_i) A`` (and likewise for ``A``): the global model
is the mean of the clients' models after every round (``docs/algorithms.md §15``). ``B`` trains
first because LoRA starts with ``B = 0``, where ``A``'s gradient ``s·Bᵀ ∂L/∂ΔW`` vanishes.

Each round a client returns one half, and, holding the global adapter from its previous round, is
sent only the half the previous round changed (:attr:`~PartialFactorsStrategy.cache_global`): half of
FedIT's traffic per round (``docs/communication.md §7``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from .comm_cost import CommCost, CommInputs
from .partial_factors import PartialFactorsStrategy, RoundRoles
from .registry import StrategyInfo, register_strategy

Phase = Literal["average", "a", "b"]


def trains_b(server_round: int) -> bool:
    """Odd rounds train ``B`` (over a fixed ``A``), even rounds ``A`` (over a fixed ``B``)."""
    return server_round % 2 == 1


def rolora_comm(inputs: CommInputs, *, phase: Phase = "average") -> CommCost:
    """One round of a node that took part in the previous one (``docs/communication.md §7``).

    ``phase = "b"`` (a ``B`` round): upload ``r·Σm``, download the ``A`` changed last round,
    ``r·Σn``; ``"a"``: the reverse; ``"average"``: ``⌊r·Σ(m+n)/2⌋`` each way, half of FedIT's.
    ``one_time`` is the other half of a node's first, complete download.
    """
    a_half, b_half = inputs.rank * inputs.sum_n, inputs.rank * inputs.sum_m
    if phase == "b":
        return CommCost(b_half, a_half, b_half)
    if phase == "a":
        return CommCost(a_half, b_half, a_half)
    if phase != "average":
        raise ValueError(f"phase must be 'average', 'a' or 'b', got {phase!r}")
    half = inputs.lora_factors // 2
    return CommCost(half, half, inputs.lora_factors - half)


@register_strategy(StrategyInfo(
    name="rolora",
    summary="alternate rounds train and send only B or only A over the common other half (RoLoRA); exact",
    exact=True,
    adapter_kinds=("lora",),
    comm=rolora_comm,
    docs="docs/algorithms.md §15; arXiv:2502.01755",
))
class RoLoRA(PartialFactorsStrategy):
    """RoLoRA (arXiv 2502.01755): FedAvg of ``B`` in odd rounds and of ``A`` in even ones."""

    cache_global = True

    def round_roles(self, server_round: int) -> RoundRoles:
        """Odd rounds fix ``A``, even rounds fix ``B``."""
        return RoundRoles(fixed=(self.a_layer,) if trains_b(server_round) else (self.b_layer,))

    def train_diagnostics(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, float]:
        """None: the aggregate is exact, FedIT's deviation is zero by construction."""
        return {}
