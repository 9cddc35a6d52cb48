"""A node restart between rounds, in process: the run goes on exactly as if the node had never restarted.

Flower 1.42 keeps a SuperNode's ``Context.state`` in memory, and a deployed ClientApp runs each
message in a fresh process. A restart is therefore simulated by emptying the node's ``Context.state``
and the process-cached worker's installed frozen factors just before its next train message. The
node's DP accountant history survives on its disk (``state-dir``), the server resends the frozen
factors (Fed-SB) or the cumulative base delta (FedEx-LoRA) in the same round, and the global adapter,
the strategy state and ε come out bit for bit equal to the run without a restart
(``docs/privacy.md §11``). Without its history on disk the node refuses to train and its ε stays
in the server's ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict

import client.worker
from client.app import app as client_app
from client.privacy_history import history_path
from contract import (
    BASE_DELTA,
    BASE_FROM_VERSION,
    CONFIG,
    EPSILON,
    FROZEN_FACTORS,
    METRICS,
    NODE_STATE_MISSING,
    PRIVACY_HISTORY_MISSING,
    parse_run_config,
)
from server.app import run
from server.checkpoint import Checkpoint
from server.run_folder import read_rounds
from tests.server.conftest import TINY_RUN
from tests.strategies.fake_grid import FakeGrid

RESTARTED = 101  # partition 1
DP_RUN = {
    **TINY_RUN,
    "num-server-rounds": 3,
    "train.local-steps": 2,
    "train.batch-size": 8,
    "eval.max-examples": 16,
    "privacy.enabled": True,
    "privacy.noise-multiplier": 0.8,
}


def restarting(before_round: int, *, lose_history: bool = False) -> Callable[[Message, Context], Message]:
    """The real ClientApp, with node ``RESTARTED`` restarted just before its train message of ``before_round``."""
    done = False

    def handler(msg: Message, context: Context) -> Message:
        nonlocal done
        if (not done and context.node_id == RESTARTED and msg.metadata.message_type == "train"
                and msg.content[CONFIG]["server-round"] == before_round):
            done = True
            context.state = RecordDict()  # what a SuperNode restart leaves of Context.state
            for worker in client.worker._CACHE.values():
                worker.frozen_hash = None  # a fresh ClientApp process holds no installed factors
            if lose_history:
                history_path(context, int(context.node_config["partition-id"])).unlink()
        return client_app(msg, context)

    return handler


def _run(tmp: Path, strategy: str, handler: Any = client_app) -> tuple[FakeGrid, Path]:
    values = {**DP_RUN, "strategy.name": strategy, "output-dir": str(tmp)}
    grid = FakeGrid(handler, 3, run_config=values)
    return grid, run(grid, parse_run_config(values)).path


def _train_log(grid: FakeGrid, node: int, server_round: int) -> list[tuple[Message, Message]]:
    return [
        (instruction, reply) for instruction, reply in grid.log
        if instruction.metadata.dst_node_id == node and instruction.metadata.message_type == "train"
        and instruction.content[CONFIG]["server-round"] == server_round
    ]


# FedEx-LoRA nodes all start round 2 from the pristine base (version 0, nothing to lose); from round 3
# on they hold version 1 and are sent only the delta from it.
@pytest.mark.parametrize(("strategy", "at"), [("fedsb", 2), ("fedex", 3)])
def test_a_restarted_node_gets_its_state_back_and_the_run_is_bit_identical(strategy: str, at: int, tmp_path: Path) -> None:
    grid0, plain = _run(tmp_path / "plain", strategy)
    grid1, restarted = _run(tmp_path / "restarted", strategy, restarting(at))

    # the node says what it lost; the server resends it in the same round; the node trains on
    (first, lost), (again, reply) = _train_log(grid1, RESTARTED, at)
    assert lost.has_error() and lost.error.code == NODE_STATE_MISSING
    if strategy == "fedsb":
        assert FROZEN_FACTORS not in first.content and FROZEN_FACTORS in again.content
    else:
        assert first.content[CONFIG][BASE_FROM_VERSION] == 1  # the last round's delta only
        assert again.content[CONFIG][BASE_FROM_VERSION] == 0 and BASE_DELTA in again.content
    assert reply.has_content()
    # its accountant came back from disk: the same ε as in the run without a restart
    (_, plain_reply), = _train_log(grid0, RESTARTED, at)
    assert reply.content[METRICS][EPSILON] == plain_reply.content[METRICS][EPSILON]
    if strategy == "fedsb":
        (round3, _), = _train_log(grid1, RESTARTED, 3)  # confirmed again: the factors are not sent again
        assert FROZEN_FACTORS not in round3.content

    a, b = Checkpoint.load(plain), Checkpoint.load(restarted)
    assert a.global_arrays.keys() == b.global_arrays.keys()
    for key in a.global_arrays:
        assert np.array_equal(a.global_arrays[key], b.global_arrays[key]), key
    assert a.strategy_arrays.keys() == b.strategy_arrays.keys()
    for key in a.strategy_arrays:  # FedEx-LoRA's residual log: the same folded bases
        assert np.array_equal(a.strategy_arrays[key], b.strategy_arrays[key]), key
    rows0, rows1 = read_rounds(plain / "rounds.jsonl"), read_rounds(restarted / "rounds.jsonl")
    for r0, r1 in zip(rows0, rows1, strict=True):
        assert (r1["clients"], r1["dropped"], r1["timed_out"]) == (r0["clients"], r0["dropped"], r0["timed_out"])
        assert (r1["train_loss"], r1[EPSILON]) == (r0["train_loss"], r0[EPSILON])
    assert rows1[at]["bytes_down"] > rows0[at]["bytes_down"]  # the resend is metered


def test_a_node_that_lost_its_history_refuses_to_train_and_its_epsilon_stays_counted(tmp_path: Path) -> None:
    grid, folder = _run(tmp_path, "fedit", restarting(2, lose_history=True))
    (_, first), = _train_log(grid, RESTARTED, 1)
    reported = first.content[METRICS][EPSILON]
    for r in (2, 3):  # refused every round: the server still expects ε = reported
        (instruction, refusal), = _train_log(grid, RESTARTED, r)
        assert instruction.content[CONFIG]["privacy-epsilon-spent"] == reported
        assert refusal.has_error() and refusal.error.code == PRIVACY_HISTORY_MISSING
        assert "restore" in refusal.error.reason
    rows = read_rounds(folder / "rounds.jsonl")
    assert [(r["clients"], r["dropped"]) for r in rows[1:]] == [(3, 0), (2, 1), (2, 1)]
    others = [reply.content[METRICS][EPSILON] for node in (100, 102) for _, reply in _train_log(grid, node, 3)]
    assert rows[3][EPSILON] == max([*others, reported])
    import json  # noqa: PLC0415

    nodes = {n["node"]: n for n in json.loads((folder / "summary.json").read_text())["privacy"]["nodes"]}
    assert (nodes[RESTARTED]["reported"], nodes[RESTARTED]["rounds"], nodes[RESTARTED]["unreported"]) == (reported, 1, 0)
