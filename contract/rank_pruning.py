"""HetLoRA's local rank self-pruning: the rule the server sends and the client applies (``docs/algorithms.md §19``).

Cho et al., "Heterogeneous LoRA for Federated Fine-tuning of On-Device Foundation Models", arXiv
2401.06432, §3.2 ("local rank self-pruning"). A client of rank ``r`` watches the *tail* of its adapter,
its last ``⌈γ r⌉`` components (never cutting below the floor ``min-rank``):

    tail(r) = Σ_modules ‖B[:, k:]‖_F · ‖A[k:]‖_F,      k = kept_rank(r)        # B: (m, r), A: (r, n)

During local training it adds ``λ·tail(r)`` to its loss (pushing the tail towards zero); after
training, if ``tail(r)`` is smaller than it was after its previous round at the same rank, it keeps
only its first ``k`` components from then on (its reply already carries rank ``k``).

The rule travels in the server's train and evaluate instructions (``CONFIG`` record) under the keys
below, so the ClientApp needs no strategy code; plain data and integer maths, no Flower.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

PRUNE_GAMMA = "rank-prune-gamma"
"""Instruction key: the fraction ``γ`` of a client's rank it may cut in one step (``0 < γ < 1``)."""

PRUNE_LAMBDA = "rank-prune-lambda"
"""Instruction key: the regulariser's weight ``λ >= 0`` on the tail norm."""

PRUNE_MIN_RANK = "rank-prune-min-rank"
"""Instruction key: the floor no client prunes below."""


def prune_step(rank: int, gamma: float) -> int:
    """``⌈γ r⌉``: how many trailing components one pruning step removes (``γ = 0``: none).

    ``γ r`` is rounded to 9 decimals first, so ``0.3 · 10`` (``3.0000000000000004`` in floats) is 3.
    """
    if rank < 1 or not 0.0 <= gamma < 1.0:
        raise ValueError(f"need rank >= 1 and 0 <= gamma < 1, got rank {rank}, gamma {gamma}")
    return math.ceil(round(gamma * rank, 9))


def kept_rank(rank: int, gamma: float, floor: int) -> int:
    """The rank a rank-``rank`` client prunes to: ``max(r − ⌈γ r⌉, floor)``, and never above ``rank``."""
    if floor < 1:
        raise ValueError(f"the pruning floor must be >= 1, got {floor}")
    return min(rank, max(rank - prune_step(rank, gamma), floor))


@dataclass(frozen=True)
class PruneRule:
    """``γ``, ``λ`` and the floor of one run's self-pruning (``hetlora.prune-*``)."""

    gamma: float
    lam: float
    min_rank: int

    def __post_init__(self) -> None:
        """Refuse values no client can apply, naming the key."""
        if not (isinstance(self.gamma, float) and 0.0 < self.gamma < 1.0):
            raise ValueError(f"`{PRUNE_GAMMA}` must be a number in (0, 1), got {self.gamma!r}")
        if not (isinstance(self.lam, float) and math.isfinite(self.lam) and self.lam >= 0.0):
            raise ValueError(f"`{PRUNE_LAMBDA}` must be a finite number >= 0, got {self.lam!r}")
        if isinstance(self.min_rank, bool) or not isinstance(self.min_rank, int) or self.min_rank < 1:
            raise ValueError(f"`{PRUNE_MIN_RANK}` must be an integer >= 1, got {self.min_rank!r}")

    def kept(self, rank: int) -> int:
        """:func:`kept_rank` under this rule."""
        return kept_rank(rank, self.gamma, self.min_rank)

    def floor(self, rank: int) -> int:
        """The smallest rank a node at ``rank`` may ever reach: ``min(min-rank, rank)``."""
        return min(self.min_rank, rank)

    def to_config(self) -> dict[str, float | int]:
        """The instruction's ``CONFIG`` entries."""
        return {PRUNE_GAMMA: self.gamma, PRUNE_LAMBDA: self.lam, PRUNE_MIN_RANK: self.min_rank}

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> PruneRule | None:
        """The rule an instruction carries (``None``: no pruning key in it).

        Raises
        ------
        ValueError
            Only some of the keys present, or a value of the wrong type or range.
        """
        keys = (PRUNE_GAMMA, PRUNE_LAMBDA, PRUNE_MIN_RANK)
        present = [k for k in keys if k in config]
        if not present:
            return None
        if len(present) != len(keys):
            raise ValueError(f"the instruction carries {present} but not all of {list(keys)}; "
                             "run the ServerApp and the ClientApp from the same Corolla version")
        gamma, lam, min_rank = (config[k] for k in keys)
        if isinstance(gamma, int) and not isinstance(gamma, bool):
            gamma = float(gamma)
        if isinstance(lam, int) and not isinstance(lam, bool):
            lam = float(lam)
        return cls(gamma=gamma, lam=lam, min_rank=min_rank)  # type: ignore[arg-type]  # __post_init__ checks the types
