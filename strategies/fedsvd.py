"""FedSVD: clients train only ``B`` over a fixed ``A``; the server re-factorises ``B̄ A`` by SVD.

Lee et al., "FedSVD: Adaptive Orthogonalization for Private Federated Learning with LoRA",
arXiv 2505.12805, §3: as in FFA-LoRA every client trains ``B`` over the same ``A``, so averaging
``B`` is exact; then the server rewrites the product ``B̄ A = U Σ Vᵀ`` as ``B' = U Σ``, ``A' = Vᵀ``
(:func:`~strategies.maths.svd_refactor.orthonormal_refactor`), and the next round's fixed ``A`` is
the orthonormal ``A'``. ``A`` thus follows the principal directions of the learnt update instead of
staying at its random initialisation, and under DP the noise enters ``B`` only and is not amplified
through a trained ``A`` (``docs/algorithms.md §16``). The re-factorisation keeps the product, so
the strategy is exact.

Per round a client is sent ``A'`` and ``B'`` and returns ``B``: ``r·Σ(m+n)`` down, ``r·Σm`` up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .comm_cost import CommCost, CommInputs
from .maths.svd_refactor import orthonormal_refactor
from .partial_factors import PartialFactorsStrategy, RoundRoles
from .registry import StrategyInfo, register_strategy

ORTHO_ERROR = "a_orthonormal_error"
"""Train metric: ``max |A' A'ᵀ − I|`` over the modules after the float32 cast of the new ``A'``."""


def fedsvd_comm(inputs: CommInputs) -> CommCost:
    """Upload ``r·Σm`` (``B``), download ``r·Σ(m+n)`` (the re-factorised ``A'`` and ``B'``;
    ``docs/communication.md §7``)."""
    return CommCost(inputs.rank * inputs.sum_m, inputs.lora_factors, 0)


@register_strategy(StrategyInfo(
    name="fedsvd",
    summary="FedAvg of B over a fixed A, then an SVD re-factorisation with an orthonormal A (FedSVD); exact",
    exact=True,
    adapter_kinds=("lora",),
    comm=fedsvd_comm,
    docs="docs/algorithms.md §16; arXiv:2505.12805",
))
class FedSVD(PartialFactorsStrategy):
    """FedSVD (arXiv 2505.12805): FedAvg of ``B`` over the round's ``A``, then ``B̄ A = (UΣ)(Vᵀ)``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ortho_error = 0.0

    def round_roles(self, server_round: int) -> RoundRoles:
        """Every round: ``A`` is fixed."""
        return RoundRoles(fixed=(self.a_layer,))

    def refactor(self, server_round: int, new: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per module, ``(B', A')`` of ``B̄ A`` with ``A'`` orthonormal rows (float32, as sent)."""
        self._ortho_error = 0.0
        for pair in self.factor_layout.values():
            b_new, a_new = orthonormal_refactor(new[pair.b_key], new[pair.a_key])  # (m, r), (r, n)
            new[pair.b_key] = b_new.astype(np.float32)
            new[pair.a_key] = a_new.astype(np.float32)
            gram = new[pair.a_key].astype(np.float64) @ new[pair.a_key].T.astype(np.float64)  # (r, r)
            self._ortho_error = max(self._ortho_error, float(np.max(np.abs(gram - np.eye(gram.shape[0])))))
        return new

    def train_diagnostics(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, float]:
        """How orthonormal the new ``A'`` is after the float32 cast (:data:`ORTHO_ERROR`)."""
        return {ORTHO_ERROR: self._ortho_error}
