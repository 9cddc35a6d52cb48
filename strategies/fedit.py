"""FedIT: federated LoRA by plain FedAvg of the adapter factors.

Zhang et al., "Towards Building the Federated GPT: Federated Instruction Tuning",
arXiv:2305.05644 (ICASSP 2024). Every shipped tensor is averaged element-wise and *separately*:
``Ā = Σ p_i A_i``, ``B̄ = Σ p_i B_i`` and any trained head. The global update is therefore
``s·B̄ Ā``, not the clients' average update ``s·Σ p_i B_i A_i``; the gap is the FedEx-LoRA
residual (arXiv:2410.09432, §3), reported per module as ``dev_rel/<module>`` when a layout is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from contract.records import (
    ARRAYS,
    CLIENTS,
    CONFIG,
    DEV_REL_MEAN,
    DEV_REL_PREFIX,
    DROPPED,
    METRICS,
    NUM_EXAMPLES,
    reduce_metrics,
)

from .comm_cost import factor_average_comm
from .layout import LoraPair, check_layout
from .maths.averaging import aggregation_weights, weighted_mean
from .protocol import CorollaStrategy, DroppedReply, StrategyState
from .registry import StrategyInfo, register_strategy
from .validation import Expected, MalformedReply, ReplyPolicy, check_metrics, check_records, check_reply, expected_from_arrays

MetricsAggrFn = Callable[[list[RecordDict], str], MetricRecord]


@register_strategy(StrategyInfo(
    name="fedit",
    summary="FedAvg of the adapter factors one by one (FedIT); not exact",
    exact=False,
    adapter_kinds=("lora", "abba"),  # ABBA: naive averaging of its four factors
    comm=factor_average_comm,
    docs="docs/algorithms.md §3; arXiv:2305.05644",
    linear=True,  # the aggregate is a weighted mean of the payloads: SecAgg applies
))
class FedIT(FedAvg, CorollaStrategy):
    """FedIT (arXiv:2305.05644): FedAvg of LoRA ``A``, ``B`` and any trained head, with reply checks.

    Sampling and messaging are Flower's :class:`~flwr.serverapp.strategy.FedAvg`. Aggregation differs:
    each reply is validated against the arrays sent this round and dropped (logged, counted) if it
    is an error or malformed, instead of aborting the round; the rest are averaged in float64.

    Subclasses change the maths by overriding :meth:`aggregate_arrays` (and, if clients return
    differently shaped arrays than they receive, :meth:`expected_reply`); :meth:`train_diagnostics`
    adds per-round metrics. ``self.global_arrays`` holds the arrays sent this round.

    Parameters
    ----------
    layout : Mapping[str, LoraPair] | None (default: None)
        Module -> LoRA factor keys; enables the ``dev_rel/<module>`` and ``dev_rel_mean`` metrics.
    weighted : bool (default: True)
        Weight clients by ``num-examples`` (``p_i = n_i / Σ n_j``); False gives ``p_i = 1/K`` as in
        the FedEx-LoRA and Fed-SB reference code.
    fraction_train, fraction_evaluate : float (default: 1.0)
        As in FedAvg.
    min_train_nodes, min_evaluate_nodes, min_available_nodes : int (default: 1)
        As in FedAvg, but defaulting to 1 (FedAvg: 2) so a 1-node federation does not wait forever.
    weighted_by_key, arrayrecord_key, configrecord_key : str
        Record keys; default to the Corolla contract (``num-examples``, ``arrays``, ``config``).
    train_metrics_aggr_fn, evaluate_metrics_aggr_fn : callable | None (default: None)
        ``(list[RecordDict], str) -> MetricRecord``; default to the contract's ``reduce_metrics``.
    seed : int (default: 0)
        The run's seed, for strategies that draw random numbers (FLoRA's re-initialised A).
    reply_policy : ReplyPolicy | None (default: None)
        The declared reply metrics and bounds (``validation.*``; ``docs/trust.md §1``); default: the
        core declarations with the default bounds.
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        *,
        layout: Mapping[str, LoraPair] | None = None,
        weighted: bool = True,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 1,
        min_evaluate_nodes: int = 1,
        min_available_nodes: int = 1,
        weighted_by_key: str = NUM_EXAMPLES,
        arrayrecord_key: str = ARRAYS,
        configrecord_key: str = CONFIG,
        train_metrics_aggr_fn: MetricsAggrFn | None = None,
        evaluate_metrics_aggr_fn: MetricsAggrFn | None = None,
        seed: int = 0,
        reply_policy: ReplyPolicy | None = None,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn or reduce_metrics,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn or reduce_metrics,
        )
        self.layout: dict[str, LoraPair] | None = dict(layout) if layout else None
        self.weighted = weighted
        self.seed = seed
        self.reply_policy = reply_policy or ReplyPolicy()
        self._sent_numpy: dict[str, np.ndarray] | None = None
        self.expected: Expected | None = None
        self.global_arrays: ArrayRecord | None = None
        self._dropped_train: list[DroppedReply] = []
        self._dropped_evaluate: list[DroppedReply] = []

    @property
    def last_dropped(self) -> list[DroppedReply]:
        """Train replies dropped in the latest ``aggregate_train``: ``(node_id, reason)``."""
        return self._dropped_train

    @property
    def last_dropped_evaluate(self) -> list[DroppedReply]:
        """Evaluate replies dropped in the latest ``aggregate_evaluate``: ``(node_id, reason)``."""
        return self._dropped_evaluate

    # --- extension points ---------------------------------------------------------------------
    def expected_reply(self, server_round: int, arrays: ArrayRecord) -> Expected:
        """Keys, shapes and dtypes a train reply MUST carry (default: exactly what was sent)."""
        return expected_from_arrays(arrays)

    def expected_for(self, reply: Message) -> Expected:
        """What ``reply`` MUST carry (default: :meth:`expected_reply` of the round; per-client ranks
        give each node its own shapes, ``docs/algorithms.md §18``). Raise :class:`MalformedReply` to drop it."""
        assert self.expected is not None
        return self.expected

    def aggregate_arrays(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Combine validated client arrays; FedIT: per-key weighted mean (float64 accumulation).

        ``weights`` has shape ``(K,)`` and sums to 1.
        """
        return weighted_mean(arrays_list, weights)

    def check_protocol(self, metrics: MetricRecord) -> None:
        """Strategy-specific checks of an already schema-checked reply's metrics (raise
        :class:`MalformedReply`); FedIT: none. FedEx-LoRA and FLoRA refuse a base version they never sent."""

    def train_diagnostics(
        self, server_round: int, arrays_list: Sequence[Mapping[str, np.ndarray]], weights: np.ndarray
    ) -> dict[str, float]:
        """Extra train metrics; FedIT: the relative deviation from exact aggregation per module.

        Modules whose form defines no deviation (ABBA's Hadamard update) are left out.
        """
        dev: dict[str, float] = {}
        for module, pair in (self.layout or {}).items():
            value = pair.factor_form.deviation(arrays_list, weights, pair)
            if value is not None:
                dev[module] = value
        if not dev:
            return {}
        out = {f"{DEV_REL_PREFIX}{module}": value for module, value in dev.items()}
        out[DEV_REL_MEAN] = float(np.mean(list(dev.values())))
        return out

    # --- Strategy API -------------------------------------------------------------------------
    def summary(self) -> None:
        """Log the FedAvg configuration plus FedIT's options."""
        super().summary()
        modules = len(self.layout) if self.layout else 0
        log(INFO, "\t└──> FedIT: weighted=%s, layout modules=%d", self.weighted, modules)

    def export_state(self) -> StrategyState:
        """State a resumed run needs beyond the global arrays (none for FedIT; see FedEx-LoRA)."""
        return StrategyState({}, {})

    def restore_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Inverse of :meth:`export_state`."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember what is sent (to validate replies), then sample and send as FedAvg does."""
        self.expected = self.expected_reply(server_round, arrays)
        if self.layout:
            check_layout(self.layout, {key: shape for key, (shape, _) in self.expected.items()})
        self.global_arrays = arrays
        self._sent_numpy = None
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate, drop and aggregate train replies.

        Returns ``(None, None)`` when there were no replies, and ``(None, MetricRecord)`` with
        ``clients = 0`` when every reply was dropped; ``Strategy.start`` then keeps the previous
        global arrays for the next round.
        """
        if self.expected is None:
            raise RuntimeError("FedIT.aggregate_train called before configure_train")
        replies = list(replies)
        self._dropped_train = []
        accepted: list[RecordDict] = []
        arrays_list: list[dict[str, np.ndarray]] = []
        num_examples: list[int] = []
        for msg in replies:
            try:
                arrays, n = check_reply(
                    _content(msg), self.expected_for(msg), weighted_by_key=self.weighted_by_key,
                    policy=self.reply_policy, sent=self._sent_arrays(),
                )
                self.check_protocol(msg.content.metric_records[METRICS])
            except MalformedReply as exc:
                self._drop(server_round, "aggregate_train", msg, exc, self._dropped_train)
                continue
            accepted.append(msg.content)
            arrays_list.append(arrays)
            num_examples.append(n)
        log(INFO, "aggregate_train: %d replies aggregated, %d dropped",
            len(accepted), len(self.last_dropped))
        if not replies:
            return None, None
        if not accepted:
            log(WARNING, "aggregate_train: round %d: every reply was dropped; the global arrays "
                "stay unchanged", server_round)
            return None, MetricRecord({CLIENTS: 0, DROPPED: len(self.last_dropped)})

        weights = aggregation_weights(num_examples, self.weighted)  # (K,)
        new = self.aggregate_arrays(server_round, arrays_list, weights)
        metrics = self.train_metrics_aggr_fn(accepted, self.weighted_by_key)
        metrics[CLIENTS] = len(accepted)
        metrics[DROPPED] = len(self.last_dropped)
        for name, value in self.train_diagnostics(server_round, arrays_list, weights).items():
            metrics[name] = value
        order = [k for k in self.expected if k in new] + [k for k in new if k not in self.expected]
        return ArrayRecord({key: Array(np.ascontiguousarray(new[key])) for key in order}), metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Reduce evaluate metrics, dropping error replies and ones without a valid MetricRecord.

        FedAvg would raise ``InconsistentMessageReplies`` and end the run on one bad reply.
        """
        replies = list(replies)
        self._dropped_evaluate = []
        accepted: list[RecordDict] = []
        for msg in replies:
            try:
                content = _content(msg)
                check_records(content, "evaluate")
                check_metrics(content, self.weighted_by_key, schema=self.reply_policy.schema, reply="evaluate")
                self.check_protocol(content.metric_records[METRICS])
            except MalformedReply as exc:
                self._drop(server_round, "aggregate_evaluate", msg, exc, self._dropped_evaluate)
                continue
            accepted.append(msg.content)
        if not replies:
            return None
        if not accepted:
            return MetricRecord({CLIENTS: 0, DROPPED: len(self.last_dropped_evaluate)})
        metrics = self.evaluate_metrics_aggr_fn(accepted, self.weighted_by_key)
        metrics[CLIENTS] = len(accepted)
        metrics[DROPPED] = len(self.last_dropped_evaluate)
        return metrics

    def _sent_arrays(self) -> dict[str, np.ndarray]:
        """The arrays sent this round, decoded once (the reference of every reply's update norm)."""
        if self._sent_numpy is None:
            sent = self.global_arrays if self.global_arrays is not None else ArrayRecord()
            self._sent_numpy = {key: array.numpy() for key, array in sent.items()}
        return self._sent_numpy

    @staticmethod
    def _drop(
        server_round: int, where: str, msg: Message, exc: MalformedReply, sink: list[DroppedReply]
    ) -> None:
        node_id = msg.metadata.src_node_id
        log(WARNING, "%s: round %d: dropping reply from node %d (%s): %s",
            where, server_round, node_id, exc.code, exc)
        sink.append(DroppedReply(node_id, str(exc), exc.code))


def _content(msg: Message) -> RecordDict:
    """The reply's content, or :class:`MalformedReply` for error replies and empty ones."""
    if msg.has_error():
        raise MalformedReply(f"error reply (code {msg.error.code}): {msg.error.reason}", "error-reply")
    if not msg.has_content():
        raise MalformedReply("reply has neither content nor error", "records")
    return msg.content
