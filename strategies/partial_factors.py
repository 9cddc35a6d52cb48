"""Strategies whose messages carry only part of the LoRA adapter (FedSA-LoRA, RoLoRA, FedSVD).

The server keeps the whole global adapter (every ``A``, ``B`` and head), so the checkpoint, the
central evaluation and the export see a complete model; what travels each round is decided by the
round's :class:`RoundRoles` (``contract.factor_roles``, ``docs/algorithms.md §13``):

- *local* layers (FedSA's ``B``) are never sent and never returned; each client keeps its own;
- *fixed* layers (RoLoRA's frozen half, FedSVD's ``A``) are sent but not trained, and the reply
  leaves them out;
- with :attr:`PartialFactorsStrategy.cache_global` (RoLoRA), a node that holds the previous global
  adapter is sent only the arrays the latest aggregation changed.

Aggregation is FedIT's validated weighted mean over the returned arrays; every array not returned
keeps the server's value (:meth:`PartialFactorsStrategy.aggregate_arrays`), and
:meth:`PartialFactorsStrategy.refactor` may then rewrite the result (FedSVD).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from contract import ARRAYS, CONFIG, METRICS
from contract.factor_roles import (
    FIXED_LAYERS,
    GLOBAL_FROM_VERSION,
    GLOBAL_VERSION,
    LOCAL_LAYERS,
    encode_layers,
    in_layers,
)

from .factor_forms import PAIR
from .fedit import FedIT
from .layout import LoraPair, check_layout
from .maths.averaging import weighted_mean
from .protocol import DroppedReply, StrategyState
from .validation import Expected, accepted_replies, expected_from_arrays

VERSION_STATE = "global_version"
"""``export_state`` meta key: how many aggregations the global adapter has been through."""


@dataclass(frozen=True)
class RoundRoles:
    """PEFT layers kept on the clients (``local``) and sent but not trained (``fixed``) in one round."""

    local: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()

    @property
    def held_back(self) -> tuple[str, ...]:
        """Layers a train reply leaves out."""
        return self.local + self.fixed


def factor_layer(module: str, key: str) -> str:
    """The PEFT layer of a payload key: ``"<module>.lora_B.weight"`` -> ``"lora_B"``."""
    layer = key.removeprefix(f"{module}.").rsplit(".", 1)[0]
    if "." in layer or not layer:
        raise ValueError(f"payload key {key!r} of module {module!r} is not '<module>.<layer>.weight'")
    return layer


class PartialFactorsStrategy(FedIT):
    """FedIT over the part of the adapter the round's :meth:`round_roles` ship (module doc).

    Requires a ``layout`` of LoRA pairs (``adapter.name = lora``): the roles name its ``A`` and ``B``
    layers. FedIT's ``dev_rel`` metric is not computed (these strategies average a single factor).
    """

    cache_global: ClassVar[bool] = False
    """Send a node only the arrays changed since the global adapter it holds (RoLoRA)."""

    def __init__(self, *, layout: Mapping[str, LoraPair] | None = None, **kwargs: Any) -> None:
        name = type(self).__name__
        if not layout:
            raise ValueError(
                f"{name} needs the adapter layout (which payload arrays are each module's A and B); got "
                "none. Use adapter.name = lora (or auto)"
            )
        others = sorted({pair.form for pair in layout.values()} - {PAIR.name})
        if others:
            raise ValueError(f"{name} trains LoRA pairs B·A; the layout has modules of form {others}. "
                             "Use adapter.name = lora (or auto)")
        super().__init__(layout=None, **kwargs)
        self.factor_layout: dict[str, LoraPair] = dict(layout)
        pair = next(iter(layout.items()))
        self.a_layer = factor_layer(pair[0], pair[1].a_key)  # "lora_A"
        self.b_layer = factor_layer(pair[0], pair[1].b_key)  # "lora_B"
        self.version = 0  # aggregations the global adapter has been through
        self.changed: frozenset[str] | None = None  # keys the latest aggregation changed (None: unknown)
        self.node_version: dict[int, int] = {}
        self._sending = RoundRoles()

    # --- what a subclass decides ----------------------------------------------------------------
    def round_roles(self, server_round: int) -> RoundRoles:
        """The roles of train round ``server_round``; evaluation uses only their ``local`` layers."""
        raise NotImplementedError

    def refactor(self, server_round: int, new: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rewrite the aggregated global arrays (FedSVD's SVD); default: unchanged."""
        return new

    # --- FedIT hooks ----------------------------------------------------------------------------
    def expected_reply(self, server_round: int, arrays: ArrayRecord) -> Expected:
        """What was sent minus the round's local and fixed layers."""
        held_back = self.round_roles(server_round).held_back
        return {k: v for k, v in expected_from_arrays(arrays).items() if not in_layers(k, held_back)}

    def aggregate_arrays(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The weighted mean of the returned arrays over the server's copy of the rest, then :meth:`refactor`."""
        assert self.global_arrays is not None
        new = {key: array.numpy() for key, array in self.global_arrays.items()}
        mean = weighted_mean(arrays_list, weights)
        new.update(mean)
        new = self.refactor(server_round, new)
        before = {key: array.numpy() for key, array in self.global_arrays.items()}
        self.changed = frozenset(k for k in new if k not in before or not np.array_equal(new[k], before[k]))
        return new

    # --- Strategy API ---------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Check the layout against the whole adapter, then sample and send the round's part."""
        check_layout(self.factor_layout, {key: tuple(a.shape) for key, a in arrays.items()})
        self._sending = self.round_roles(server_round)
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluation ships everything but the local layers (each client evaluates with its own)."""
        self._sending = RoundRoles(local=self.round_roles(server_round).local)
        return super().configure_evaluate(server_round, arrays, config, grid)

    def _construct_messages(self, record: RecordDict, node_ids: list[int], message_type: str) -> Iterable[Message]:
        """One message per node: the round's part of the adapter, its roles and, with
        :attr:`cache_global`, only what changed since the version the node holds."""
        arrays = record.array_records[ARRAYS]
        roles = self._sending
        shipped = [key for key in arrays.keys() if not in_layers(key, roles.local)]
        base_config = dict(record.config_records[CONFIG])
        if roles.local:
            base_config[LOCAL_LAYERS] = encode_layers(roles.local)
        if roles.fixed:
            base_config[FIXED_LAYERS] = encode_layers(roles.fixed)
        messages = []
        for node_id in node_ids:
            config = dict(base_config)
            keys = shipped
            if self.cache_global:
                config[GLOBAL_VERSION] = self.version
                held = self.node_version.get(node_id)
                if held == self.version:
                    keys, config[GLOBAL_FROM_VERSION] = [], held
                elif held is not None and held == self.version - 1 and self.changed is not None:
                    keys, config[GLOBAL_FROM_VERSION] = [k for k in shipped if k in self.changed], held
            content = RecordDict({ARRAYS: ArrayRecord({k: arrays[k] for k in keys}), CONFIG: ConfigRecord(config)})
            messages.append(Message(content=content, message_type=message_type, dst_node_id=node_id))
        return messages

    def _note_versions(self, replies: Iterable[Message], dropped: Sequence[DroppedReply]) -> None:
        """Learn which global version each node holds from the *accepted* replies; forget it for a
        node whose reply was dropped or is an error (it is sent everything next time).

        A version outside ``0..version`` is ignored the same way.
        """
        if not self.cache_global:
            return
        accepted = {id(r) for r in accepted_replies(replies, dropped)}
        for reply in replies:
            node = reply.metadata.src_node_id
            metrics = reply.content.metric_records.get(METRICS) if id(reply) in accepted else None
            reported = metrics.get(GLOBAL_VERSION) if metrics is not None else None
            if isinstance(reported, int | float) and float(reported).is_integer() and 0 <= reported <= self.version:
                self.node_version[node] = int(reported)
            else:
                self.node_version.pop(node, None)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Note the nodes' versions, aggregate as FedIT, and count the new global version."""
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        self._note_versions(replies, self.last_dropped)
        if arrays is not None:
            self.version += 1
        if metrics is not None and self.cache_global:
            metrics[GLOBAL_VERSION] = self.version
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Note the nodes' versions, then reduce as FedIT (the version metric is the server's)."""
        replies = list(replies)
        metrics = super().aggregate_evaluate(server_round, replies)
        self._note_versions(replies, self.last_dropped_evaluate)
        if metrics is not None and GLOBAL_VERSION in metrics:
            metrics[GLOBAL_VERSION] = self.version
        return metrics

    def export_state(self) -> StrategyState:
        """The global version (a resumed run's nodes are new and are sent everything)."""
        return StrategyState({}, {VERSION_STATE: self.version})

    def restore_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Inverse of :meth:`export_state`."""
        self.version = int(meta.get(VERSION_STATE, 0))
        self.changed, self.node_version = None, {}
