"""The example task package (docs/extending.md) registers its task and its keys and runs end to end.

Importing ``tests.client.tasks.example_task`` is the only step: ``task_names()``, ``corolla tasks``
(``registered_tasks``), the assembled run-config schema and the ServerApp on the in-process grid pick
it up with no edit elsewhere. The registries are restored afterwards, so the pyproject key check of
the rest of the suite sees only the built-in sections.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import client.tasks  # noqa: F401  (built-in tasks registered before the scratch copies)
import strategies  # noqa: F401
from client.app import app as client_app
from client.tasks import registry as task_registry
from contract import ConfigError, allowed_keys, parse_run_config
from contract.config import registry as section_registry
from server.app import run
from server.run_folder import read_rounds
from tests.strategies.fake_grid import FakeGrid

PACKAGE = "tests.client.tasks.example_task"
RUN = {
    "strategy.name": "fedit",
    "model.name": "tiny-llama",
    "task.name": "digit-parity",
    "task.max-length": 32,
    "digit-parity.num-train": 64,
    "digit-parity.num-test": 32,
    "digit-parity.length": 3,
    "num-server-rounds": 2,
    "train.local-steps": 3,
    "train.batch-size": 8,
    "adapter.rank": 4,
    "data.partitioner": "iid",
    "run-name": "parity",
}


@pytest.fixture(scope="module")
def example() -> Iterator[object]:
    """Import the package into copies of the task and section registries; restore them after."""
    saved = (dict(task_registry._REGISTRY), dict(section_registry._SECTIONS))
    for name in [m for m in sys.modules if m.startswith(PACKAGE)]:
        del sys.modules[name]
    module = importlib.import_module(PACKAGE)
    section_registry._ASSEMBLED = None
    yield module
    task_registry._REGISTRY.clear()
    task_registry._REGISTRY.update(saved[0])
    section_registry._SECTIONS.clear()
    section_registry._SECTIONS.update(saved[1])
    section_registry._ASSEMBLED = None
    for name in [m for m in sys.modules if m.startswith(PACKAGE)]:
        del sys.modules[name]


def test_the_import_registers_the_task_and_its_keys(example: object) -> None:
    assert "digit-parity" in task_registry.task_names()
    info = next(i for i in task_registry.registered_tasks() if i.name == "digit-parity")
    assert info.section == "digit-parity" and info.model_kind == "sequence-classification"
    assert {"digit-parity.num-train", "digit-parity.num-test", "digit-parity.length"} <= set(allowed_keys())
    config = parse_run_config(RUN)
    assert config.to_flat()["digit-parity.length"] == 3


def test_its_keys_are_validated_like_the_core_ones(example: object) -> None:
    with pytest.raises(ConfigError, match=r"digit-parity\.length"):
        parse_run_config({**RUN, "digit-parity.length": 0})
    with pytest.raises(ConfigError, match=r"digit-parity\.lenght.*Did you mean `digit-parity\.length`"):
        parse_run_config({**RUN, "digit-parity.lenght": 3})


def test_the_data_are_seeded_and_labelled_by_parity(example: object) -> None:
    task = task_registry.build_task("digit-parity", seed=3, max_length=32)
    task.configure(parse_run_config(RUN))
    first, again = task.build_datasets(), task.build_datasets()
    assert first["train"].to_list() == again["train"].to_list() and len(first["train"]) == 64
    digits = {word: value for value, word in enumerate(("zero", "one", "two", "three", "four", "five", "six",
                                                        "seven", "eight", "nine"))}
    for row in first["test"].to_list():
        assert row["label"] == sum(digits[w] for w in row["text"].split()) % 2


def test_it_runs_through_the_server_app_on_the_in_process_grid(example: object, tmp_path: Path) -> None:
    values = {**RUN, "output-dir": str(tmp_path)}
    folder = run(FakeGrid(client_app, 2, run_config=values), parse_run_config(values))
    rows = read_rounds(folder.path / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(r["clients"] == 2 and r["dropped"] == 0 for r in rows[1:])
    assert all(0.0 <= r["eval_accuracy"] <= 1.0 for r in rows)
    assert math.isfinite(rows[2]["train_loss"]) and math.isfinite(rows[2]["eval_loss"])
    assert (folder.path / "adapter" / "adapter_model.safetensors").exists()
