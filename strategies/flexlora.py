"""FlexLoRA: the full-size weighted mean of the clients' updates, handed back as each client's truncated SVD.

Bai et al., "Federated Fine-tuning of Large Language Models under Heterogeneous Tasks and Client
Resources", arXiv 2402.11505 (NeurIPS 2024), §3: every client ``i`` trains LoRA at its own rank
``r_i``; the server forms ``ΔW̄ = Σ p_i ΔW_i`` (``p_i ∝ n_i``) from the full-size products
``ΔW_i = s_i B_i A_i`` and gives every client the rank-``r_i`` truncated SVD of ``ΔW̄``. The mean is
exact; the truncation is not, and its loss ``‖ΔW̄ − [ΔW̄]_r‖_F / ‖ΔW̄‖_F`` is logged every round for every
configured rank as ``trunc_rel/r<r>`` (``docs/algorithms.md §20``). The base never changes.

The SVD is taken without forming ``ΔW̄``: a QR of the stacked factors and a small SVD
(:func:`~strategies.maths.mixed_rank.thin_svd`). The server keeps the rank-``R`` truncation
(``R`` the largest configured rank); node ``k`` receives its first ``r_k`` components, which is the
rank-``r_k`` truncated SVD itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .comm_cost import CommCost, CommInputs
from .maths.mixed_rank import flexlora_aggregate
from .own_rank_factors import OwnRankFactors
from .registry import StrategyInfo, register_strategy

TRUNC_PREFIX = "trunc_rel/r"
"""Train metric ``trunc_rel/r<r>``: the relative Frobenius loss of truncating the round's mean to rank ``r``."""


def flexlora_comm(inputs: CommInputs, *, client_ranks: Sequence[int] | None = None) -> CommCost:
    """``r·Σ(m+n)`` each way at the client's own rank ``r`` (``docs/communication.md §9``)."""
    return CommCost(inputs.lora_factors, inputs.lora_factors, 0)


@register_strategy(StrategyInfo(
    name="flexlora",
    summary="full-size weighted mean of the clients' B·A, each client sent its truncated SVD at its rank (FlexLoRA)",
    exact=False,  # the mean is exact; the truncation to a client's rank is not
    adapter_kinds=("lora",),
    comm=flexlora_comm,
    docs="docs/algorithms.md §20; arXiv:2402.11505",
    mixed_ranks=True,
))
class FlexLoRA(OwnRankFactors):
    """FlexLoRA (arXiv 2402.11505 §3): SVD of ``Σ p_i s_i B_i A_i``, truncated to each client's rank."""

    name = "flexlora"

    def module_aggregate(
        self, a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], weights: np.ndarray,
        scales: Sequence[float], rank: int,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """The rank-``R`` truncated SVD of the exact mean, and the truncation loss at every configured rank."""
        agg = flexlora_aggregate(a_list, b_list, weights, scales, rank)  # B: (m, R), A_eff: (R, n)
        ranks = self.mixed.ranks.ranks if self.mixed is not None else (rank,)
        return agg.b, agg.a_eff, {f"{TRUNC_PREFIX}{r}": agg.truncation_loss(r) for r in sorted(set(ranks))}
