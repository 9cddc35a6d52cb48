"""HetLoRA: zero-padded, sparsity-weighted aggregation of heterogeneous ranks, truncation on the way back.

Cho et al., "Heterogeneous LoRA for Federated Fine-tuning of On-Device Foundation Models",
arXiv 2401.06432 (EMNLP 2024), §3. Client ``k`` trains rank ``r_k``; the server zero-pads every client's
``B_k``, ``A_k`` to the largest rank ``R`` and averages them with the *sparsity weights*
``p_k = ‖ΔW_k‖_F / Σ_j ‖ΔW_j‖_F`` (``ΔW_k = s_k B_k A_k``, per module), then sends client ``k`` the
first ``r_k`` components of the result (truncation). Padding happens in effective units (``s_k A_k``),
so ranks with different scales ``α/r_k`` add up (our choice; ``docs/algorithms.md §19``).

Not exact: the product of the padded means is not the mean of the products (as FedIT, §3); the
gap ``‖Σ p_k ΔW_k − B̄ Ā_eff‖ / ‖Σ p_k ΔW_k‖`` is logged per module (``dev_rel/<module>``,
``dev_rel_mean``). The paper's local rank self-pruning (a regulariser on the last components and a
smaller rank when they fade) is not implemented: every client keeps its configured rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from contract import DEV_REL_MEAN, DEV_REL_PREFIX

from .comm_cost import CommCost, CommInputs
from .maths.mixed_rank import hetlora_aggregate, sparsity_weights
from .own_rank_factors import OwnRankFactors
from .registry import StrategyInfo, register_strategy


def hetlora_comm(inputs: CommInputs, *, client_ranks: Sequence[int] | None = None) -> CommCost:
    """``r·Σ(m+n)`` each way at the client's own rank ``r`` (``docs/communication.md §9``)."""
    return CommCost(inputs.lora_factors, inputs.lora_factors, 0)


@register_strategy(StrategyInfo(
    name="hetlora",
    summary="zero-padded, norm-weighted mean of mixed-rank factors, truncated to each client's rank (HetLoRA); not exact",
    exact=False,
    adapter_kinds=("lora",),
    comm=hetlora_comm,
    docs="docs/algorithms.md §19; arXiv:2401.06432",
    mixed_ranks=True,
))
class HetLoRA(OwnRankFactors):
    """HetLoRA (arXiv 2401.06432 §3): zero-pad to ``R``, sparsity-weighted mean, truncate per client."""

    name = "hetlora"

    def module_aggregate(
        self, a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], weights: np.ndarray,
        scales: Sequence[float], rank: int,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Padded means with the module's sparsity weights (the example weights are not used, as in the paper)."""
        p = sparsity_weights(a_list, b_list, scales)  # (K,)
        agg = hetlora_aggregate(a_list, b_list, p, scales, rank)  # B: (m, R), A_eff: (R, n)
        return agg.b, agg.a_eff, {"dev_rel": agg.dev_rel}

    def round_metrics(self, per_module: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        """``dev_rel/<module>`` and their mean ``dev_rel_mean``, as FedIT reports them."""
        out = {f"{DEV_REL_PREFIX}{module}": values["dev_rel"] for module, values in per_module.items()}
        out[DEV_REL_MEAN] = float(np.mean(list(out.values()))) if out else 0.0
        return out
