"""HetLoRA's self-pruning on the server (arXiv 2401.06432 §3.2; docs/algorithms.md §19): a reported rank is
untrusted, a smaller one is recorded once its reply is accepted and the node is sent that rank from then
on; the ``hetlora.*`` keys are checked at start."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord

from contract import parse_run_config
from contract.rank_pruning import PRUNE_GAMMA, PRUNE_MIN_RANK
from contract.ranks import ADAPTER_RANK
from strategies.client_ranks import ClientRanks
from strategies.hetlora import HetLoRA
from strategies.hetlora_pruning import RANK_MEAN, RANK_PRUNED, HetLoRAConfig
from strategies.layout import LoraPair
from strategies.registry import needs_rank_census, strategy_config_problems
from tests.strategies.fake_grid import FakeGrid
from tests.strategies.helpers import make_reply, to_record

M, N, ALPHA = 12, 10, 8.0
A_KEY, B_KEY = "q.lora_A.weight", "q.lora_B.weight"
LAYOUT = {"q": LoraPair(A_KEY, B_KEY, ALPHA / 8)}
PRUNING = HetLoRAConfig(prune_gamma=0.5, prune_lambda=0.1, min_rank=2)


def factors(rank: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {A_KEY: rng.normal(size=(rank, N)).astype(np.float32), B_KEY: rng.normal(size=(M, rank)).astype(np.float32)}


def federation(section: HetLoRAConfig = PRUNING) -> tuple[HetLoRA, FakeGrid]:
    grid = FakeGrid(lambda msg, ctx: msg, 2)  # nodes 100 (rank 4) and 101 (rank 8); never called here
    ranks = ClientRanks((4, 8), ALPHA, by_node={100: 4, 101: 8})
    return HetLoRA(layout=LAYOUT, client_ranks=ranks, section=section, min_available_nodes=2, min_train_nodes=2), grid


def sent(strategy: HetLoRA, grid: FakeGrid, server_round: int, arrays: dict[str, np.ndarray]) -> dict:
    messages = strategy.configure_train(server_round, to_record(arrays), ConfigRecord({"server-round": server_round}), grid)
    return {m.metadata.dst_node_id: m for m in messages}


def reply(node: int, rank: int, seed: int, reported: object = None) -> object:
    return make_reply(factors(rank, seed), metrics={ADAPTER_RANK: rank if reported is None else reported}, node_id=node)


def test_a_smaller_reported_rank_is_accepted_recorded_and_sent_from_then_on() -> None:
    strategy, grid = federation()
    first = sent(strategy, grid, 1, factors(8, 0))
    assert first[101].content["config"][PRUNE_GAMMA] == 0.5 and first[101].content["config"][PRUNE_MIN_RANK] == 2
    assert first[100].content["arrays"][A_KEY].shape == (4, N) and first[101].content["arrays"][A_KEY].shape == (8, N)
    arrays, metrics = strategy.aggregate_train(1, [reply(100, 4, 1), reply(101, 4, 2)])  # node 101 pruned 8 -> 4
    assert arrays is not None and metrics is not None
    assert strategy.last_dropped == []
    assert arrays[A_KEY].shape == (8, N)  # the global adapter keeps the largest rank
    assert metrics[RANK_PRUNED] == 1 and metrics[RANK_MEAN] == 4.0
    assert strategy.mixed is not None and strategy.mixed.ranks.of(101) == 4
    second = sent(strategy, grid, 2, {k: v.numpy() for k, v in arrays.items()})
    a, b = second[101].content["arrays"][A_KEY].numpy(), second[101].content["arrays"][B_KEY].numpy()
    assert a.shape == (4, N) and b.shape == (M, 4)  # its first 4 components, as the rank-4 node gets
    g_a, g_b = arrays[A_KEY].numpy().astype(np.float64), arrays[B_KEY].numpy().astype(np.float64)
    np.testing.assert_allclose((ALPHA / 4) * b.astype(np.float64) @ a, (ALPHA / 8) * g_b[:, :4] @ g_a[:4], rtol=1e-5)
    sizes = {node: sum(v.numpy().nbytes for v in m.content["arrays"].values()) for node, m in second.items()}
    assert sizes[101] == sizes[100] == 4 * (M + N) * 4  # the pruned node's download shrank to rank 4 (float32)


@pytest.mark.parametrize(("reported", "rank"), [(16, 16), (1, 1), (2.0, 4), ([4], 4)])
def test_a_rank_above_the_nodes_below_the_floor_or_not_an_integer_is_dropped(reported: object, rank: int) -> None:
    strategy, grid = federation()
    sent(strategy, grid, 1, factors(8, 0))
    _, metrics = strategy.aggregate_train(1, [reply(100, 4, 1), reply(101, rank, 2, reported=reported)])
    assert [(d.node_id, d.code) for d in strategy.last_dropped] == [(101, "adapter-rank")]
    assert strategy.mixed is not None and strategy.mixed.ranks.of(101) == 8  # nothing recorded
    assert metrics is not None and metrics[RANK_PRUNED] == 0


def test_arrays_of_another_rank_than_the_reported_one_are_dropped() -> None:
    strategy, grid = federation()
    sent(strategy, grid, 1, factors(8, 0))
    strategy.aggregate_train(1, [reply(100, 4, 1), reply(101, 8, 2, reported=4)])
    assert [(d.node_id, d.code) for d in strategy.last_dropped] == [(101, "array-header")]
    assert strategy.mixed is not None and strategy.mixed.ranks.of(101) == 8


def test_without_pruning_a_smaller_rank_is_still_refused() -> None:
    strategy, grid = federation(HetLoRAConfig())
    first = sent(strategy, grid, 1, factors(8, 0))
    assert PRUNE_GAMMA not in first[100].content["config"]
    _, metrics = strategy.aggregate_train(1, [reply(100, 4, 1), reply(101, 4, 2)])
    assert [(d.node_id, d.code) for d in strategy.last_dropped] == [(101, "adapter-rank")]
    assert metrics is not None and RANK_PRUNED not in metrics and metrics[RANK_MEAN] == 6.0


def test_pruning_needs_the_rank_census() -> None:
    with pytest.raises(ValueError, match="census"):
        HetLoRA(layout=LAYOUT, section=PRUNING)


BASE = {"strategy.name": "hetlora", "adapter.rank": 8}


def test_the_hetlora_keys_are_checked_at_start() -> None:
    assert strategy_config_problems(parse_run_config({**BASE, "hetlora.prune-gamma": 0.25})) == []
    (other,) = strategy_config_problems(parse_run_config({**BASE, "strategy.name": "flexlora", "hetlora.prune-gamma": 0.25}))
    assert "hetlora.prune-gamma = 0.25" in other and "'flexlora'" in other
    (floor,) = strategy_config_problems(parse_run_config({**BASE, "hetlora.prune-gamma": 0.25, "hetlora.min-rank": 8}))
    assert "hetlora.min-rank" in floor and "never prune" in floor
    private = {**BASE, "hetlora.prune-gamma": 0.25, "privacy.enabled": True, "privacy.noise-multiplier": 1.0}
    (dp,) = strategy_config_problems(parse_run_config(private))
    assert "hetlora.prune-lambda" in dp and "per-example" in dp
    assert strategy_config_problems(parse_run_config({**private, "hetlora.prune-lambda": 0.0})) == []
    with pytest.raises(ValueError, match="hetlora.prune-gamma"):
        parse_run_config({**BASE, "hetlora.prune-gamma": 1.0})


def test_pruning_turns_the_rank_census_on_even_with_one_rank_for_all() -> None:
    assert not needs_rank_census(parse_run_config(BASE))
    assert needs_rank_census(parse_run_config({**BASE, "hetlora.prune-gamma": 0.25}))
