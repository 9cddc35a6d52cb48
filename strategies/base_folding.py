"""What FedEx-LoRA and FLoRA share: FedIT whose every round folds an exact update into a versioned base.

Both strategies change the frozen base each round (FedEx-LoRA its residual, ``docs/algorithms.md §4``;
FLoRA the stacked product, ``§6``) and both accept clients of different ranks (``§18``).
:class:`BaseFoldingFedIT` composes :class:`~strategies.base_versioning.BaseVersioning` (``§5``) and, with
``adapter.ranks``, :class:`~strategies.mixed_ranks.MixedRanks`: messages carry each node's base delta
(and its adapter at its own rank), replies note the base version their node holds, checkpoints keep the
versioned log. A subclass writes :meth:`aggregate_arrays` and calls ``self.versions.fold`` there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from contract import ARRAYS

from .base_versioning import BaseVersioning
from .client_ranks import ClientRanks
from .fedit import FedIT
from .layout import LoraPair
from .mixed_ranks import MixedRanks
from .protocol import StrategyState
from .validation import Expected


class BaseFoldingFedIT(FedIT):
    """FedIT plus a versioned base and optional per-node ranks (module doc)."""

    name = "base-folding"  # each subclass names itself (its registry name, used in error messages)

    def __init__(
        self, *, layout: Mapping[str, LoraPair], client_ranks: ClientRanks | None = None, **kwargs: Any
    ) -> None:
        super().__init__(layout=layout, **kwargs)
        self.versions = BaseVersioning()
        self.mixed = MixedRanks(client_ranks, layout, strategy=self.name) if client_ranks is not None else None

    def expected_for(self, reply: Message) -> Expected:
        """With mixed ranks: the factors at the sender's rank (``docs/algorithms.md §18``)."""
        expected = super().expected_for(reply)
        return expected if self.mixed is None else self.mixed.expected_for(expected, reply)

    def base_deltas(self) -> dict[str, np.ndarray]:
        """The cumulative base delta per module, ``(m, n)`` float32 (empty before round 1)."""
        return self.versions.base_deltas()

    def export_state(self) -> StrategyState:
        """The versioned log of folded updates (:meth:`BaseVersioning.export_state`)."""
        return self.versions.export_state()

    def restore_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Inverse of :meth:`export_state`."""
        self.versions.restore_state(arrays, meta)

    def _construct_messages(self, record: RecordDict, node_ids: list[int], message_type: str) -> Iterable[Message]:
        """One message per node, each with the base delta from the version that node holds (and, with
        mixed ranks, its adapter at its own rank)."""
        if self.mixed is None:
            return self.versions.messages(record, node_ids, message_type)
        mixed, arrays = self.mixed, record.array_records[ARRAYS]
        return self.versions.messages(record, mixed.known(node_ids), message_type, lambda node: mixed.payload(arrays, node))

    def resync(self, message: Message) -> Message:
        """Resend the cumulative base delta from version 0 to a node that lost its base (a restart)."""
        return self.versions.resync(message)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate as FedIT, then note the base version each accepted reply reports."""
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        self.versions.note_replies(replies, self.last_dropped)
        return arrays, self.versions.stamp(metrics)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Reduce evaluate metrics as FedIT, then note the accepted replies' base versions."""
        replies = list(replies)
        metrics = super().aggregate_evaluate(server_round, replies)
        self.versions.note_replies(replies, self.last_dropped_evaluate)
        return metrics

    def check_protocol(self, metrics: MetricRecord) -> None:
        """Refuse a base version above the server's (:meth:`BaseVersioning.check_reported`)."""
        self.versions.check_reported(metrics)
