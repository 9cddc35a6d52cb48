"""Strategies over frozen, shared adapter factors (FFA-LoRA's A, Fed-SB's B and A).

The payload of these adapter kinds holds only the trainable tensors (FFA: B; LoRA-SB: R), and the
weighted mean of those is the exact aggregate because every client holds the same frozen factors
(``docs/algorithms.md §7``, ``§9.1``). :class:`FrozenFactorsDistribution` sends the factors once per
node (``docs/algorithms.md §9.3``): every message carries their hash; a node that has not yet
confirmed them also gets the factors themselves, and confirms in its reply, after which it is not
sent them again unless it reports that it lost them (``NODE_STATE_MISSING``, e.g. after a SuperNode
restart; :meth:`FrozenFactorsDistribution.resync`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from contract import ARRAYS, CONFIG, METRICS
from contract.frozen import FROZEN_CONFIRMED, FROZEN_FACTORS, FROZEN_HASH

from .fedit import FedIT
from .protocol import DroppedReply
from .validation import accepted_replies


class FrozenFactorsDistribution:
    """Holds the frozen factors, their hash and which nodes already have them."""

    def __init__(self, factors: Mapping[str, np.ndarray], factors_hash: str) -> None:
        if not factors:
            raise ValueError("no frozen factors to distribute: the adapter kind freezes nothing")
        self.record = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in sorted(factors.items())})
        self.hash = factors_hash
        self.confirmed: set[int] = set()

    def messages(self, record: RecordDict, node_ids: Sequence[int], message_type: str) -> list[Message]:
        """One message per node: the round's content, the hash, and the factors if unconfirmed."""
        out = []
        for node_id in node_ids:
            config = ConfigRecord({**dict(record.config_records[CONFIG]), FROZEN_HASH: self.hash})
            content = RecordDict({ARRAYS: record.array_records[ARRAYS], CONFIG: config})
            if node_id not in self.confirmed:
                content[FROZEN_FACTORS] = self.record
            out.append(Message(content=content, message_type=message_type, dst_node_id=node_id))
        return out

    def resync(self, message: Message) -> Message:
        """``message`` plus the factors, for a node that reported it holds none; it is unconfirmed again."""
        node_id = message.metadata.dst_node_id
        self.confirmed.discard(node_id)
        content = RecordDict(dict(message.content.items()))
        content[FROZEN_FACTORS] = self.record
        return Message(content=content, message_type=message.metadata.message_type, dst_node_id=node_id)

    def note_replies(self, replies: Iterable[Message], dropped: Sequence[DroppedReply] = ()) -> None:
        """Nodes whose *accepted* reply confirms the current hash hold the factors from now on (a
        dropped reply's confirmation is not believed: that node is sent the factors again)."""
        for reply in accepted_replies(replies, dropped):
            if reply.content.metric_records[METRICS].get(FROZEN_CONFIRMED) == 1:
                self.confirmed.add(reply.metadata.src_node_id)


class FrozenFactorsStrategy(FedIT):
    """FedIT's validated weighted mean of the payload, plus the one-time frozen-factor distribution.

    Parameters
    ----------
    frozen_factors : Mapping[str, np.ndarray]
        The factors every client must hold, keyed as the adapter names them.
    frozen_hash : str
        Their hash (``adapters.frozen``), which clients verify.
    layout : ignored
        Accepted so every strategy takes the same keywords; the LoRA ``A``/``B`` deviation metric
        does not apply to a payload without both factors.
    """

    def __init__(
        self, *, frozen_factors: Mapping[str, np.ndarray], frozen_hash: str, layout: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(layout=None, **kwargs)
        self.frozen = FrozenFactorsDistribution(frozen_factors, frozen_hash)

    def _construct_messages(self, record: RecordDict, node_ids: list[int], message_type: str) -> Iterable[Message]:
        return self.frozen.messages(record, node_ids, message_type)

    def resync(self, message: Message) -> Message:
        """Resend the frozen factors to a node that lost them (a restarted SuperNode)."""
        return self.frozen.resync(message)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate as FedIT, then note which accepted replies confirmed the frozen factors."""
        replies = list(replies)
        result = super().aggregate_train(server_round, replies)
        self.frozen.note_replies(replies, self.last_dropped)
        return result

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Reduce as FedIT, then note the accepted replies' confirmations."""
        replies = list(replies)
        metrics = super().aggregate_evaluate(server_round, replies)
        self.frozen.note_replies(replies, self.last_dropped_evaluate)
        return metrics
