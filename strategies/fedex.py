"""FedEx-LoRA: exact federated LoRA by folding the averaging residual into the frozen base.

Singhal et al., "FedEx-LoRA: Exact Aggregation for Federated and Efficient Fine-Tuning of
Foundation Models", arXiv 2410.09432 (ACL 2025), §3. Per module, the next adapter is FedIT's
``(B̄, Ā)`` and the base moves by ``s·ΔW_res = s·(Σ p_i B_i A_i − B̄ Ā)``, so that
``W0' + s·B̄ Ā == W0 + s·Σ p_i B_i A_i`` exactly (algorithms.md §1.1).

Protocol (our design for partial participation, algorithms.md §1.5): the base carries a version,
one per aggregated round. The server keeps the rounds' residuals in a bounded
:class:`~strategies.exact.residual_log.ResidualLog`. Every message to a node carries the delta from
the version that node holds to ``V`` — the last residual for a node that took part in the previous
round, the missed ones stacked otherwise (exact factors, or dense when that is smaller), or, for a
node older than the log keeps, the whole cumulative delta from the pristine base (version 0) —
under the base-delta contract (:mod:`contract.base_delta`). Nodes report their version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from .aggregation import weighted_mean
from contract import ARRAYS, CONFIG, METRICS
from contract.base_delta import (
    BASE_DELTA,
    BASE_FROM_VERSION,
    BASE_SPLITS,
    BASE_VERSION,
    DeltaForm,
    encode_base_delta,
    encode_splits,
)
from .exact.abba import AbbaFactors, abba_aggregate
from .exact.fedex import fedex_aggregate
from .exact.residual_log import ResidualLog
from .exact.transport import ResidualTransport
from .fedit import FedIT
from .registry import register_strategy


@register_strategy("fedex")
class FedExLoRA(FedIT):
    """FedEx-LoRA (arXiv 2410.09432): FedIT's factor means plus the residual folded into the base.

    Requires a ``layout`` (which payload keys are each module's A and B, and its scale). ABBA modules
    (a layout entry with a second pair) fold ABBA's exact Hadamard residual instead (§4.6). Everything
    else is FedIT's: sampling, reply validation, metric reduction and the deviation metrics (which
    here report how much each round's residual corrects).
    """

    def __init__(self, *, layout: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if not layout:
            raise ValueError("strategy.name = fedex needs the adapter layout (a LoRA adapter); got none")
        super().__init__(layout=layout, **kwargs)
        self.log: ResidualLog | None = None  # created on the first aggregation, when shapes are known
        self.node_version: dict[int, int] = {}

    @property
    def version(self) -> int:
        """The current base version (rounds folded so far)."""
        return self.log.version if self.log is not None else 0

    def fold(self, server_round: int, deltas: Mapping[str, ResidualTransport]) -> None:
        """Record this round's base deltas (``(m, n)`` each) as the next version."""
        if self.log is None:
            self.log = ResidualLog({module: d.shape for module, d in deltas.items()})
        self.log.record(deltas)

    # --- aggregation -------------------------------------------------------------------------
    def aggregate_arrays(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Factor means (and head) as FedIT; record this round's residual and bump the version."""
        assert self.layout is not None
        merged = weighted_mean(arrays_list, weights)
        round_residuals: dict[str, ResidualTransport] = {}
        for module, pair in self.layout.items():
            if pair.is_abba:  # s·(Σ p_i (B1A1)⊙(B2A2) − (B̄1Ā1)⊙(B̄2Ā2)), algorithms.md §4.6
                factors = [AbbaFactors(a[pair.b_key], a[pair.a_key], a[pair.b2_key], a[pair.a2_key]) for a in arrays_list]
                round_residuals[module] = abba_aggregate(factors, weights, pair.scale).residual  # (m, n)
                continue
            agg = fedex_aggregate(
                [a[pair.a_key] for a in arrays_list],  # A_i: (r, n)
                [a[pair.b_key] for a in arrays_list],  # B_i: (m, r)
                weights,
                pair.scale,
            )
            round_residuals[module] = agg.residual  # s·ΔW_res: (m, n), the cheaper exact form
        self.fold(server_round, round_residuals)
        return merged

    def base_deltas(self) -> dict[str, np.ndarray]:
        """The cumulative base delta ``D_V`` per module, ``(m, n)`` float32 (empty before round 1)."""
        if self.log is None:
            return {}
        return self.log.canonical()

    # --- checkpointing (server/checkpoint.py) ----------------------------------------------------
    def export_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The versioned residual log. Which node holds which version is not kept: a resumed run
        starts fresh nodes (new Flower contexts), which the protocol serves from version 0."""
        if self.log is None:
            return {}, {}
        arrays, meta = self.log.state()
        return {f"log/{k}": v for k, v in arrays.items()}, {"log": meta}

    def restore_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Inverse of :meth:`export_state`."""
        if "log" in meta:
            self.log = ResidualLog.from_state({k[4:]: v for k, v in arrays.items() if k.startswith("log/")}, meta["log"])
        self.node_version = {}

    # --- messages ----------------------------------------------------------------------------
    @staticmethod
    def _wire(t: ResidualTransport) -> DeltaForm:
        return (t.arrays[0], t.arrays[1]) if t.form == "factored" else t.arrays[0]

    def _construct_messages(self, record: RecordDict, node_ids: list[int], message_type: str) -> Iterable[Message]:
        """One message per node, each with the base delta from the version that node holds."""
        messages = []
        for node_id in node_ids:
            held = self.node_version.get(node_id, 0)
            since, deltas, splits = held, {}, {}
            if self.log is not None and held != self.version:
                cumulative = self.log.delta_since(held)
                since, deltas = cumulative.since, {m: self._wire(t) for m, t in cumulative.modules.items()}
                splits = cumulative.splits
            config = ConfigRecord({**dict(record[CONFIG]), BASE_VERSION: self.version, BASE_FROM_VERSION: since})
            if splits:
                config[BASE_SPLITS] = encode_splits(splits)
            content = RecordDict({ARRAYS: record[ARRAYS], CONFIG: config})
            if deltas:
                content[BASE_DELTA] = encode_base_delta(deltas)
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
