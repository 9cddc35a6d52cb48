"""The outermost strategy wrapper: resumed round numbers, a deterministic reply order, timeouts.

- **Resume.** Flower's ``Strategy.start`` always counts rounds from 1. A run resumed after round
  ``t`` runs ``N − t`` rounds through ``start`` and this wrapper shifts every round number by ``t``,
  so the inner strategy, the meter, the clients' seeds and the run folder all see rounds ``t+1..N``.
- **Order.** Replies arrive in completion order, which varies between runs; float sums do not
  commute bit for bit. Replies are handed on sorted by the client's ``partition-id`` (then node id),
  so the same clients give the same aggregate, bit for bit, in any run (resume relies on it).
- **Timeouts.** Clients that were sent a train instruction but did not reply within
  ``round-timeout`` are counted per round in :attr:`timed_out`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from contract import METRICS, PARTITION_ID
from server.metering import Metered
from server.strategy_wrapper import StrategyWrapper

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


def _order_key(reply: Message) -> tuple[int, int]:
    """``(partition-id, node id)``; a reply without a readable partition id (an error, or malformed:
    replies are not validated yet) sorts first, by node id."""
    partition = -1
    if reply.has_content() and METRICS in reply.content.metric_records:
        value = reply.content.metric_records[METRICS].get(PARTITION_ID)
        if isinstance(value, int | float) and math.isfinite(value):
            partition = int(value)
    return partition, int(reply.metadata.src_node_id)


class RoundDriver(StrategyWrapper[Metered]):
    """Wrap the meter; rounds seen inside are ``start``'s rounds plus ``offset``."""

    wraps = Metered

    def __init__(self, meter: Metered, *, offset: int) -> None:
        super().__init__(meter)
        self.offset = offset
        self.timed_out: dict[int, int] = {}
        self._sent: dict[int, int] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Shift the round; remember how many clients were asked."""
        messages = list(self.inner.configure_train(server_round + self.offset, arrays, config, grid))
        self._sent[server_round + self.offset] = len(messages)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Shift the round, count the missing replies, hand the rest on in partition order."""
        replies = sorted(replies, key=_order_key)
        rnd = server_round + self.offset
        self.timed_out[rnd] = max(0, self._sent.get(rnd, 0) - len(replies))
        return self.inner.aggregate_train(rnd, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Shift the round."""
        return self.inner.configure_evaluate(server_round + self.offset, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Shift the round; partition order here too."""
        return self.inner.aggregate_evaluate(server_round + self.offset, sorted(replies, key=_order_key))

    def evaluate_fn(self, inner: EvaluateFn) -> EvaluateFn:
        """``inner`` with shifted rounds; a resumed run does not re-record its checkpoint round."""

        def shifted(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round == 0 and self.offset:
                return None
            return inner(server_round + self.offset, arrays)

        return shifted
