"""The versioned frozen base, for strategies that change it (FedEx-LoRA, FLoRA).

``docs/algorithms.md §5``: the base carries a version, one per folded round. :class:`BaseVersioning`
keeps the rounds' deltas in a bounded :class:`~strategies.maths.residual_log.ResidualLog`, learns
from every reply which version its node holds, and gives every message to a node the delta from
that version to the current one (the last round's delta for a node that took part in the previous
round, the missed rounds stacked, or the cumulative delta densely), under the base-delta contract
(:mod:`contract.base_delta`).

A strategy composes it: it calls :meth:`~BaseVersioning.fold` with each round's deltas and routes
its message construction, reply notes, ``base_deltas`` and checkpoint state through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

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

from .maths.residual_log import ResidualLog
from .maths.transport import ResidualTransport
from .protocol import DroppedReply, StrategyState
from .validation import MalformedReply, accepted_replies

LOG_STATE = "log"
"""``export_state`` meta key of the residual log; its arrays are named ``f"{LOG_STATE}/<name>"``."""


class BaseVersioning:
    """The residual log of one run, and which base version each node holds."""

    def __init__(self) -> None:
        self.log: ResidualLog | None = None  # created on the first fold, when shapes are known
        self.node_version: dict[int, int] = {}

    @property
    def version(self) -> int:
        """The current base version (rounds folded so far)."""
        return self.log.version if self.log is not None else 0

    def fold(self, deltas: Mapping[str, ResidualTransport]) -> int:
        """Record one round's base deltas (``(m, n)`` each, every module) as the next version."""
        if self.log is None:
            self.log = ResidualLog({module: d.shape for module, d in deltas.items()})
        return self.log.record(deltas)

    def base_deltas(self) -> dict[str, np.ndarray]:
        """The cumulative base delta ``C_V`` per module, ``(m, n)`` float32 (empty before the first fold)."""
        if self.log is None:
            return {}
        return self.log.canonical()

    # --- messages ----------------------------------------------------------------------------
    def messages(
        self, record: RecordDict, node_ids: Sequence[int], message_type: str,
        arrays_for: Callable[[int], ArrayRecord] | None = None,
    ) -> list[Message]:
        """One message per node: the round's content plus the base delta from the version it holds.

        ``arrays_for(node_id)``, when given, replaces the record's arrays for that node (per-client
        ranks, ``docs/algorithms.md §18``)."""
        messages = []
        for node_id in node_ids:
            held = self.node_version.get(node_id, 0)
            since: int = held
            deltas: dict[str, DeltaForm] = {}
            splits: dict[str, tuple[int, ...]] = {}
            if self.log is not None and held != self.version:
                cumulative = self.log.delta_since(held)
                since, deltas = cumulative.since, {m: _wire(t) for m, t in cumulative.modules.items()}
                splits = cumulative.splits
            config = ConfigRecord(
                {**dict(record.config_records[CONFIG]), BASE_VERSION: self.version, BASE_FROM_VERSION: since}
            )
            if splits:
                config[BASE_SPLITS] = encode_splits(splits)
            arrays = record.array_records[ARRAYS] if arrays_for is None else arrays_for(node_id)
            content = RecordDict({ARRAYS: arrays, CONFIG: config})
            if deltas:
                content[BASE_DELTA] = encode_base_delta(deltas)
            messages.append(Message(content=content, message_type=message_type, dst_node_id=node_id))
        return messages

    def resync(self, message: Message) -> Message:
        """``message`` rebuilt with the whole cumulative delta from version 0, for a node that reported it
        does not hold the version the message starts from (a restart empties its ``Context.state``)."""
        node_id = message.metadata.dst_node_id
        self.node_version[node_id] = 0
        base_keys = (BASE_VERSION, BASE_FROM_VERSION, BASE_SPLITS)
        config = ConfigRecord({k: v for k, v in message.content.config_records[CONFIG].items() if k not in base_keys})
        rebuilt = self.messages(
            RecordDict({ARRAYS: message.content.array_records[ARRAYS], CONFIG: config}), [node_id],
            message.metadata.message_type,
        )[0]
        for name, record in message.content.items():  # other layers' records (plugin broadcast, frozen factors)
            if name not in (ARRAYS, CONFIG, BASE_DELTA):
                rebuilt.content[name] = record
        return rebuilt

    def check_reported(self, metrics: MetricRecord) -> None:
        """Refuse a reply reporting a base version the server never sent (above the current one).

        The metric is already schema-checked (a whole number >= 0, ``contract.reply_schema``)."""
        reported = metrics.get(BASE_VERSION)
        if reported is not None and not (isinstance(reported, int | float) and reported <= self.version):
            raise MalformedReply(
                f"`{BASE_VERSION}` = {reported!r}, but the server's base is at version {self.version}", "protocol"
            )

    def note_replies(self, replies: Iterable[Message], dropped: Sequence[DroppedReply] = ()) -> None:
        """Remember the base version each *accepted* reply reports (``docs/trust.md §1``).

        A node whose reply the strategy dropped (``dropped``, its ``last_dropped``) but that did
        reply may have moved its base anyway; the server forgets what it believed that node holds,
        so the node is next sent the cumulative delta from version 0, which every node accepts. An
        error reply changes nothing: a node whose work failed keeps its version (``client.base_sync``).
        """
        replies = list(replies)
        for reply in accepted_replies(replies, dropped):
            reported = reply.content.metric_records[METRICS].get(BASE_VERSION)
            if isinstance(reported, int | float) and float(reported).is_integer() and 0 <= reported <= self.version:
                self.node_version[reply.metadata.src_node_id] = int(reported)
        refused = {drop.node_id for drop in dropped}
        for reply in replies:
            if reply.has_content() and reply.metadata.src_node_id in refused:
                self.node_version.pop(reply.metadata.src_node_id, None)

    def stamp(self, metrics: MetricRecord | None) -> MetricRecord | None:
        """Add the current base version to a round's train metrics."""
        if metrics is not None:
            metrics[BASE_VERSION] = self.version
        return metrics

    # --- checkpointing (server/checkpoint.py) --------------------------------------------------
    def export_state(self) -> StrategyState:
        """The residual log. Which node holds which version is not kept: a resumed run starts fresh
        nodes (new Flower contexts), which the protocol serves from version 0."""
        if self.log is None:
            return StrategyState({}, {})
        arrays, meta = self.log.state()
        return StrategyState({f"{LOG_STATE}/{k}": v for k, v in arrays.items()}, {LOG_STATE: meta})

    def restore_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Inverse of :meth:`export_state`."""
        if LOG_STATE in meta:
            prefix = f"{LOG_STATE}/"
            log_arrays = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
            self.log = ResidualLog.from_state(log_arrays, meta[LOG_STATE])
        self.node_version = {}


def _wire(t: ResidualTransport) -> DeltaForm:
    """The contract's form of a delta: dense ``(m, n)`` or the factors ``(U: (m, k), V: (k, n))``."""
    return (t.arrays[0], t.arrays[1]) if t.form == "factored" else t.arrays[0]
