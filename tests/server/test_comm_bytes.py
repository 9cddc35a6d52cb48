"""Metered bytes per client per round equal the communication formulas (``docs/communication.md §2``, §6; times 4 bytes for fp32,
plus the record overhead: npy headers and keys), for every strategy wired end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client.app import app as client_app
from server.app import run
from contract import ARRAYS, BASE_DELTA, FROZEN_FACTORS, message_bytes, parse_run_config
from simulations.comm import comm_params
from tests.strategies.fake_grid import FakeGrid

K, R = 3, 4
RUN = {
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "adapter.rank": R,
    "train.local-steps": 1,
    "train.batch-size": 4,
    "eval.central": False,
    "num-server-rounds": 2,
    "run-name": "comm",
}
# tiny-llama: hidden 256, 8 heads of 32, 4 KV heads -> q_proj 256x256, v_proj 128x256, 4 layers
SHAPES = [(256, 256), (128, 256)] * 4
P_LORA = R * sum(m + n for m, n in SHAPES)


def tensor_elements(record) -> int:
    return sum(int(np.prod(a.shape)) for a in record.values())


def overhead_ok(msg) -> None:
    arrays = sum(len(rec) for rec in msg.content.array_records.values())
    raw = sum(a.numpy().nbytes for rec in msg.content.array_records.values() for a in rec.values())
    assert 0 < message_bytes(msg) - raw <= 256 * arrays + 512


@pytest.mark.parametrize("strategy", ["fedit", "fedex", "flora"])
def test_elements_on_the_wire_match_the_formulas(strategy: str, tmp_path: Path) -> None:
    values = {**RUN, "strategy.name": strategy, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, K, run_config=values)
    run(grid, parse_run_config(values))
    expected = comm_params(strategy, SHAPES, R, K)
    for instruction, reply in grid.log:
        rnd = int(instruction.content["config"]["server-round"])
        overhead_ok(instruction)
        overhead_ok(reply)
        assert tensor_elements(reply.content[ARRAYS]) == expected.upload == P_LORA
        down = tensor_elements(instruction.content[ARRAYS])
        if BASE_DELTA in instruction.content:
            down += tensor_elements(instruction.content[BASE_DELTA])
        if rnd == 1 or strategy == "fedit":
            assert down == P_LORA  # the initial adapter; no base change yet
        elif strategy == "fedex":
            # FedIT's factors plus the residual in exact factors of (K-1) r columns: K r Σ(m+n)
            assert down == expected.download == K * P_LORA
        else:
            # FLoRA: the stacked update (K r columns) plus the fresh adapter the server draws
            assert down == expected.download + P_LORA == (K + 1) * P_LORA


@pytest.mark.parametrize("strategy", ["ffa", "fedsb"])
def test_frozen_factor_strategies_send_their_formula_and_the_factors_once(strategy: str, tmp_path: Path) -> None:
    values = {**RUN, "strategy.name": strategy, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, K, run_config=values)
    run(grid, parse_run_config(values))
    expected = comm_params(strategy, SHAPES, R, K, options={"ffa": {"a_by_seed": False}})
    per_round = R * sum(m for m, _ in SHAPES) if strategy == "ffa" else len(SHAPES) * R * R  # r·Σm | M·r²
    one_time = R * sum(n for _, n in SHAPES) if strategy == "ffa" else P_LORA  # A | B and A
    assert (expected.upload, expected.download, expected.one_time) == (per_round, per_round, one_time)
    for instruction, reply in grid.log:
        rnd = int(instruction.content["config"]["server-round"])
        overhead_ok(instruction)
        assert tensor_elements(reply.content[ARRAYS]) == per_round
        assert tensor_elements(instruction.content[ARRAYS]) == per_round
        setup = tensor_elements(instruction.content[FROZEN_FACTORS]) if FROZEN_FACTORS in instruction.content else 0
        assert setup == (one_time if rnd == 1 else 0)
