"""Keeping a node's frozen base in step with the server's versioned base (FedEx-LoRA, FLoRA).

A node's base is ``W0 + C_v``. The node keeps the canonical delta ``C_v`` (dense, float32, per
module; ``contract.base_delta``, identical bit for bit on every node) and ``v`` in its
Flower ``Context.state``, which persists across messages in simulation and deployment alike (a
deployed node runs every message in a fresh process). Each message that carries a base delta
moves the node from ``base-from-version`` to ``base-version``; a node whose stored version does
not match is refused (:class:`BaseVersionMismatch`, a ``NODE_STATE_MISSING`` reply), never silently
trained on a wrong base; the server then resends the cumulative delta from version 0 in the same round. Messages without a delta leave the pristine base ``W0``.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict

from adapters.base_delta import BaseWeights
from client.node_state import NodeStateMissing
from contract import BASE_DELTA, BASE_FROM_VERSION, BASE_SPLITS, BASE_VERSION, CONFIG, advance_base

STATE_DELTA = "corolla.base-delta"
STATE_META = "corolla.base-meta"


class BaseVersionMismatch(NodeStateMissing):
    """The server's delta starts from a base version this node does not hold (e.g. after a restart,
    or a reply the server never received); the server resends the delta from version 0."""


def _version(record: ConfigRecord, key: str) -> int:
    value = record[key]
    if not isinstance(value, int):
        raise ValueError(f"`{key}` is {value!r}, expected a base version number")
    return value


def stored_version(state: RecordDict) -> int:
    """The base version this node holds (0: the pristine base)."""
    meta = state.config_records.get(STATE_META)
    return _version(meta, BASE_VERSION) if meta is not None else 0


class PendingBase:
    """A base version set on the model but not yet recorded in the node state.

    ``commit`` writes it to ``Context.state`` once the node's work succeeded: a node whose training
    fails keeps its previous version, which is what the server still believes it holds.
    """

    def __init__(self, version: int, total: dict[str, np.ndarray] | None) -> None:
        self.version = version
        self.total = total

    def commit(self, context: Context) -> None:
        """Record the new base in the node state (no-op for strategies that never change the base)."""
        if self.total is None:
            return
        context.state[STATE_DELTA] = ArrayRecord({k: Array(v) for k, v in sorted(self.total.items())})
        context.state[STATE_META] = ConfigRecord({BASE_VERSION: self.version})


def sync_base(base: BaseWeights, content: RecordDict, context: Context) -> PendingBase:
    """Set ``base`` to the version the message asks for; ``commit`` the result after success."""
    config = content.config_records[CONFIG]
    if BASE_VERSION not in config:
        base.set({})
        return PendingBase(0, None)
    target, start = _version(config, BASE_VERSION), _version(config, BASE_FROM_VERSION)
    held = stored_version(context.state)
    if start not in (0, held):  # from 0: the whole cumulative delta, to add to the pristine base
        raise BaseVersionMismatch(
            f"server sent a base delta from version {start} to {target}, but this node holds version {held}"
        )
    total = {}
    if start == held and start != 0 and STATE_DELTA in context.state:  # from 0: start over from C_0 = 0
        total = {k: v.numpy() for k, v in context.state.array_records[STATE_DELTA].items()}
    if BASE_DELTA in content and target != start:
        splits = config.get(BASE_SPLITS)
        if splits is not None and not isinstance(splits, str):
            raise ValueError(f"`{BASE_SPLITS}` is {splits!r}, expected the encoded split string")
        total.update(advance_base(total, content.array_records[BASE_DELTA], splits))
    base.set(total)
    return PendingBase(target, total)
