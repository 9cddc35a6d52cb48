"""FFA-LoRA: federated LoRA with A frozen and shared, so averaging B is exact.

Sun et al., "Improving LoRA in Privacy-preserving Federated Learning", arXiv 2403.12313, §3:
with every client's ``A`` identical and frozen, ``Σ p_i s·B_i A == s·(Σ p_i B_i) A``, so FedAvg of
``B`` (and a trained head) is the mean of the clients' models (``docs/algorithms.md §7``). The
server's A is authoritative: it is sent once to each node with its hash
(:class:`~strategies.frozen_factors.FrozenFactorsDistribution`), and nodes verify the hash every round.
"""

from __future__ import annotations

from .comm_cost import CommCost, CommInputs
from .frozen_factors import FrozenFactorsStrategy
from .registry import StrategyInfo, register_strategy


def ffa_comm(inputs: CommInputs, *, a_by_seed: bool = True) -> CommCost:
    """``r·Σm`` (``B`` only) each way; ``A`` costs nothing when every client regenerates it from a
    shared seed, else ``r·Σn`` once (``docs/communication.md §2``, ``§4``)."""
    b_only = inputs.rank * inputs.sum_m
    return CommCost(b_only, b_only, 0 if a_by_seed else inputs.rank * inputs.sum_n)


@register_strategy(StrategyInfo(
    name="ffa",
    summary="FedAvg of B over a frozen, shared A (FFA-LoRA); exact",
    exact=True,
    adapter_kinds=("ffa",),
    comm=ffa_comm,
    docs="docs/algorithms.md §7; arXiv:2403.12313",
    linear=True,  # the aggregate is a weighted mean of the payloads: SecAgg applies
    fixed_rank_reason="FFA-LoRA's frozen A (r×n) is shared by every client and only B over it is averaged, so "
    "every client's B must have A's rank",
))
class FFALoRA(FrozenFactorsStrategy):
    """FFA-LoRA (arXiv 2403.12313): FedAvg of B (and the head) over a frozen, shared A."""
