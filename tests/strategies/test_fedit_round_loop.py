"""End-to-end: Flower's Strategy.start round loop driving FedIT over the in-process FakeGrid."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from contract import (
    ARRAYS,
    CLIENTS,
    CONFIG,
    DEV_REL_MEAN,
    DROPPED,
    EVAL_LOSS,
    METRICS,
    NUM_EXAMPLES,
    SERVER_ROUND,
    TRAIN_LOSS,
    train_reply_content,
)
from strategies.fedit import FedIT
from tests.strategies.fake_grid import FakeGrid
from tests.strategies.helpers import from_record, lora_arrays, lora_layout, to_record

MODULES = {"q": (6, 5), "v": (4, 5)}
RNG = np.random.default_rng(42)
G0 = lora_arrays(RNG, MODULES, 2)
DELTAS = [lora_arrays(RNG, MODULES, 2) for _ in range(3)]  # per partition
N_EXAMPLES = [10, 5, 30]  # per partition; partition 1 returns garbage


def _client(message: Message, context: Context) -> Message:
    """Partition 0 and 2 add a fixed delta; partition 1 returns NaN arrays."""
    pid = int(context.node_config["partition-id"])
    seen = context.state.get("seen", MetricRecord({"rounds": 0}))
    seen["rounds"] = int(seen["rounds"]) + 1  # type: ignore[call-overload]
    context.state["seen"] = seen
    if message.metadata.message_type == MessageType.EVALUATE:
        metrics = MetricRecord({NUM_EXAMPLES: N_EXAMPLES[pid], EVAL_LOSS: float(pid)})
        return Message(RecordDict({METRICS: metrics}), reply_to=message)
    g = from_record(message.content[ARRAYS])
    if pid == 1:
        new = {k: np.full_like(v, np.nan) for k, v in g.items()}
    else:
        new = {k: (v + DELTAS[pid][k]).astype(v.dtype) for k, v in g.items()}
    content = train_reply_content(to_record(new), N_EXAMPLES[pid], {TRAIN_LOSS: float(pid)})
    return Message(content, reply_to=message)


def _fedit_step(g: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Independent expectation: weighted mean over partitions 0 and 2 only."""
    w0, w2 = N_EXAMPLES[0] / 40, N_EXAMPLES[2] / 40
    return {
        k: (
            w0 * (v + DELTAS[0][k]).astype(np.float32).astype(np.float64)
            + w2 * (v + DELTAS[2][k]).astype(np.float32).astype(np.float64)
        ).astype(np.float32)
        for k, v in g.items()
    }


def test_two_rounds_with_one_garbage_client() -> None:
    # Prepare
    grid = FakeGrid(_client, num_nodes=3)
    strategy = FedIT(layout=lora_layout(MODULES), fraction_evaluate=1.0)
    calls: list[tuple[int, dict[str, np.ndarray], int]] = []

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        calls.append((server_round, from_record(arrays), len(grid.log)))
        return MetricRecord({"central": float(server_round)})

    # Execute
    result = strategy.start(grid, to_record(G0), num_rounds=2, evaluate_fn=evaluate_fn)

    # Assert: arrays
    g1 = _fedit_step(G0)
    g2 = _fedit_step(g1)
    for key, value in from_record(result.arrays).items():
        np.testing.assert_allclose(value, g2[key], rtol=1e-6, atol=1e-6)
    # Assert: the loop continued and counted the garbage client each round
    for rnd in (1, 2):
        train = result.train_metrics_clientapp[rnd]
        assert train[CLIENTS] == 2 and train[DROPPED] == 1
        assert train[NUM_EXAMPLES] == 40
        assert train[TRAIN_LOSS] == pytest.approx((0 * 10 + 2 * 30) / 40)
        assert train[DEV_REL_MEAN] > 0
        evaluate = result.evaluate_metrics_clientapp[rnd]
        assert evaluate[EVAL_LOSS] == pytest.approx((0 * 10 + 1 * 5 + 2 * 30) / 45)
    assert [d.node_id for d in strategy.last_dropped] == [101]
    # Assert: order within a round is train -> aggregate -> federated evaluate -> evaluate_fn
    assert [c[0] for c in calls] == [0, 1, 2]
    assert [c[2] for c in calls] == [0, 6, 12]  # 3 train + 3 evaluate messages per round
    for (_, seen, _), want in zip(calls, [G0, g1, g2], strict=True):
        for key in want:
            np.testing.assert_allclose(seen[key], want[key], rtol=1e-6, atol=1e-6)
    kinds = [ins.metadata.message_type for ins, _ in grid.log]
    assert kinds == [MessageType.TRAIN] * 3 + [MessageType.EVALUATE] * 3 + [MessageType.TRAIN] * 3 + [
        MessageType.EVALUATE
    ] * 3
    # evaluate instructions carry the freshly aggregated arrays and the round number
    ins_eval_round1 = grid.log[3][0]
    assert ins_eval_round1.content[CONFIG][SERVER_ROUND] == 1
    np.testing.assert_allclose(from_record(ins_eval_round1.content[ARRAYS])["q.lora_A.weight"], g1["q.lora_A.weight"])
    # per-node state persisted across rounds (2 rounds x train + evaluate)
    assert all(ctx.state["seen"]["rounds"] == 4 for ctx in grid.contexts.values())


def test_round_where_every_client_fails_keeps_the_previous_arrays() -> None:
    def flaky(message: Message, context: Context) -> Message:
        if message.content[CONFIG][SERVER_ROUND] == 1:
            raise RuntimeError("client crashed")
        return _client(message, context)

    grid = FakeGrid(flaky, num_nodes=3)
    strategy = FedIT(fraction_evaluate=0.0)
    result = strategy.start(grid, to_record(G0), num_rounds=2)

    assert result.train_metrics_clientapp[1] == MetricRecord({CLIENTS: 0, DROPPED: 3})
    assert all(reply.has_error() and "client crashed" in reply.error.reason for _, reply in grid.log[:3])
    assert [d.node_id for d in strategy.last_dropped] == [101]  # round 2: only the garbage client
    # round 2 trained from the unchanged initial arrays
    for key, value in from_record(result.arrays).items():
        np.testing.assert_allclose(value, _fedit_step(G0)[key], rtol=1e-6, atol=1e-6)
    assert result.evaluate_metrics_clientapp == {}  # fraction_evaluate=0: nothing sent, None returned


def test_result_arrays_stay_empty_if_no_round_ever_aggregates() -> None:
    """Flower's Result.arrays is only set by a successful aggregation (lead: fall back to initial)."""
    grid = FakeGrid(lambda m, c: (_ for _ in ()).throw(RuntimeError("down")), num_nodes=2)
    result = FedIT(fraction_evaluate=0.0).start(grid, to_record(G0), num_rounds=1)
    assert len(result.arrays) == 0
    assert result.train_metrics_clientapp[1][DROPPED] == 2


def test_a_real_clientapp_in_a_one_node_federation() -> None:
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        g = from_record(message.content[ARRAYS])
        new = {k: v + np.float32(message.content[CONFIG]["lr"]) for k, v in g.items()}
        return Message(train_reply_content(to_record(new), 8), reply_to=message)

    grid = FakeGrid(app, num_nodes=1)
    result = FedIT(fraction_evaluate=0.0).start(
        grid, to_record(G0), num_rounds=3, train_config=ConfigRecord({"lr": 0.5})
    )
    for key, value in from_record(result.arrays).items():
        np.testing.assert_allclose(value, G0[key] + np.float32(1.5), rtol=1e-6)
    assert all(result.train_metrics_clientapp[r][CLIENTS] == 1 for r in (1, 2, 3))
