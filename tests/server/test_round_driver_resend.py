"""The round driver resends lost node state in the same round, in train and in evaluate (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

from client.tasks.arithmetic import ArithmeticWordProblems
from contract import ADAPTER_KIND, ARRAYS, CONFIG, FROZEN_FACTORS, METRICS, NODE_STATE_MISSING, NUM_EXAMPLES
from contract.frozen import FROZEN_CONFIRMED
from server.metering import DOWN, ByteLedger
from server.strategy_chain import wrap_strategy
from strategies.frozen_factors import FrozenFactorsStrategy
from tests.strategies.fake_grid import FakeGrid

HELD = "held-factors"


def node(msg: Message, context: Context) -> Message:
    """A node that keeps the factors in its state and says so when it has none (client.node_state)."""
    if FROZEN_FACTORS in msg.content:
        context.state[HELD] = ConfigRecord({"ok": 1})
    if HELD not in context.state:
        return Message(error=Error(NODE_STATE_MISSING, "no frozen factors"), reply_to=msg)
    metrics = MetricRecord({NUM_EXAMPLES: 4, FROZEN_CONFIRMED: 1, "partition-id": int(context.node_config["partition-id"])})
    content = RecordDict({METRICS: metrics})
    if msg.metadata.message_type == "train":
        content[ARRAYS] = msg.content[ARRAYS]
        if msg.content[CONFIG]["server-round"] == 3 and context.node_id == 101:
            del context.state[HELD]  # restarted after training, before evaluate
    return Message(content, reply_to=msg)


def test_lost_factors_are_resent_once_in_the_same_round_and_metered(tmp_path: Path) -> None:
    grid = FakeGrid(node, 2)
    strategy = FrozenFactorsStrategy(frozen_factors={"A": np.ones((2, 2), np.float32)}, frozen_hash="h")
    ledger = ByteLedger()
    chain = wrap_strategy(strategy, task=ArithmeticWordProblems(seed=0, max_length=32), folder=tmp_path, ledger=ledger, round_offset=0, broadcast=None)

    def after_round(server_round: int, arrays: ArrayRecord) -> None:
        if server_round == 1:
            grid.contexts[100].state = RecordDict()  # a restart between rounds

    chain.driver.start(
        grid=grid, initial_arrays=ArrayRecord({"B": Array(np.zeros((2, 2), np.float32))}), num_rounds=3,
        train_config=ConfigRecord({ADAPTER_KIND: "ffa"}), evaluate_config=ConfigRecord({ADAPTER_KIND: "ffa"}),
        evaluate_fn=after_round,  # type: ignore[arg-type]
    )
    assert chain.driver.resent == {2: 1, 3: 1}  # round 2 train (node 100), round 3 evaluate (node 101)
    for r in (1, 2, 3):
        assert (chain.meter.train_metrics[r]["clients"], chain.meter.train_metrics[r]["dropped"]) == (2, 0)
        assert chain.meter.evaluate_metrics[r]["clients"] == 2
        assert chain.driver.timed_out[r] == 0
    factors = [m for m, _ in grid.log if FROZEN_FACTORS in m.content]
    assert sorted((m.content[CONFIG]["server-round"], m.metadata.dst_node_id, m.metadata.message_type) for m in factors) == [
        (1, 100, "train"), (1, 101, "train"), (2, 100, "train"), (3, 101, "evaluate")
    ]
    down = [row for row in ledger.rows if row.direction == DOWN and row.phase == "setup"]
    assert sorted((row.round, row.node) for row in down) == [(1, 100), (1, 101), (2, 100), (3, 101)]  # every send metered
