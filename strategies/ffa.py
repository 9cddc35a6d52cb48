"""FFA-LoRA: federated LoRA with A frozen and shared, so averaging B is exact.

Sun et al., "Improving LoRA in Privacy-preserving Federated Learning", arXiv 2403.12313, §3:
with every client's ``A`` identical and frozen, ``Σ p_i s·B_i A == s·(Σ p_i B_i) A``, so FedAvg of
``B`` (and a trained head) is the mean of the clients' models. The server's A is authoritative: it
is sent once to each node with its hash (:mod:`strategies.frozen_factors`), and nodes verify the
hash every round. Upload and download are ``r·Σ m`` (+ head) per round (algorithms.md §5).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from .fedit import FedIT
from .frozen_factors import FrozenFactorsDistribution
from .registry import register_strategy


class FrozenFactorsStrategy(FedIT):
    """FedIT's validated weighted mean of the payload, plus one-time frozen-factor distribution.

    The payload of these adapter kinds holds only the trainable tensors (FFA: B; LoRA-SB: R), and
    the weighted mean of those is the exact aggregate because the frozen factors are shared.
    """

    def __init__(
        self, *, frozen_factors: Mapping[str, np.ndarray], frozen_hash: str, layout: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(layout=None, **kwargs)  # the LoRA A/B deviation does not apply
        self.frozen = FrozenFactorsDistribution(frozen_factors, frozen_hash)

    def _construct_messages(self, record: RecordDict, node_ids: list[int], message_type: str) -> Iterable[Message]:
        return self.frozen.messages(record, node_ids, message_type)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Note which nodes confirmed the frozen factors, then aggregate as FedIT."""
        replies = list(replies)
        self.frozen.note_replies(replies)
        return super().aggregate_train(server_round, replies)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Note confirmations, then reduce as FedIT."""
        replies = list(replies)
        self.frozen.note_replies(replies)
        return super().aggregate_evaluate(server_round, replies)


@register_strategy("ffa")
class FFALoRA(FrozenFactorsStrategy):
    """FFA-LoRA (arXiv 2403.12313): FedAvg of B (and the head) over a frozen, shared A."""
