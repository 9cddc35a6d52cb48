"""An example strategy in one file, as the "Extending Corolla" page shows it: the coordinate-wise median.

Importing this module is all it takes to add the strategy: ``strategy.name = "median"`` then runs,
``corolla strategies`` lists it, ``corolla comm`` prices it and ``adapter.name = auto`` gives it LoRA.
``tests/strategies/test_example_strategy.py`` registers it and runs it through the ServerApp.

The rule (Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
arXiv:1803.01498, §3): every entry of every payload array is the median of the clients' values for
that entry, so a minority of outlying clients cannot drag it arbitrarily far. It is not exact (the
median of the factors is not the median, nor the mean, of the clients' updates ``s·B_i A_i``) and it
ignores the aggregation weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from strategies import FedIT, StrategyInfo, register_strategy
from strategies.comm_cost import CommCost, CommInputs


def median_comm(inputs: CommInputs) -> CommCost:
    """Each client sends its ``A`` and ``B`` and receives the medians: ``r·Σ(m+n)`` each way."""
    return CommCost(inputs.lora_factors, inputs.lora_factors, 0)


@register_strategy(StrategyInfo(
    name="median",
    summary="coordinate-wise median of every payload array (robust to outlying clients); not exact",
    exact=False,
    adapter_kinds=("lora",),
    comm=median_comm,
    docs="arXiv:1803.01498 §3",
))
class CoordinateMedian(FedIT):
    """FedIT's sampling, reply validation and metrics; the median instead of the weighted mean."""

    def aggregate_arrays(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Per key, the median over the ``K`` clients, computed in float64 and cast back."""
        out = {}
        for key, first in arrays_list[0].items():
            stacked = np.stack([np.asarray(client[key], dtype=np.float64) for client in arrays_list])  # (K, ...)
            out[key] = np.median(stacked, axis=0).astype(first.dtype)  # (...)
        return out

    def train_diagnostics(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, float]:
        """None: FedIT's ``dev_rel`` measures factor *averaging*, which this strategy does not do."""
        return {}
