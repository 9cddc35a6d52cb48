"""The server refuses, before round 1, a training split no client could draw (issue 20)."""

from __future__ import annotations

import pytest

from client.tasks.arithmetic import ArithmeticWordProblems
from client.tasks.setup import TaskAndModel
from contract import parse_run_config
from server.split_check import SplitError, check_split


def _built(**flat: object) -> tuple[TaskAndModel, object]:
    config = parse_run_config({"task.name": "arithmetic", **flat})
    task = ArithmeticWordProblems(seed=config.seed, max_length=64)
    task.configure(config)
    # the check reads only the task and its data: no model is built
    return TaskAndModel(task=task, model=None, tokenizer=None, datasets=task.build_datasets()), config  # type: ignore[arg-type]


def test_a_fixed_pool_at_1000_nodes_is_refused_with_what_to_change() -> None:
    built, config = _built(**{"task.examples-per-client": 0})
    with pytest.raises(SplitError) as err:
        check_split(built, config, 1000)  # type: ignore[arg-type]
    text = str(err.value)
    assert "3000 rows" in text and "1000 clients" in text
    for fix in ("task.examples-per-client", "data.alpha", "data.partitioner='iid'"):
        assert fix in text


def test_the_default_settings_pass_at_1000_nodes_and_nobody_connected_is_not_checked() -> None:
    built, config = _built()
    check_split(built, config, 1000)  # type: ignore[arg-type]
    check_split(built, config, 0)  # type: ignore[arg-type]


def test_more_iid_clients_than_rows_is_refused() -> None:
    built, config = _built(**{"task.examples-per-client": 0, "data.partitioner": "iid"})
    with pytest.raises(SplitError, match="exceeds the 3000 training rows"):
        check_split(built, config, 3001)  # type: ignore[arg-type]
