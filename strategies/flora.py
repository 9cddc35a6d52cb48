"""FLoRA: exact federated LoRA by stacking, merging into the base, and re-initialising.

Wang et al., "FLoRA: Federated Fine-Tuning Large Language Models with Heterogeneous Low-Rank
Adaptations", arXiv 2409.05976, §3. The round's update ``Σ p_i s·B_i A_i`` is sent as the stacked
factors ``[B_1 … B_K] · [p_1 s A_1; …; p_K s A_K]`` (exact; K·r columns) and merged into every
client's frozen base; the adapter then starts afresh (A Kaiming-uniform, B = 0), so the next
round's clients again learn only their own update.

The merge uses the versioned base-delta protocol of :class:`~strategies.fedex.FedExLoRA` (a node
that missed rounds receives the sum of what it missed). The fresh A is drawn on the server from
``(seed, round)`` and sent with the payload, so every client starts from the same adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import numpy as np

from .aggregation import weighted_mean
from .exact.flora import flora_stack
from .exact.transport import ResidualTransport
from .fedex import FedExLoRA
from .registry import register_strategy


def kaiming_uniform_a(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """PEFT's LoRA A init: ``kaiming_uniform_(a=√5)``, i.e. ``U(−1/√n, 1/√n)`` for ``A: (r, n)``."""
    bound = 1.0 / np.sqrt(shape[1])
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


@register_strategy("flora")
class FLoRA(FedExLoRA):
    """FLoRA (arXiv 2409.05976): stack client factors, fold the product into the base, re-initialise."""

    def aggregate_arrays(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Fold ``Σ p_i s B_i A_i`` into the base; return fresh LoRA factors and the mean head."""
        assert self.layout is not None
        merged = weighted_mean(arrays_list, weights)  # the head (and, overwritten below, A and B)
        rng = np.random.default_rng([self.seed, server_round])
        round_deltas: dict[str, ResidualTransport] = {}
        for module, pair in self.layout.items():
            b_stack, a_stack = flora_stack(
                [a[pair.a_key] for a in arrays_list],  # A_i: (r, n)
                [a[pair.b_key] for a in arrays_list],  # B_i: (m, r)
                weights,
                pair.scale,
            )  # B_stack: (m, K r), A_stack: (K r, n) with p_i s folded in
            delta = ResidualTransport.from_factors(b_stack, a_stack)
            round_deltas[module] = delta
            a_shape = merged[pair.a_key].shape
            merged[pair.a_key] = kaiming_uniform_a(a_shape, rng)  # fresh A: (r, n)
            merged[pair.b_key] = np.zeros_like(merged[pair.b_key])  # B = 0: the adapter adds nothing yet
        self.fold(server_round, round_deltas)
        return merged
