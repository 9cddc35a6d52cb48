"""Per-client ranks through the real ServerApp/ClientApp on the in-process grid (tiny-llama; docs/algorithms.md §18).

Ranks 2, 4, 8 assigned round-robin over 4 nodes (partition 3 trains rank 2 again). FLoRA and FedEx-LoRA
stay exact with half the clients a round: the exported model is the base, the folded deltas every
node holds, and the mean of the last round's client updates, each at its own scale α / r_i. Every node
is sent and replies at its own rank, and the ledger shows it byte for byte.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from client.app import app as client_app
from client.base_sync import STATE_DELTA, STATE_META
from client.rank_pruning import STATE_RANK
from contract import parse_run_config
from server.adapter_setup import adapter_kind_problems
from server.app import run
from tests.server.test_exactness import MODULES, merged_weights, pristine
from tests.strategies.fake_grid import FakeGrid

RANKS = (2, 4, 8)
ALPHA = 8.0
RUN = {
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "adapter.rank": 4,
    "adapter.ranks": ",".join(map(str, RANKS)),
    "adapter.alpha": ALPHA,
    "train.local-steps": 2,
    "train.lr": 0.02,
    "eval.central": False,  # the checks read the messages and the export; central evaluation only costs time
    "run-name": "mixed",
}


def round_replies(grid: FakeGrid, rnd: int) -> list:
    """The round's train (instruction, reply) pairs."""
    return [(i, r) for i, r in grid.log if i.metadata.message_type == "train" and int(i.content["config"]["server-round"]) == rnd]


def client_update(reply, module: str) -> np.ndarray:
    a = reply.content["arrays"][f"{module}.lora_A.weight"].numpy().astype(np.float64)  # (r_i, n)
    b = reply.content["arrays"][f"{module}.lora_B.weight"].numpy().astype(np.float64)  # (m, r_i)
    return (ALPHA / a.shape[0]) * b @ a  # ΔW_i = s_i B_i A_i


def mean_update(replies: list, module: str) -> np.ndarray:
    n = np.array([r.content["metrics"]["num-examples"] for _, r in replies], dtype=np.float64)
    return sum(p * client_update(r, module) for p, (_, r) in zip(n / n.sum(), replies, strict=True))


@pytest.fixture(scope="module")
def w0() -> dict[str, np.ndarray]:
    return pristine()


@pytest.mark.parametrize("strategy", ["flora", "fedex"])
def test_mixed_ranks_stay_exact_with_partial_participation(strategy: str, tmp_path: Path, w0: dict[str, np.ndarray]) -> None:
    values = {**RUN, "strategy.name": strategy, "num-server-rounds": 2, "fraction-train": 0.5, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 4, run_config=values)
    run(grid, parse_run_config(values))
    rank_of = {node: RANKS[i % len(RANKS)] for i, node in enumerate(grid.node_ids)}
    trained = [i for i, _ in grid.log if i.metadata.message_type == "train"]
    assert len({rank_of[i.metadata.dst_node_id] for i in trained}) > 1  # ranks really differed
    for instruction, reply in grid.log:
        if instruction.metadata.message_type != "train":
            continue
        r = rank_of[instruction.metadata.dst_node_id]
        assert instruction.content["arrays"][f"{MODULES[0]}.lora_A.weight"].shape == (r, 256)
        assert reply.content["arrays"][f"{MODULES[0]}.lora_B.weight"].shape == (256, r)
        assert reply.content["metrics"]["adapter-rank"] == r
    # every node in a round starts from the same model: its adapter's contribution is the same at every rank
    for rnd in (1, 2):
        starts = [
            (ALPHA / r) * i.content["arrays"][f"{MODULES[0]}.lora_B.weight"].numpy().astype(np.float64)
            @ i.content["arrays"][f"{MODULES[0]}.lora_A.weight"].numpy().astype(np.float64)
            for i, _ in round_replies(grid, rnd)
            for r in [rank_of[i.metadata.dst_node_id]]
        ]
        for start in starts[1:]:
            np.testing.assert_allclose(start, starts[0], rtol=0, atol=1e-6 * max(np.abs(starts[0]).max(), 1e-3))
    # the global model after the last round = W0 + the base the last round's nodes held + their mean update
    last = round_replies(grid, 2)
    context = grid.contexts[last[0][0].metadata.dst_node_id]
    assert int(context.state[STATE_META]["base-version"]) == 1
    held = {k: v.numpy().astype(np.float64) for k, v in context.state[STATE_DELTA].items()}
    merged = merged_weights(tmp_path / "mixed")
    for m in MODULES:
        exact = mean_update(last, m)
        assert np.abs(exact).max() > 1e-5
        np.testing.assert_allclose(merged[m], w0[m] + held[m] + exact, rtol=0, atol=1e-4 * np.abs(exact).max())
    summary = json.loads((tmp_path / "mixed" / "summary.json").read_text())
    assert summary["client_ranks"] == {str(node): rank for node, rank in rank_of.items()}


def test_the_ledger_shows_each_rank_and_the_census(tmp_path: Path) -> None:
    values = {**RUN, "strategy.name": "flora", "num-server-rounds": 1, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 3, run_config=values)
    run(grid, parse_run_config(values))
    queries = [i for i, _ in grid.log if i.metadata.message_type == "query.adapter_rank"]
    assert sorted(q.metadata.dst_node_id for q in queries) == grid.node_ids  # each node asked once
    with (tmp_path / "mixed" / "ledger.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    up = {int(r["node"]): int(r["bytes"]) for r in rows if r["direction"] == "up" and r["phase"] == "train"}
    setup = [r for r in rows if r["phase"] == "setup"]
    assert len(setup) == 6  # one query and one answer per node
    rank_of = {node: RANKS[i] for i, node in enumerate(grid.node_ids)}
    # the uploads differ by exactly the factor elements: (r_i - r_j)·Σ(m + n) float32 values
    first = next(r for i, r in grid.log if i.metadata.message_type == "train")
    sum_mn = sum(  # Σ(m + n) over the adapted modules, from one reply's B: (m, r)
        first.content["arrays"][f"{m}.lora_B.weight"].shape[0] + first.content["arrays"][f"{m}.lora_A.weight"].shape[1]
        for m in MODULES
    )
    by_rank = {rank_of[node]: nbytes for node, nbytes in up.items()}
    assert by_rank[8] - by_rank[2] == (8 - 2) * sum_mn * 4
    assert by_rank[4] - by_rank[2] == (4 - 2) * sum_mn * 4


@pytest.mark.parametrize(("strategy", "reason"), [("fedsb", "r×r"), ("ffa", "frozen A")])
def test_strategies_that_need_one_rank_refuse_mixed_ranks_at_start(strategy: str, reason: str) -> None:
    problems = adapter_kind_problems(parse_run_config({**RUN, "strategy.name": strategy}))
    assert len(problems) == 1 and "adapter.ranks" in problems[0] and reason in problems[0]
    assert "flora" in problems[0]  # names the strategies that take mixed ranks


def test_mixed_ranks_need_plain_lora() -> None:
    problems = adapter_kind_problems(parse_run_config({**RUN, "strategy.name": "fedex", "adapter.name": "abba"}))
    assert len(problems) == 1 and "adapter.name" in problems[0] and "'lora'" in problems[0]


def test_one_rank_listed_for_everyone_is_not_mixed() -> None:
    assert adapter_kind_problems(parse_run_config({**RUN, "strategy.name": "fedsb", "adapter.ranks": "4"})) == []


def round_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]


def test_flexlora_sends_each_node_the_truncated_svd_of_the_exact_mean(tmp_path: Path) -> None:
    values = {**RUN, "strategy.name": "flexlora", "num-server-rounds": 2, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 3, run_config=values)
    run(grid, parse_run_config(values))
    first, second = round_replies(grid, 1), round_replies(grid, 2)
    rank_of = {node: RANKS[i] for i, node in enumerate(grid.node_ids)}
    rows = round_rows(tmp_path / "mixed")
    for m in MODULES:
        exact = mean_update(first, m)  # ΔW̄ of round 1: (m, n)
        u, sig, vt = np.linalg.svd(exact)
        for instruction, _ in second:
            r = rank_of[instruction.metadata.dst_node_id]
            a = instruction.content["arrays"][f"{m}.lora_A.weight"].numpy().astype(np.float64)
            b = instruction.content["arrays"][f"{m}.lora_B.weight"].numpy().astype(np.float64)
            assert a.shape == (r, exact.shape[1])
            best = (u[:, :r] * sig[:r]) @ vt[:r]  # the rank-r truncated SVD
            np.testing.assert_allclose((ALPHA / r) * b @ a, best, rtol=0, atol=1e-5 * sig[0])
    for r in RANKS:  # the truncation loss of each rank class, logged per round
        assert 0 <= rows[1][f"trunc_rel/r{r}"] < 1
    assert rows[1]["trunc_rel/r2"] > rows[1]["trunc_rel/r8"]


def test_hetlora_pads_truncates_and_logs_its_deviation(tmp_path: Path) -> None:
    values = {**RUN, "strategy.name": "hetlora", "num-server-rounds": 2, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 3, run_config=values)
    run(grid, parse_run_config(values))
    first, second = round_replies(grid, 1), round_replies(grid, 2)
    rank_of = {node: RANKS[i] for i, node in enumerate(grid.node_ids)}
    m = MODULES[0]
    updates = [client_update(r, m) for _, r in first]
    norms = np.array([np.linalg.norm(u) for u in updates])
    p = norms / norms.sum()  # the sparsity weights (arXiv 2401.06432 §3.2)
    n = updates[0].shape[1]
    b_pad, a_pad = np.zeros((updates[0].shape[0], 8)), np.zeros((8, n))
    for weight, (_, reply) in zip(p, first, strict=True):
        a = reply.content["arrays"][f"{m}.lora_A.weight"].numpy().astype(np.float64)
        b = reply.content["arrays"][f"{m}.lora_B.weight"].numpy().astype(np.float64)
        r = a.shape[0]
        b_pad[:, :r] += weight * b  # zero-padded to R = 8
        a_pad[:r] += weight * (ALPHA / r) * a
    for instruction, _ in second:
        r = rank_of[instruction.metadata.dst_node_id]
        a = instruction.content["arrays"][f"{m}.lora_A.weight"].numpy().astype(np.float64)
        b = instruction.content["arrays"][f"{m}.lora_B.weight"].numpy().astype(np.float64)
        assert a.shape == (r, n) and b.shape == (b_pad.shape[0], r)  # truncated to the node's rank
        np.testing.assert_allclose((ALPHA / r) * b @ a, b_pad[:, :r] @ a_pad[:r], rtol=0, atol=1e-5 * np.abs(b_pad @ a_pad).max())
    exact = sum(w * u for w, u in zip(p, updates, strict=True))
    dev = np.linalg.norm(exact - b_pad @ a_pad) / np.linalg.norm(exact)
    assert round_rows(tmp_path / "mixed")[1][f"dev_rel/{m}"] == pytest.approx(dev, rel=1e-3)


def test_hetlora_clients_prune_their_rank_and_the_server_follows(tmp_path: Path) -> None:
    """arXiv 2401.06432 §3.2 (docs/algorithms.md §19): round 1 records every tail, a strong λ fades it by round 2,
    the replies come back at r - ⌈γ r⌉, and round 3 sends every node only its pruned rank."""
    values = {**RUN, "strategy.name": "hetlora", "num-server-rounds": 3, "output-dir": str(tmp_path),
              "hetlora.prune-gamma": 0.5, "hetlora.prune-lambda": 1.0}
    grid = FakeGrid(client_app, 2, run_config=values)  # ranks 2 and 4
    run(grid, parse_run_config(values))
    a_key = f"{MODULES[0]}.lora_A.weight"
    reported = {rnd: {i.metadata.dst_node_id: r.content["metrics"]["adapter-rank"] for i, r in round_replies(grid, rnd)}
                for rnd in (1, 2, 3)}
    assert reported[1] == {node: RANKS[i] for i, node in enumerate(grid.node_ids)}  # nothing to compare with yet
    pruned = {node for node, r in reported[2].items() if r < reported[1][node]}
    assert pruned  # at least one client's rank dropped
    for node in pruned:
        assert reported[2][node] == max(reported[1][node] - -(-reported[1][node] // 2), 1)  # r - ⌈0.5 r⌉, floor 1
    for instruction, reply in round_replies(grid, 3):
        node = instruction.metadata.dst_node_id
        assert instruction.content["arrays"][a_key].shape[0] == reported[2][node]  # sent its pruned rank
        assert reply.content["arrays"][a_key].shape[0] == reported[3][node]
        assert grid.contexts[node].state.config_records[STATE_RANK]["rank"] == reported[3][node]  # kept in Context.state
    rows = round_rows(tmp_path / "mixed")
    assert rows[2]["rank_pruned"] == len(pruned) and rows[2]["rank_mean"] < rows[1]["rank_mean"]
    assert rows[2]["bytes_up"] < rows[1]["bytes_up"] and rows[3]["bytes_down"] < rows[2]["bytes_down"]
    summary = json.loads((tmp_path / "mixed" / "summary.json").read_text())
    assert summary["client_ranks"] == {str(node): r for node, r in reported[3].items()}
