"""FedSA-LoRA: only ``A`` is shared and averaged; every client keeps its own ``B``.

Guo et al., "Selective Aggregation for Low-Rank Adaptation in Federated Learning", arXiv 2410.01463,
§3-§4: the ``A`` matrices learn what clients have in common and the ``B`` matrices what is specific
to each, so the server averages ``A`` (and any trained head) and ``B`` never leaves the client. Each
client's ``B`` lives in its ``Context.state`` between rounds (``client.factor_roles``), so the model
a client trains and is scored with is its personalised ``W0 + s·B_i Ā`` (``docs/algorithms.md §14``).

The server's global adapter is ``Ā`` with ``B = 0`` (the adapter then adds nothing; what remains is
any shared head): the central evaluation and the export report that *global* model, and federated
evaluation (``fraction-evaluate > 0``) reports the *personalised* score ``eval_personal_<metric>``,
each client's ``Ā`` + own ``B`` on its own test shard, example-weighted over the clients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from logging import WARNING
from typing import Any

import numpy as np
from flwr.common import log

from .comm_cost import CommCost, CommInputs
from .partial_factors import PartialFactorsStrategy, RoundRoles
from .registry import StrategyInfo, register_strategy


def fedsa_comm(inputs: CommInputs) -> CommCost:
    """``r·Σn`` each way: only the ``A``'s travel (``docs/communication.md §7``)."""
    a_only = inputs.rank * inputs.sum_n
    return CommCost(a_only, a_only, 0)


@register_strategy(StrategyInfo(
    name="fedsa",
    summary="FedAvg of A only; each client keeps its own B, personalised (FedSA-LoRA); not exact",
    exact=False,  # there is no single global model: each client's model has its own B
    adapter_kinds=("lora",),
    comm=fedsa_comm,
    docs="docs/algorithms.md §14; arXiv:2410.01463",
))
class FedSALoRA(PartialFactorsStrategy):
    """FedSA-LoRA (arXiv 2410.01463): average ``A`` and the head; ``B`` stays on every client."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.fraction_evaluate == 0:
            log(WARNING, "strategy.name = fedsa with fraction-evaluate = 0: only the global score (A with B = 0) "
                "is reported; set fraction-evaluate > 0 for the personalised score (each client's own B)")

    def round_roles(self, server_round: int) -> RoundRoles:
        """Every round: ``B`` is local."""
        return RoundRoles(local=(self.b_layer,))

    def refactor(self, server_round: int, new: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The global adapter holds ``B = 0``: the global model is ``Ā`` with no client's ``B``."""
        for pair in self.factor_layout.values():
            new[pair.b_key] = np.zeros_like(new[pair.b_key])
        return new

    def train_diagnostics(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, float]:
        """None (FedIT's deviation needs the ``B``'s, which the server never sees)."""
        return {}
