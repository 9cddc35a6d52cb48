"""What HetLoRA and FlexLoRA share: a global LoRA adapter at the largest rank, each node sent its leading
components at its own rank, and a new global adapter rebuilt from the clients' factors each round.

:class:`OwnRankFactors` is FedIT with per-node payloads (``strategies.mixed_ranks``) and one hook,
:meth:`OwnRankFactors.module_aggregate`: from the clients' factors of one module (ranks may differ),
the new global ``B: (m, R)`` and ``A_eff: (R, n)`` in effective units (the adapter adds ``B A_eff``),
plus that module's metrics. With one rank for all clients it runs the same maths at that rank
(``docs/algorithms.md §19``, ``§20``). A component no client filled (``B`` column and ``A`` row both
zero: no client of that rank took part, or ``ΔW̄`` has lower rank) gets a fresh Kaiming ``A`` row from
``(seed, round)``, so it adds nothing and can train again (with both zero its gradients would be zero).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Message, RecordDict

from .client_ranks import ClientRanks
from .factor_forms import PAIR
from .fedit import FedIT
from .flora import kaiming_uniform_a
from .layout import LoraPair
from .maths.averaging import weighted_mean
from .mixed_ranks import MixedRanks
from .validation import Expected


class OwnRankFactors(FedIT):
    """FedIT whose global adapter is rebuilt per module by :meth:`module_aggregate` (module doc)."""

    name = "own-rank"

    def __init__(
        self, *, layout: Mapping[str, LoraPair] | None = None, client_ranks: ClientRanks | None = None, **kwargs: Any
    ) -> None:
        if not layout:
            raise ValueError(
                f"strategy.name = {self.name} needs the adapter layout (which payload arrays are each module's A and B); "
                "got none. Use adapter.name = lora (or auto)"
            )
        others = sorted({pair.form for pair in layout.values()} - {PAIR.name})
        if others:
            raise ValueError(f"strategy.name = {self.name} works on LoRA pairs B·A; the layout has modules of form "
                             f"{others}. Use adapter.name = lora (or auto)")
        super().__init__(layout=layout, **kwargs)
        self.mixed = MixedRanks(client_ranks, layout, strategy=self.name) if client_ranks is not None else None
        self._metrics: dict[str, float] = {}

    # --- what a subclass decides ----------------------------------------------------------------
    def module_aggregate(
        self, a_list: Sequence[np.ndarray], b_list: Sequence[np.ndarray], weights: np.ndarray,
        scales: Sequence[float], rank: int,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """``(B: (m, R), A_eff: (R, n), metrics)`` of one module from the clients' ``A_i: (r_i, n)``, ``B_i: (m, r_i)``."""
        raise NotImplementedError

    def round_metrics(self, per_module: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        """The round's metrics from every module's (default: the mean of each over the modules)."""
        names = sorted({name for values in per_module.values() for name in values})
        return {name: float(np.mean([v[name] for v in per_module.values() if name in v])) for name in names}

    # --- FedIT hooks ----------------------------------------------------------------------------
    def scale_of(self, rank: int) -> float:
        """The LoRA scale of a rank-``rank`` adapter (one rank for all: the layout's)."""
        if self.mixed is not None:
            return self.mixed.scale(rank)
        assert self.layout is not None
        return next(iter(self.layout.values())).scale

    def aggregate_arrays(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The head's weighted mean, and every module's :meth:`module_aggregate` at the global rank."""
        assert self.layout is not None and self.global_arrays is not None
        factors = {k for pair in self.layout.values() for k in (pair.a_key, pair.b_key)}
        heads = [{k: v for k, v in arrays.items() if k not in factors} for arrays in arrays_list]
        merged = weighted_mean(heads, weights) if heads[0] else {}
        per_module: dict[str, dict[str, float]] = {}
        rng = np.random.default_rng([self.seed, server_round])
        for module, pair in self.layout.items():
            a_list = [arrays[pair.a_key] for arrays in arrays_list]  # A_i: (r_i, n)
            b_list = [arrays[pair.b_key] for arrays in arrays_list]  # B_i: (m, r_i)
            big = int(self.global_arrays[pair.a_key].shape[0])  # R
            scales = [self.scale_of(a.shape[0]) for a in a_list]
            b, a_eff, metrics = self.module_aggregate(a_list, b_list, weights, scales, big)
            a = a_eff / self.scale_of(big)  # (R, n): s_R B A = B A_eff
            dead = ~np.any(b != 0, axis=0) & ~np.any(a != 0, axis=1)  # (R,): components no client filled this round
            if dead.any():  # B = 0 and A = 0 would never train again: a fresh A row adds nothing and can
                a[dead] = kaiming_uniform_a((int(dead.sum()), a.shape[1]), rng)
            merged[pair.b_key] = b.astype(np.float32)  # (m, R)
            merged[pair.a_key] = a.astype(np.float32)  # (R, n)
            per_module[module] = metrics
        self._metrics = self.round_metrics(per_module)
        return merged

    def train_diagnostics(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, float]:
        """The metrics :meth:`module_aggregate` reported, reduced by :meth:`round_metrics`."""
        return dict(self._metrics)

    def expected_for(self, reply: Message) -> Expected:
        """With mixed ranks: the factors at the sender's rank."""
        expected = super().expected_for(reply)
        return expected if self.mixed is None else self.mixed.expected_for(expected, reply)

    def _construct_messages(self, record: RecordDict, node_ids: list[int], message_type: str) -> Iterable[Message]:
        """With mixed ranks one message per node at its rank; otherwise FedAvg's."""
        if self.mixed is None:
            return super()._construct_messages(record, node_ids, message_type)
        return self.mixed.messages(record, node_ids, message_type)
