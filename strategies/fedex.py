"""FedEx-LoRA: exact federated LoRA by folding the averaging residual into the frozen base.

Singhal et al., "FedEx-LoRA: Exact Aggregation for Federated and Efficient Fine-Tuning of
Foundation Models", arXiv 2410.09432 (ACL 2025), §3. Per module, the next adapter is FedIT's
``(B̄, Ā)`` and the base moves by ``s·ΔW_res = s·(Σ p_i B_i A_i − B̄ Ā)``, so that
``W0' + s·B̄ Ā == W0 + s·Σ p_i B_i A_i`` exactly (``docs/algorithms.md §4``). The residual of each
module comes from its layout form (:mod:`strategies.factor_forms`): LoRA's pivot form, or ABBA's
Hadamard residual (``docs/algorithms.md §10.3``).

With partial participation the base carries a version; :class:`~strategies.base_versioning.BaseVersioning`
keeps the folded residuals and brings every node's base up to date (``docs/algorithms.md §5``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from contract import DEV_REL_MEAN, DEV_REL_PREFIX

from .base_folding import BaseFoldingFedIT
from .client_ranks import ClientRanks
from .comm_cost import CommCost, CommInputs
from .layout import LoraPair
from .flora import kaiming_uniform_a
from .maths.averaging import weighted_mean
from .maths.mixed_rank import fedex_mixed
from .maths.transport import ResidualTransport
from .registry import StrategyInfo, register_strategy

ResidualCharge = Literal["pivot", "centred", "stacked", "dense"]


def fedex_comm(
    inputs: CommInputs, *, residual: ResidualCharge = "pivot", truncated_rank: int | None = None,
    client_ranks: Sequence[int] | None = None,
) -> CommCost:
    """Upload ``r·Σ(m+n)``; download the factor means plus each module's residual, dense or
    factored whichever is smaller: ``r·Σ(m+n) + Σ min(m·n, c·(m+n))`` (``docs/communication.md §3``).

    ``c`` is ``(K−1)·r`` for the pivot form Corolla sends, ``K·r`` centred, ``(K+1)·r`` stacked;
    ``"dense"`` always charges ``m·n``; ``truncated_rank = r'`` prices an (inexact) rank-``r'``
    residual, ``c = r'``. ``client_ranks`` (the round's ranks ``r_i``, mixed; ``inputs.rank`` is this
    client's) charges the mixed-rank residual's ``c = Σ r_i + r_min`` (``docs/algorithms.md §18.3``).
    """
    r, k = inputs.rank, inputs.clients
    if client_ranks is not None and len(set(client_ranks)) > 1:
        columns: int | None = sum(client_ranks) + min(client_ranks)
    elif truncated_rank is not None:
        columns = truncated_rank
    elif residual == "dense":
        columns = None
    else:
        by_form = {"pivot": (k - 1) * r, "centred": k * r, "stacked": (k + 1) * r}
        if residual not in by_form:
            raise ValueError(f"residual must be one of pivot, centred, stacked, dense; got {residual!r}")
        columns = by_form[residual]
    res = sum(m * n if columns is None else min(m * n, columns * (m + n)) for m, n in inputs.shapes)
    return CommCost(inputs.lora_factors, inputs.lora_factors + res, 0)


@register_strategy(StrategyInfo(
    name="fedex",
    summary="FedIT's factor means plus the averaging residual folded into the frozen base (FedEx-LoRA); exact",
    exact=True,
    adapter_kinds=("lora", "abba"),
    comm=fedex_comm,
    docs="docs/algorithms.md §4, §5, §10.3, §18.3; arXiv:2410.09432",
    mixed_ranks=True,  # exact: the residual is taken over each client's own product
    # train.lr = auto: at 0.02 on the default set-up FedEx-LoRA falls back in round 3 (0.637) while
    # 0.005 reaches 0.950, FLoRA's accuracy at the same exact global model (docs/algorithms.md §17)
    learning_rate=0.005,
))
class FedExLoRA(BaseFoldingFedIT):
    """FedEx-LoRA (arXiv 2410.09432): FedIT's factor means plus the residual folded into the base.

    Requires a ``layout`` (which payload keys are each module's factors, their form and scale).
    Everything else is FedIT's: sampling, reply validation, metric reduction and the deviation
    metrics (which here report how much each round's residual corrects).
    """

    name = "fedex"

    def __init__(
        self, *, layout: Mapping[str, LoraPair] | None = None, client_ranks: ClientRanks | None = None, **kwargs: Any
    ) -> None:
        if not layout:
            raise ValueError(
                "strategy.name = fedex needs the adapter layout (which payload arrays are each module's "
                "factors); got none. Use adapter.name = lora or abba (or auto)"
            )
        super().__init__(layout=layout, client_ranks=client_ranks, **kwargs)
        self._mixed_dev: dict[str, float] = {}

    def aggregate_arrays(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Factor means (and head) as FedIT; fold this round's exact residual as the next base version."""
        assert self.layout is not None
        if self.mixed is not None:
            return self._aggregate_mixed(server_round, arrays_list, weights)
        merged = weighted_mean(arrays_list, weights)
        residuals: dict[str, ResidualTransport] = {
            module: pair.factor_form.exact_residual(arrays_list, weights, pair)  # (m, n)
            for module, pair in self.layout.items()
        }
        self.versions.fold(residuals)
        return merged

    def _aggregate_mixed(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Mixed ranks (``docs/algorithms.md §18.3``): the next adapter holds the mean of the leading ``r_min``
        components every client has; everything else of ``Σ p_i ΔW_i`` is folded into the base, exactly.

        The global adapter has rank ``R`` (the largest): ``B = [B̄, 0]``, ``A = [Ā_eff / s_R; fresh]`` with
        fresh Kaiming rows (from ``(seed, round)``) over the zero columns, so a rank-``r`` node's first ``r``
        components add exactly ``B̄ Ā_eff`` and the rest can train.
        """
        assert self.mixed is not None and self.layout is not None and self.global_arrays is not None
        mixed = self.mixed
        merged = mixed.head_mean(arrays_list, weights)
        scales = mixed.client_scales(arrays_list)
        r_min = mixed.ranks.r_min
        rng = np.random.default_rng([self.seed, server_round])
        residuals: dict[str, ResidualTransport] = {}
        self._mixed_dev = {}
        for module, pair in self.layout.items():
            agg = fedex_mixed(
                [a[pair.a_key] for a in arrays_list], [a[pair.b_key] for a in arrays_list], weights, scales, r_min
            )  # b_bar: (m, r_min), a_eff: (r_min, n)
            big, n = self.global_arrays[pair.a_key].shape
            a = np.empty((big, n), dtype=np.float32)  # (R, n)
            a[:r_min] = agg.a_eff / mixed.scale(big)
            a[r_min:] = kaiming_uniform_a((big - r_min, n), rng)
            b = np.zeros((agg.b_bar.shape[0], big), dtype=np.float32)  # (m, R)
            b[:, :r_min] = agg.b_bar
            merged[pair.a_key], merged[pair.b_key] = a, b
            residuals[module] = agg.residual
            self._mixed_dev[module] = agg.rel
        self.versions.fold(residuals)
        return merged

    def train_diagnostics(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, float]:
        """FedIT's deviation; with mixed ranks the residual's share of the mean update, ``‖res‖ / ‖Σ p_i ΔW_i‖``."""
        if self.mixed is None:
            return super().train_diagnostics(server_round, arrays_list, weights)
        if not self._mixed_dev:
            return {}
        out = {f"{DEV_REL_PREFIX}{module}": value for module, value in self._mixed_dev.items()}
        out[DEV_REL_MEAN] = float(np.mean(list(self._mixed_dev.values())))
        return out
