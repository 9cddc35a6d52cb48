"""FLoRA: exact federated LoRA by stacking, merging into the base, and re-initialising.

Wang et al., "FLoRA: Federated Fine-Tuning Large Language Models with Heterogeneous Low-Rank
Adaptations", arXiv 2409.05976, §3. The round's update ``Σ p_i s·B_i A_i`` is sent as the stacked
factors ``[B_1 … B_K] · [p_1 s A_1; …; p_K s A_K]`` (exact; K·r columns) and merged into every
client's frozen base; the adapter then starts afresh (A Kaiming-uniform, B = 0), so the next
round's clients again learn only their own update (``docs/algorithms.md §6``).

The merge goes through the versioned base of :class:`~strategies.base_versioning.BaseVersioning`
(a node that missed rounds receives what it missed, ``docs/algorithms.md §5``). The fresh A is drawn
on the server from ``(seed, round)`` and sent with the payload, so every client starts from the same
adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .base_folding import BaseFoldingFedIT
from .client_ranks import ClientRanks
from .comm_cost import CommCost, CommInputs
from .factor_forms import PAIR
from .layout import LoraPair
from .maths.averaging import weighted_mean
from .maths.stacking import flora_stack
from .maths.transport import ResidualTransport
from .registry import StrategyInfo, register_strategy


def flora_comm(inputs: CommInputs, *, client_ranks: Sequence[int] | None = None) -> CommCost:
    """Upload ``r·Σ(m+n)``; download every stacked client's factors, ``(Σ_i r_i)·Σ(m+n)``
    (``K·r·Σ(m+n)`` when all share ``r``; ``docs/communication.md §2``)."""
    ranks = list(client_ranks) if client_ranks is not None else [inputs.rank] * inputs.clients
    return CommCost(inputs.lora_factors, sum(ranks) * (inputs.sum_m + inputs.sum_n), 0)


def kaiming_uniform_a(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """PEFT's LoRA A init: ``kaiming_uniform_(a=√5)``, i.e. ``U(−1/√n, 1/√n)`` for ``A: (r, n)``."""
    bound = 1.0 / np.sqrt(shape[1])
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


@register_strategy(StrategyInfo(
    name="flora",
    summary="stacked client factors merged into the frozen base, then a fresh adapter (FLoRA); exact",
    exact=True,
    adapter_kinds=("lora",),
    comm=flora_comm,
    docs="docs/algorithms.md §5, §6, §18.2; arXiv:2409.05976",
    mixed_ranks=True,  # stacking is exact for any ranks (FLoRA's headline)
))
class FLoRA(BaseFoldingFedIT):
    """FLoRA (arXiv 2409.05976): stack client factors, fold the product into the base, re-initialise.

    Requires a ``layout`` whose modules are all LoRA pairs (``B A``): stacking is defined for them.
    """

    name = "flora"

    def __init__(
        self, *, layout: Mapping[str, LoraPair] | None = None, client_ranks: ClientRanks | None = None, **kwargs: Any
    ) -> None:
        if not layout:
            raise ValueError(
                "strategy.name = flora needs the adapter layout (which payload arrays are each module's "
                "A and B); got none. Use adapter.name = lora (or auto)"
            )
        others = sorted({pair.form for pair in layout.values()} - {PAIR.name})
        if others:
            raise ValueError(
                f"strategy.name = flora stacks LoRA pairs B·A; the layout has modules of form {others}. "
                "Use adapter.name = lora (or auto), or strategy.name = fedex for those adapters"
            )
        super().__init__(layout=layout, client_ranks=client_ranks, **kwargs)

    def aggregate_arrays(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Fold ``Σ p_i s B_i A_i`` into the base; return fresh LoRA factors and the mean head."""
        assert self.layout is not None
        if self.mixed is None:
            merged = weighted_mean(arrays_list, weights)  # the head (and, overwritten below, A and B)
            shapes = {key: value.shape for key, value in merged.items()}
            scales: float | list[float] = next(iter(self.layout.values())).scale
        else:  # ranks differ: only the head is averaged; each client stacks at its own scale α / r_i
            assert self.global_arrays is not None
            merged = self.mixed.head_mean(arrays_list, weights)
            shapes = {key: tuple(array.shape) for key, array in self.global_arrays.items()}  # the largest rank
            scales = self.mixed.client_scales(arrays_list)
        rng = np.random.default_rng([self.seed, server_round])
        round_deltas: dict[str, ResidualTransport] = {}
        for module, pair in self.layout.items():
            b_stack, a_stack = flora_stack(
                [a[pair.a_key] for a in arrays_list],  # A_i: (r_i, n)
                [a[pair.b_key] for a in arrays_list],  # B_i: (m, r_i)
                weights,
                scales if self.mixed is not None else pair.scale,
            )  # B_stack: (m, Σ r_i), A_stack: (Σ r_i, n) with p_i s_i folded in
            round_deltas[module] = ResidualTransport.from_factors(b_stack, a_stack)
            a_shape, b_shape = shapes[pair.a_key], shapes[pair.b_key]
            merged[pair.a_key] = kaiming_uniform_a(a_shape, rng)  # fresh A: (R, n); a rank-r node gets its first r rows
            merged[pair.b_key] = np.zeros(b_shape, dtype=np.float32)  # B = 0: the adapter adds nothing yet
        self.versions.fold(round_deltas)
        return merged

    def train_diagnostics(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, float]:
        """FedIT's deviation with one rank; none with mixed ranks (factor means of different shapes do not exist)."""
        return super().train_diagnostics(server_round, arrays_list, weights) if self.mixed is None else {}
