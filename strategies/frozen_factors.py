"""Distributing frozen adapter factors once per node (FFA-LoRA's A, Fed-SB's B and A).

A mixin for message-building strategies: every message carries the factors' hash; a node that has
not yet confirmed them also gets the factors themselves. A node confirms by replying (its reply
carries the hash it verified), after which it is never sent them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from contract import ARRAYS, CONFIG, METRICS
from contract.frozen import FROZEN_FACTORS, FROZEN_HASH


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
            content = RecordDict(
                {ARRAYS: record[ARRAYS], CONFIG: ConfigRecord({**dict(record[CONFIG]), FROZEN_HASH: self.hash})}
            )
            if node_id not in self.confirmed:
                content[FROZEN_FACTORS] = self.record
            out.append(Message(content=content, message_type=message_type, dst_node_id=node_id))
        return out

    def note_replies(self, replies: Iterable[Message]) -> None:
        """Nodes whose reply confirms the current hash hold the factors from now on."""
        for reply in replies:
            if reply.has_content() and METRICS in reply.content:
                confirmed = reply.content[METRICS].get(FROZEN_HASH + "-ok")
                if confirmed == 1:
                    self.confirmed.add(reply.metadata.src_node_id)
