"""The server refuses, before round 1, a training split no client could draw (issue 20)."""

from __future__ import annotations

import pytest

from client.tasks.arithmetic import ArithmeticWordProblems
from client.tasks.setup import TaskAndModel
from contract import parse_run_config
from server.split_check import SplitError, check_delta, check_split


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


def test_a_delta_some_shard_would_refuse_fails_at_start_naming_the_shard() -> None:
    from client.tasks.partition import partition_dataset, partition_sizes

    dp = {"privacy.enabled": True, "privacy.noise-multiplier": 1.0}
    built, config = _built(**dp, **{"privacy.delta": 0.009})  # below the config's 0.01 ceiling
    sizes = partition_sizes(built.task.train_pool(built.datasets, 10), partitioner="dirichlet", num_partitions=10,
                            alpha=0.5, seed=42, label_column=built.task.label_column)
    pool = built.task.train_pool(built.datasets, 10)
    assert sizes[3] == partition_dataset(pool, partitioner="dirichlet", num_partitions=10, partition_id=3, alpha=0.5,
                                         seed=42, label_column=built.task.label_column).num_rows  # the clients' own draw
    assert sum(sizes) == pool.num_rows and max(sizes) > 1 / 0.009  # the pool is split, and some client has n > 111
    with pytest.raises(SplitError) as err:
        check_delta(built, config, 10)  # type: ignore[arg-type]
    assert f"n = {max(sizes)} examples, of 10 clients" in str(err.value) and "Set `privacy.delta` below" in str(err.value)
    # just below 1/n_max passes; the default δ and DP off are never refused
    ok, ok_config = _built(**dp, **{"privacy.delta": 0.99 / max(sizes)})
    check_delta(ok, ok_config, 10)  # type: ignore[arg-type]
    check_delta(*_built(**dp), 10)  # type: ignore[misc]
    check_delta(*_built(**{"privacy.delta": 0.009}), 10)  # type: ignore[misc]
