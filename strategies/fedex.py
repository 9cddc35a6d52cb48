"""FedEx-LoRA: exact federated LoRA by folding the averaging residual into the frozen base.

Singhal et al., "FedEx-LoRA: Exact Aggregation for Federated and Efficient Fine-Tuning of
Foundation Models", arXiv 2410.09432 (ACL 2025), §3. Per module, the next adapter is FedIT's
``(B̄, Ā)`` and the base moves by ``s·ΔW_res = s·(Σ p_i B_i A_i − B̄ Ā)``, so that
``W0' + s·B̄ Ā == W0 + s·Σ p_i B_i A_i`` exactly (algorithms.md §1.1).

Protocol (our design for partial participation, algorithms.md §1.5): the base carries a version,
one per aggregated round. The server keeps each round's residual in its cheaper exact form and
the dense fp32 cumulative delta ``D_V``. Every message to a node carries the delta from the version
that node holds to ``V`` — the last residual for a node that took part in the previous round, the
sum of the missed ones otherwise (stacked exact factors, or dense when that is smaller) — under the
base-delta contract (:mod:`strategies.contract.base_delta`). Nodes report the version they hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from .aggregation import weighted_mean
from .contract import ARRAYS, CONFIG, METRICS
from .contract.base_delta import BASE_DELTA, BASE_FROM_VERSION, BASE_VERSION, DeltaForm, encode_base_delta
from .exact.fedex import fedex_aggregate
from .exact.transport import ResidualTransport
from .fedit import FedIT
from .registry import register_strategy


def combine_residuals(residuals: Sequence[ResidualTransport]) -> DeltaForm:
    """The sum of consecutive residuals in its cheaper exact form: stacked factors or dense."""
    m, n = residuals[0].shape
    if all(r.form == "factored" for r in residuals):
        k = sum(r.columns or 0 for r in residuals)
        if k * (m + n) < m * n:
            u = np.concatenate([r.arrays[0] for r in residuals], axis=1)  # (m, Σk)
            v = np.concatenate([r.arrays[1] for r in residuals], axis=0)  # (Σk, n)
            return (u, v)
    return np.sum([r.to_dense() for r in residuals], axis=0)  # (m, n), float64


@register_strategy("fedex")
class FedExLoRA(FedIT):
    """FedEx-LoRA (arXiv 2410.09432): FedIT's factor means plus the residual folded into the base.

    Requires a ``layout`` (which payload keys are each module's A and B, and its scale). Everything
    else is FedIT's: sampling, reply validation, metric reduction and the deviation metrics (which
    here report how much each round's residual corrects).
    """

    def __init__(self, *, layout: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if not layout:
            raise ValueError("strategy.name = fedex needs the adapter layout (a LoRA adapter); got none")
        super().__init__(layout=layout, **kwargs)
        self.version = 0
        self.residuals: list[dict[str, ResidualTransport]] = []  # residuals[v - 1]: version v-1 -> v
        self.cumulative: dict[str, np.ndarray] = {}  # D_V per module, (m, n), float64
        self.node_version: dict[int, int] = {}

    # --- aggregation -------------------------------------------------------------------------
    def aggregate_arrays(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Factor means (and head) as FedIT; record this round's residual and bump the version."""
        assert self.layout is not None
        merged = weighted_mean(arrays_list, weights)
        round_residuals: dict[str, ResidualTransport] = {}
        for module, pair in self.layout.items():
            agg = fedex_aggregate(
                [a[pair.a_key] for a in arrays_list],  # A_i: (r, n)
                [a[pair.b_key] for a in arrays_list],  # B_i: (m, r)
                weights,
                pair.scale,
            )
            round_residuals[module] = agg.residual
            dense = agg.residual.to_dense()  # s·ΔW_res: (m, n), float64
            self.cumulative[module] = self.cumulative[module] + dense if module in self.cumulative else dense
        self.residuals.append(round_residuals)
        self.version += 1
        return merged

    def base_deltas(self) -> dict[str, np.ndarray]:
        """The cumulative base delta ``D_V`` per module, ``(m, n)`` float32 (empty before round 1)."""
        return {module: delta.astype(np.float32) for module, delta in self.cumulative.items()}

    # --- messages ----------------------------------------------------------------------------
    def delta_for(self, held: int) -> dict[str, DeltaForm]:
        """What a node at version ``held`` needs to reach the current version."""
        missed = self.residuals[held:]
        if not missed:
            return {}
        return {module: combine_residuals([r[module] for r in missed]) for module in missed[0]}

    def _construct_messages(self, record: RecordDict, node_ids: list[int], message_type: str) -> Iterable[Message]:
        """One message per node, each with the base delta from the version that node holds."""
        messages = []
        for node_id in node_ids:
            held = self.node_version.get(node_id, 0)
            config = ConfigRecord({**dict(record[CONFIG]), BASE_VERSION: self.version, BASE_FROM_VERSION: held})
            content = RecordDict({ARRAYS: record[ARRAYS], CONFIG: config})
            if held != self.version:
                content[BASE_DELTA] = encode_base_delta(self.delta_for(held))
            messages.append(Message(content=content, message_type=message_type, dst_node_id=node_id))
        return messages

    def _note_versions(self, replies: Sequence[Message]) -> None:
        for reply in replies:
            if reply.has_content() and METRICS in reply.content and BASE_VERSION in reply.content[METRICS]:
                self.node_version[reply.metadata.src_node_id] = int(reply.content[METRICS][BASE_VERSION])

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Note which base version each replying node now holds, then aggregate as FedIT."""
        replies = list(replies)
        self._note_versions(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if metrics is not None:
            metrics[BASE_VERSION] = self.version
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Note base versions, then reduce evaluate metrics as FedIT."""
        replies = list(replies)
        self._note_versions(replies)
        return super().aggregate_evaluate(server_round, replies)
