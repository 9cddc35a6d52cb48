"""Sending every node its adapter at its own rank, and checking its reply at that rank (``docs/algorithms.md §18``).

:class:`MixedRanks` is composed by the strategies that take per-client ranks (FLoRA, FedEx-LoRA,
HetLoRA, FlexLoRA). The server's global adapter has the largest configured rank ``R``; node ``k`` of
rank ``r_k`` is sent its first ``r_k`` components (:func:`~strategies.maths.mixed_rank.truncate_pair`,
effective units) and must reply with factors of rank ``r_k`` (and the rank in ``adapter-rank``); with
HetLoRA's self-pruning (:attr:`MixedRanks.prune_floor`) a smaller rank, which the node keeps from then on.
Every other array (a trained head) travels unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from logging import WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.common import log

from contract import ARRAYS, METRICS
from contract.ranks import ADAPTER_RANK

from .client_ranks import ClientRanks
from .factor_forms import PAIR
from .layout import LoraPair
from .maths.averaging import weighted_mean
from .maths.mixed_rank import truncate_pair
from .validation import Expected, MalformedReply

RANK_RULE = "adapter-rank"
"""Drop rule (``docs/trust.md §3``): a reply's rank is not the one its node was sent (or may prune to)."""


class MixedRanks:
    """Per-node payloads and expected replies for one run's :class:`ClientRanks` over a LoRA ``layout``."""

    def __init__(self, ranks: ClientRanks, layout: Mapping[str, LoraPair], *, strategy: str) -> None:
        others = sorted({pair.form for pair in layout.values()} - {PAIR.name})
        if others:
            raise ValueError(
                f"strategy.name = {strategy} with adapter.ranks needs plain LoRA pairs (adapter.name = lora); "
                f"the layout has modules of form {others}"
            )
        self.ranks = ranks
        self.layout = dict(layout)
        self._record: ArrayRecord | None = None  # the global record the cache below was cut from
        self._cache: dict[int, ArrayRecord] = {}  # rank -> payload of that record
        self.prune_floor: int | None = None  # HetLoRA's self-pruning: replies may report a rank down to it

    def scale(self, rank: int) -> float:
        """``α / r``."""
        return self.ranks.scale(rank)

    def global_rank(self, arrays: Mapping[str, np.ndarray] | ArrayRecord) -> int:
        """The rank of the global adapter (its ``A`` rows)."""
        pair = next(iter(self.layout.values()))
        return int(arrays[pair.a_key].shape[0])

    def client_rank(self, arrays: Mapping[str, np.ndarray]) -> int:
        """The rank of one client's factors (its first module's ``A`` rows)."""
        return self.global_rank(arrays)

    def factor_keys(self) -> frozenset[str]:
        """Every module's ``A`` and ``B`` keys."""
        return frozenset(k for pair in self.layout.values() for k in (pair.a_key, pair.b_key))

    def head_mean(self, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray) -> dict[str, np.ndarray]:
        """The weighted mean of every array that is not a LoRA factor (a trained head; shapes agree)."""
        factors = self.factor_keys()
        heads = [{k: v for k, v in arrays.items() if k not in factors} for arrays in arrays_list]
        return weighted_mean(heads, weights) if heads and heads[0] else {}

    def client_scales(self, arrays_list: Sequence[Mapping[str, np.ndarray]]) -> list[float]:
        """Each client's LoRA scale ``α / r_i``, its rank read from its factors."""
        return [self.scale(self.client_rank(arrays)) for arrays in arrays_list]

    def known(self, node_ids: Sequence[int]) -> list[int]:
        """The nodes whose rank the census knows; the others are left out of the round, logged."""
        unknown = [n for n in node_ids if self.ranks.of(n) is None]
        if unknown:
            log(WARNING, "adapter.ranks: nodes %s joined after the rank census; they sit this round out", unknown)
        return [n for n in node_ids if self.ranks.of(n) is not None]

    def messages(self, record: RecordDict, node_ids: Sequence[int], message_type: str) -> list[Message]:
        """One message per known node: ``record`` with the arrays at that node's rank."""
        arrays = record.array_records[ARRAYS]
        out = []
        for node in self.known(node_ids):
            content = RecordDict({key: (self.payload(arrays, node) if key == ARRAYS else value) for key, value in record.items()})
            out.append(Message(content=content, message_type=message_type, dst_node_id=node))
        return out

    def payload(self, arrays: ArrayRecord, node_id: int) -> ArrayRecord:
        """The global adapter truncated to the node's rank (a head travels as is)."""
        rank = self.ranks.of(node_id)
        if rank is None:
            raise KeyError(f"node {node_id} has no rank in the census")
        if arrays is not self._record:  # a new round's global adapter (held, so its identity cannot be reused)
            self._record, self._cache = arrays, {}
        if rank not in self._cache:
            self._cache[rank] = self._truncate(arrays, rank)
        return self._cache[rank]

    def _truncate(self, arrays: ArrayRecord, rank: int) -> ArrayRecord:
        big = self.global_rank(arrays)
        if rank == big:
            return arrays
        out: dict[str, np.ndarray] = {key: array.numpy() for key, array in arrays.items()}
        for pair in self.layout.values():
            out[pair.a_key], out[pair.b_key] = truncate_pair(
                out[pair.a_key], out[pair.b_key], rank, self.scale(big), self.scale(rank)
            )  # A: (r, n), B: (m, r)
        return ArrayRecord({key: Array(np.ascontiguousarray(out[key])) for key in arrays.keys()})

    def expected(self, expected: Expected, rank: int) -> Expected:
        """What a rank-``rank`` node must reply: ``expected`` with its factors at that rank."""
        out = dict(expected)
        for pair in self.layout.values():
            (r_a, n), dtype_a = expected[pair.a_key]
            (m, r_b), dtype_b = expected[pair.b_key]
            out[pair.a_key] = ((rank, n), dtype_a)
            out[pair.b_key] = ((m, rank), dtype_b)
        return out

    def reported_rank(self, msg: Message) -> object:
        """The ``adapter-rank`` a reply reports (``None``: none; not yet type-checked)."""
        if msg.has_content() and METRICS in msg.content.metric_records:
            return msg.content.metric_records[METRICS].get(ADAPTER_RANK)
        return None

    def expected_for(self, expected: Expected, msg: Message) -> Expected:
        """The reply shape of ``msg``'s sender at the rank it reports; :class:`MalformedReply` (rule
        ``adapter-rank``) when its rank is unknown, or it reports a rank other than the census's, or, with
        :attr:`prune_floor` set (HetLoRA's self-pruning), a rank outside ``[min(floor, r), r]``."""
        node = msg.metadata.src_node_id
        rank = self.ranks.of(node)
        if rank is None:
            raise MalformedReply(f"node {node} has no rank in the census", RANK_RULE)
        reported = self.reported_rank(msg)
        if reported is None or reported == rank and isinstance(reported, int) and not isinstance(reported, bool):
            return self.expected(expected, rank)
        if self.prune_floor is None:
            raise MalformedReply(f"`{ADAPTER_RANK}` = {reported!r}, but the node was sent rank {rank}", RANK_RULE)
        floor = min(self.prune_floor, rank)
        if isinstance(reported, bool) or not isinstance(reported, int) or not floor <= reported <= rank:
            raise MalformedReply(
                f"`{ADAPTER_RANK}` = {reported!r}: a node sent rank {rank} may only keep it or prune to a rank in "
                f"[{floor}, {rank}]", RANK_RULE,
            )
        return self.expected(expected, reported)

    def note_pruned(self, replies: Sequence[Message]) -> int:
        """Record the smaller rank of every accepted reply that reports one; returns how many nodes pruned."""
        pruned = 0
        for msg in replies:
            reported = self.reported_rank(msg)
            if isinstance(reported, int) and not isinstance(reported, bool):
                pruned += self.ranks.prune(msg.metadata.src_node_id, reported)
        return pruned
