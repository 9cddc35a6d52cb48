"""The one-file example strategy registers itself and runs end to end; an incomplete one is refused.

Importing ``tests.strategies.example_strategy`` is the only step: the registry, the adapter-kind
resolution, the config check and the communication table pick the strategy up with no edit
elsewhere, and the ServerApp runs it on the in-process grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.serverapp.strategy import FedAvg

import tests.strategies.example_strategy as example
from client.app import app as client_app
from contract import ARRAYS, CONFIG, SERVER_ROUND, parse_run_config
from server.app import run
from server.run_folder import read_rounds
from simulations.comm import comm_params
from strategies import (
    build_strategy,
    check_strategy_config,
    register_strategy,
    registered_strategies,
    resolve_adapter_kind,
    strategy_names,
)
from strategies.protocol import CorollaStrategy
from strategies.registry import StrategyInfo
from tests.strategies.fake_grid import FakeGrid
from tests.strategies.helpers import lora_layout

RUN = {
    "strategy.name": "median",
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "num-server-rounds": 2,
    "train.local-steps": 3,
    "train.lr": 0.02,
    "train.batch-size": 8,
    "adapter.rank": 4,
    "eval.max-examples": 16,
    "run-name": "median",
}


def test_importing_the_module_registers_everything() -> None:
    info = next(i for i in registered_strategies() if i.name == "median")
    assert info.summary.startswith("coordinate-wise median") and info.exact is False
    assert "median" in strategy_names()
    assert resolve_adapter_kind("median", "auto") == "lora"
    assert check_strategy_config(parse_run_config(RUN)) == "lora"
    shapes = [(8, 16), (4, 16)]
    assert comm_params("median", shapes, 2, K=5) == comm_params("fedit", shapes, 2, K=5) == (88, 88, 0)
    built = build_strategy("median", layout=lora_layout({"q": (8, 16)}), weighted=False)
    assert isinstance(built, example.CoordinateMedian) and isinstance(built, CorollaStrategy)


def test_the_median_of_three_clients() -> None:
    strategy = example.CoordinateMedian()
    clients = [{"x": np.array([1.0, 5.0, -2.0], np.float32)}, {"x": np.array([3.0, 0.0, 7.0], np.float32)},
               {"x": np.array([2.0, 9.0, 1.0], np.float32)}]
    got = strategy.aggregate_arrays(1, clients, np.full(3, 1 / 3))
    assert got["x"].dtype == np.float32 and got["x"].tolist() == [2.0, 5.0, 1.0]


@pytest.fixture(scope="module")
def median_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[FakeGrid, Path]:
    values = {**RUN, "output-dir": str(tmp_path_factory.mktemp("runs"))}
    grid = FakeGrid(client_app, 3, run_config=values)
    folder = run(grid, parse_run_config(values))
    return grid, folder.path


def test_the_server_sends_the_coordinate_median_of_the_previous_round(median_run: tuple[FakeGrid, Path]) -> None:
    grid, path = median_run
    by_round: dict[int, list[Any]] = {1: [], 2: []}
    for instruction, reply in grid.log:
        by_round[int(instruction.content[CONFIG][SERVER_ROUND])].append((instruction, reply))
    assert [len(by_round[r]) for r in (1, 2)] == [3, 3]
    replies = [reply.content[ARRAYS] for _, reply in by_round[1]]
    sent = by_round[2][0][0].content[ARRAYS]
    moved = 0
    for key in sent.keys():
        stacked = np.stack([r[key].numpy().astype(np.float64) for r in replies])  # (3, ...)
        expected = np.median(stacked, axis=0).astype(np.float32)
        np.testing.assert_array_equal(sent[key].numpy(), expected)
        mean = stacked.mean(axis=0).astype(np.float32)
        moved += int(not np.array_equal(expected, mean))
    assert moved > 0  # the median is not FedIT's mean on these replies
    rows = read_rounds(path / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(r["clients"] == 3 and r["dropped"] == 0 and np.isfinite(r["train_loss"]) for r in rows[1:])


def test_an_incomplete_strategy_is_refused_naming_what_is_missing() -> None:
    with pytest.raises(TypeError) as err:

        @register_strategy(StrategyInfo(
            name="half-done", summary="forgot the checkpoint", exact=False, adapter_kinds=("lora",),
            comm=example.median_comm,
        ))
        class HalfDone(FedAvg, CorollaStrategy):
            last_dropped = property(lambda self: [])
            last_dropped_evaluate = property(lambda self: [])

            def restore_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
                pass

    assert "`export_state` is abstract (not implemented)" in str(err.value)
    assert "half-done" not in strategy_names()
