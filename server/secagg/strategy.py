"""A linear strategy whose train rounds go through SecAgg+: it only ever sees the decoded aggregate.

:class:`SecAggStrategy` is a :class:`~strategies.protocol.CorollaStrategy` holding the real one.
Per train round it

1. asks the strategy for the round's train messages (its sampling, its records), runs the SecAgg+
   round with them (:class:`~server.secagg.driver.SecAggDriver`; the train content travels in the
   collect stage) and returns no messages to Flower's loop, so nothing else is sent;
2. in ``aggregate_train``, hands the strategy one *receipt* per surviving client, every receipt
   holding the same decoded aggregate: ``global + Σ w_i·u_i / Σ w_i`` (the sent arrays' dtypes),
   ``num-examples`` shares summing to ``Σ w_i``, the decoded mean ``train_loss`` and the client's
   own plaintext protocol metrics (frozen-factor confirmation, base version, ε). The strategy's
   weighted mean of identical receipts is the aggregate itself, and its per-node bookkeeping
   (which nodes hold the frozen factors; the maximum ε) keeps working. No receipt carries one
   client's update, weight or loss.

Metrics that need individual updates (FedIT's ``dev_rel/*``) are removed: the server cannot know
them. A round SecAgg drops (fewer survivors than the threshold) keeps the global arrays; the run
goes on. Evaluate rounds are the strategy's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from contract import ARRAYS, CLIENTS, DEV_REL_MEAN, DEV_REL_PREFIX, DROPPED, METRICS, NUM_EXAMPLES, TRAIN_LOSS
from server.secagg.driver import SecAggDriver
from server.secagg.outcome import RoundDropped, SecAggOutcome, SecAggSum
from server.epsilon_ledger import EpsilonLedger
from strategies.protocol import CorollaStrategy, DroppedReply, StrategyState

ROUND_DROPPED = "secagg_round_dropped"  # train metric: 1 when SecAgg could not decode the round
REJECTED_SHARES = "secagg_rejected_shares"  # train metric: unmask-stage shares the server discarded


class SecAggStrategy(CorollaStrategy):
    """Wrap a linear strategy so that it aggregates only SecAgg+ sums (module docstring)."""

    def __init__(self, inner: CorollaStrategy, driver: SecAggDriver, *, epsilon: EpsilonLedger | None = None) -> None:
        self.inner = inner
        self.driver = driver
        self.epsilon = epsilon  # a DP run's ε ledger: the round driver never sees SecAgg's messages
        self._pending: dict[int, tuple[ArrayRecord, dict[int, Message], SecAggOutcome]] = {}
        self._dropped: list[DroppedReply] = []

    # --- train: the protocol ---------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Run the SecAgg+ round for the strategy's train messages; Flower's loop sends nothing."""
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        if self.epsilon is not None:  # docs/privacy.md §10, §11: each node's reported ε; who may spend ε
            messages = self.epsilon.stamp(messages)
            self.epsilon.instructed(m.metadata.dst_node_id for m in messages)
        if messages:
            outcome = self.driver.run_round(grid, server_round, messages)
            if isinstance(outcome, RoundDropped) and len(messages) < 2:
                raise ValueError(f"secure aggregation needs at least 2 clients per round, {outcome}; "
                                 "set `min-train-nodes` >= 2 (and `fraction-train` high enough) or `secagg.enabled = false`")
            self._pending[server_round] = (arrays, {int(m.metadata.dst_node_id): m for m in messages}, outcome)
        return []

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Hand the strategy the receipts of the decoded sum (or report the dropped round)."""
        pending = self._pending.pop(server_round, None)
        if pending is None:
            self._dropped = []
            return self.inner.aggregate_train(server_round, list(replies))
        sent, messages, outcome = pending
        self._dropped = [DroppedReply(d.node, f"secagg {d.stage}: {d.reason}", f"secagg-{d.stage}") for d in outcome.dropped]
        if isinstance(outcome, RoundDropped):
            log(WARNING, "aggregate_train: %s; the global arrays stay unchanged", outcome)
            return None, MetricRecord({CLIENTS: 0, DROPPED: len(self._dropped), ROUND_DROPPED: 1})
        survivors = receipts(outcome, sent, messages)
        arrays, metrics = self.inner.aggregate_train(server_round, survivors)
        self._dropped += list(self.inner.last_dropped)
        if self.epsilon is not None:  # ε travels in plaintext (PUBLIC_METRICS); nodes dropped at any stage stay charged
            self.epsilon.settle(survivors, dropped={d.node_id for d in self.inner.last_dropped})
        if metrics is not None:
            for name in [n for n in metrics if n.startswith(DEV_REL_PREFIX) or n == DEV_REL_MEAN]:
                del metrics[name]
            metrics[DROPPED] = len(self._dropped)
            if outcome.rejected_shares:
                metrics[REJECTED_SHARES] = len(outcome.rejected_shares)
        return arrays, metrics

    # --- everything else is the strategy's ----------------------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Delegate."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Delegate."""
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        """The strategy's summary, then SecAgg's parameters."""
        self.inner.summary()
        c = self.driver.config
        log(INFO, "\t└──> SecAgg+: threshold=%s, num-shares=%s, clip-range=%s, bits=%d, max-weight=%d",
            c.threshold, c.num_shares, c.clip_range, c.quantization_bits, c.max_weight)

    @property
    def last_dropped(self) -> Sequence[DroppedReply]:
        """SecAgg's dropouts of the latest train round (and any receipt the strategy refused)."""
        return list(self._dropped)

    @property
    def last_dropped_evaluate(self) -> Sequence[DroppedReply]:
        """The strategy's."""
        return self.inner.last_dropped_evaluate

    def export_state(self) -> StrategyState:
        """The strategy's."""
        return self.inner.export_state()

    def restore_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """The strategy's."""
        self.inner.restore_state(arrays, meta)

    def base_deltas(self) -> dict[str, np.ndarray] | None:
        """The strategy's (``None`` for every linear strategy so far)."""
        return self.inner.base_deltas()


def receipts(outcome: SecAggSum, sent: ArrayRecord, messages: Mapping[int, Message]) -> list[Message]:
    """One reply per survivor, each holding the decoded aggregate (module docstring)."""
    mean = outcome.mean_update()
    aggregate = ArrayRecord({
        key: Array((array.numpy().astype(np.float64) + mean[key]).astype(array.numpy().dtype))
        for key, array in sent.items()
    })
    loss = outcome.mean_metrics().get(TRAIN_LOSS)
    k = len(outcome.survivors)
    out = []
    for i, node in enumerate(outcome.survivors):
        share = outcome.weight // k + (1 if i < outcome.weight % k else 0)  # Σ shares = Σ w_i, each >= 1
        metrics: dict[str, Any] = {**outcome.public.get(node, {}), NUM_EXAMPLES: share}
        if loss is not None:
            metrics[TRAIN_LOSS] = loss
        content = RecordDict({ARRAYS: aggregate, METRICS: MetricRecord(metrics)})
        out.append(Message(content=content, reply_to=messages[node]))
    return out
