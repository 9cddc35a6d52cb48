"""HetLoRA's ``hetlora.*`` config section and the server's view of its rank self-pruning.

Cho et al., arXiv 2401.06432, §3.2 ("local rank self-pruning"); the rule itself is in
``contract.rank_pruning``, the client's side in ``client.rank_pruning``, the choices the paper leaves
open in ``docs/algorithms.md §19``. Off by default (``prune-gamma = 0``): every client keeps its rank.
"""

from __future__ import annotations

from pydantic import Field

from contract.config import RunConfig, Section
from contract.rank_pruning import PruneRule

RANK_MEAN = "rank_mean"
"""Train row metric (HetLoRA): the mean rank over the nodes of the census after the round."""

RANK_PRUNED = "rank_pruned"
"""Train row metric (HetLoRA with self-pruning): how many nodes pruned their rank this round."""


class HetLoRAConfig(Section):
    """``hetlora.*``: HetLoRA's local rank self-pruning (arXiv 2401.06432 §3.2; docs/algorithms.md §19)."""

    prune_gamma: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="rank self-pruning: the fraction γ of a client's rank r it may cut in one step (its last ⌈γ·r⌉ "
        "components); 0 = off, every client keeps its rank",
    )
    prune_lambda: float = Field(
        0.01, ge=0.0, le=1e6,
        description="weight λ of the regulariser λ·Σ‖B_tail‖_F·‖A_tail‖_F added to the local loss while pruning is on "
        "(0: the tail is watched but not penalised)",
    )
    min_rank: int = Field(
        1, ge=1, le=4096, description="rank self-pruning never takes a client below this rank",
    )


def prune_rule(section: HetLoRAConfig) -> PruneRule | None:
    """The run's :class:`PruneRule` (``None``: pruning is off)."""
    if section.prune_gamma == 0.0:
        return None
    return PruneRule(gamma=section.prune_gamma, lam=section.prune_lambda, min_rank=section.min_rank)


def _section(config: RunConfig) -> HetLoRAConfig:
    try:
        return config.section(HetLoRAConfig)
    except LookupError:  # parsed before strategies.hetlora registered the section: the defaults
        return HetLoRAConfig()


def prunes(config: RunConfig) -> bool:
    """Whether the run prunes (its nodes' ranks may come to differ: the server keeps a rank census)."""
    return _section(config).prune_gamma > 0.0


def pruning_problems(config: RunConfig) -> list[str]:
    """Combinations the ``hetlora.*`` keys cannot run with, one line each."""
    section = _section(config)
    if section.prune_gamma == 0.0:
        return []
    problems = []
    ranks = config.adapter.rank_list() or (config.adapter.rank,)
    if section.min_rank >= max(ranks):
        problems.append(
            f"`hetlora.min-rank` = {section.min_rank} is not below any client's rank (largest: {max(ranks)}), so "
            f"`hetlora.prune-gamma` = {section.prune_gamma} would never prune; lower hetlora.min-rank or set prune-gamma = 0"
        )
    if section.prune_lambda > 0.0 and config.privacy.enabled:
        problems.append(
            f"`hetlora.prune-lambda` = {section.prune_lambda} adds a regulariser whose gradient is not per-example, which "
            "DP-SGD cannot clip (privacy.enabled = true); set hetlora.prune-lambda = 0 (the tail is then watched "
            "without the penalty) or turn privacy off"
        )
    return problems
