"""HetLoRA: zero-padded, sparsity-weighted aggregation of heterogeneous ranks, truncation on the way back.

Cho et al., "Heterogeneous LoRA for Federated Fine-tuning of On-Device Foundation Models",
arXiv 2401.06432 (EMNLP 2024), §3. Client ``k`` trains rank ``r_k``; the server zero-pads every client's
``B_k``, ``A_k`` to the largest rank ``R`` and averages them with the *sparsity weights*
``p_k = ‖ΔW_k‖_F / Σ_j ‖ΔW_j‖_F`` (``ΔW_k = s_k B_k A_k``, per module), then sends client ``k`` the
first ``r_k`` components of the result (truncation). Padding happens in effective units (``s_k A_k``),
so ranks with different scales ``α/r_k`` add up (our choice; ``docs/algorithms.md §19``).

Not exact: the product of the padded means is not the mean of the products (as FedIT, §3); the
gap ``‖Σ p_k ΔW_k − B̄ Ā_eff‖ / ‖Σ p_k ΔW_k‖`` is logged per module (``dev_rel/<module>``,
``dev_rel_mean``).

Local rank self-pruning (§3.2), on with ``hetlora.prune-gamma > 0`` (:mod:`strategies.hetlora_pruning`):
the train and evaluate instructions carry the rule (``contract.rank_pruning``), each client penalises and
watches the tail of its adapter and may reply at a smaller rank (``client.rank_pruning``); the server
accepts a reply's rank only in ``[min(floor, r_k), r_k]`` (else the reply is dropped, rule ``adapter-rank``),
records it once the reply is accepted, and from then on sends that node its first ``r_k'`` components.
``rank_mean`` (over the census) and ``rank_pruned`` (nodes that pruned this round) are logged per round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from contract import DEV_REL_MEAN, DEV_REL_PREFIX

from .comm_cost import CommCost, CommInputs
from .hetlora_pruning import RANK_MEAN, RANK_PRUNED, HetLoRAConfig, pruning_problems, prune_rule, prunes
from .maths.mixed_rank import hetlora_aggregate, sparsity_weights
from .own_rank_factors import OwnRankFactors
from .registry import StrategyInfo, register_strategy
from .validation import accepted_replies


def hetlora_comm(inputs: CommInputs, *, client_ranks: Sequence[int] | None = None) -> CommCost:
    """``r·Σ(m+n)`` each way at the client's own rank ``r`` (``docs/communication.md §9``); with
    self-pruning (``hetlora.prune-gamma``) ``r`` is the client's rank of that round, which only shrinks."""
    return CommCost(inputs.lora_factors, inputs.lora_factors, 0)


@register_strategy(StrategyInfo(
    name="hetlora",
    summary="zero-padded, norm-weighted mean of mixed-rank factors, truncated to each client's rank (HetLoRA); not exact",
    exact=False,
    adapter_kinds=("lora",),
    comm=hetlora_comm,
    docs="docs/algorithms.md §19; arXiv:2401.06432",
    mixed_ranks=True,
    section=HetLoRAConfig,
    config_problems=pruning_problems,
    rank_census=prunes,
))
class HetLoRA(OwnRankFactors):
    """HetLoRA (arXiv 2401.06432 §3): zero-pad to ``R``, sparsity-weighted mean, truncate per client."""

    name = "hetlora"

    def __init__(self, *, section: HetLoRAConfig | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prune = prune_rule(section or HetLoRAConfig())
        if self.prune is not None:
            if self.mixed is None:
                raise ValueError("hetlora.prune-gamma > 0 needs the per-node rank census (client_ranks=); "
                                 "the ServerApp builds it (server.app.client_ranks)")
            self.mixed.prune_floor = self.prune.min_rank

    def _with_rule(self, config: ConfigRecord) -> ConfigRecord:
        """The instruction config plus the pruning rule, when pruning is on."""
        return config if self.prune is None else ConfigRecord({**dict(config), **self.prune.to_config()})

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedIT's, with the pruning rule in every instruction."""
        return super().configure_train(server_round, arrays, self._with_rule(config), grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's, with the pruning rule (a node evaluates at its own, possibly pruned, rank)."""
        return super().configure_evaluate(server_round, arrays, self._with_rule(config), grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedIT's; then the accepted replies' smaller ranks are recorded and ``rank_mean``/``rank_pruned`` logged."""
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if self.mixed is not None and metrics is not None:
            if self.prune is not None:
                metrics[RANK_PRUNED] = self.mixed.note_pruned(accepted_replies(replies, self.last_dropped))
            metrics[RANK_MEAN] = self.mixed.ranks.mean()
        return arrays, metrics

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
