"""The outermost strategy wrapper: resumed round numbers, a deterministic reply order, timeouts.

- **Resume.** Flower's ``Strategy.start`` always counts rounds from 1. A run resumed after round
  ``t`` runs ``N − t`` rounds through ``start`` and this wrapper shifts every round number by ``t``,
  so the inner strategy, the meter, the clients' seeds and the run folder all see rounds ``t+1..N``.
- **Order.** Replies arrive in completion order, which varies between runs; float sums do not
  commute bit for bit. Replies are handed on sorted by the client's ``partition-id`` (then node id),
  so the same clients give the same aggregate, bit for bit, in any run (resume relies on it). The
  partition id is read through its declaration (``contract.reply_schema.partition_of``): a reply
  whose id is unusable (missing, NaN, inf, a list, negative, fractional) sorts first, by the node
  id the server assigned, and its reply is then judged (and dropped) by the strategy.
- **Timeouts.** Clients that were sent a train instruction but did not reply within
  ``round-timeout`` are counted per round in :attr:`timed_out`.
- **Lost node state.** A node that replies ``NODE_STATE_MISSING`` (a restarted SuperNode without
  its frozen factors or base version) is sent the strategy's :meth:`resync` of its message once, in
  the same round, and that reply replaces the error (``docs/privacy.md §11``). The resend is metered;
  it may lengthen the round by up to one more ``round-timeout``.
- **ε.** In a DP run the :class:`~server.epsilon_ledger.EpsilonLedger` learns which nodes were
  instructed and what they replied, and every train message carries the ε its node last reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from logging import WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from contract import METRICS, NODE_STATE_MISSING, partition_of
from server.epsilon_ledger import EpsilonLedger
from server.metering import DOWN, Metered
from server.rank_census import RankCensus
from server.strategy_wrapper import StrategyWrapper
from strategies.protocol import DroppedReply

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]
Resync = Callable[[Message], Message | None]


def _order_key(reply: Message) -> tuple[int, int]:
    """``(partition-id, node id)``; a reply without a usable partition id (an error reply, or one the
    strategy will drop) sorts first, by the node id the server assigned."""
    partition = None
    if reply.has_content() and METRICS in reply.content.metric_records:
        partition = partition_of(reply.content.metric_records[METRICS])
    return (-1 if partition is None else partition), int(reply.metadata.src_node_id)


class RoundDriver(StrategyWrapper[Metered]):
    """Wrap the meter; rounds seen inside are ``start``'s rounds plus ``offset``."""

    wraps = Metered

    def __init__(
        self, meter: Metered, *, offset: int, resync: Resync | None = None, epsilon: EpsilonLedger | None = None,
        dropped: Callable[[], Sequence[DroppedReply]] | None = None, census: RankCensus | None = None,
    ) -> None:
        super().__init__(meter)
        self.offset = offset
        self.resync = resync
        self.epsilon = epsilon
        self.dropped = dropped
        self.census = census  # per-client ranks: ask nodes that joined since (docs/algorithms.md §18)
        self.timed_out: dict[int, int] = {}
        self.resent: dict[int, int] = {}
        self._sent: dict[int, int] = {}
        self._messages: dict[int, Message] = {}  # this phase's messages by node, for a resend
        self._grid: Grid | None = None
        self._timeout: float | None = None

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn: EvaluateFn | None = None) -> Result:
        """Flower's loop; the grid and the timeout are kept for resends."""
        self._grid, self._timeout = grid, timeout
        return super().start(grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config, evaluate_fn)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Shift the round; remember how many clients were asked; stamp each node's reported ε."""
        if self.census is not None:
            self.census.update(grid, server_round + self.offset)
        messages = list(self.inner.configure_train(server_round + self.offset, arrays, config, grid))
        if self.epsilon is not None:
            messages = self.epsilon.stamp(messages)
            self.epsilon.instructed(m.metadata.dst_node_id for m in messages)
        self._sent[server_round + self.offset] = len(messages)
        self._messages = {m.metadata.dst_node_id: m for m in messages}
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Shift the round, resend lost state, count the missing replies, hand the rest on in partition order."""
        rnd = server_round + self.offset
        replies = sorted(self._resend(rnd, list(replies), phase="train"), key=_order_key)
        self.timed_out[rnd] = max(0, self._sent.get(rnd, 0) - len(replies))
        result = self.inner.aggregate_train(rnd, replies)
        if self.epsilon is not None:
            dropped = {d.node_id for d in self.dropped()} if self.dropped is not None else set()
            self.epsilon.settle(replies, dropped=dropped)
        return result

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Shift the round."""
        if self.census is not None:
            self.census.update(grid, server_round + self.offset)
        messages = list(self.inner.configure_evaluate(server_round + self.offset, arrays, config, grid))
        self._messages = {m.metadata.dst_node_id: m for m in messages}
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Shift the round, resend lost state; partition order here too."""
        rnd = server_round + self.offset
        replies = self._resend(rnd, list(replies), phase="evaluate")
        return self.inner.aggregate_evaluate(rnd, sorted(replies, key=_order_key))

    def _resend(self, server_round: int, replies: list[Message], *, phase: str) -> list[Message]:
        """Replace each ``NODE_STATE_MISSING`` reply by the reply to the strategy's resync of its message."""
        lost = [r for r in replies if r.has_error() and r.error.code == NODE_STATE_MISSING]
        if not lost or self.resync is None or self._grid is None:
            return replies
        resent, replaced = [], set()
        for reply in lost:
            original = self._messages.get(reply.metadata.src_node_id)
            message = self.resync(original) if original is not None else None
            if message is not None:
                resent.append(message)
                replaced.add(id(reply))
        if not resent:
            return replies
        log(WARNING, "round %d %s: %d node(s) lost their state (restarted?); resending it", server_round, phase, len(resent))
        self.inner.meter(resent, server_round=server_round, direction=DOWN, phase=phase)
        self.resent[server_round] = self.resent.get(server_round, 0) + len(resent)
        again = list(self._grid.send_and_receive(resent, timeout=self._timeout))
        return [r for r in replies if id(r) not in replaced] + again

    def evaluate_fn(self, inner: EvaluateFn) -> EvaluateFn:
        """``inner`` with shifted rounds; a resumed run does not re-record its checkpoint round."""

        def shifted(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round == 0 and self.offset:
                return None
            return inner(server_round + self.offset, arrays)

        return shifted
