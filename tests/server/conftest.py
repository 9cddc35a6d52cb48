"""Shared fixture: one tiny in-process federation (FakeGrid -> the real ClientApp) per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.app import app as client_app
from server.app import run
from contract import parse_run_config
from tests.strategies.fake_grid import FakeGrid

TINY_RUN = {
    "strategy.name": "fedit",
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "num-server-rounds": 2,
    "train.local-steps": 8,
    "train.lr": 0.01,
    "train.batch-size": 16,
    "adapter.rank": 4,
    "data.partitioner": "iid",
    "eval.max-examples": 64,
    "run-name": "tiny",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[FakeGrid, Path]:
    values = {**TINY_RUN, "output-dir": str(tmp_path_factory.mktemp("runs"))}
    grid = FakeGrid(client_app, 3, run_config=values)
    folder = run(grid, parse_run_config(values))
    return grid, folder.path
