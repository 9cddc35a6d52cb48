"""Parsing the run config: defaults match pyproject, and bad input names key, value and fix."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from flwr.common.config import flatten_dict

import client.tasks  # noqa: F401  (registers the task plugins' sections, as the ServerApp does)
import strategies  # noqa: F401  (registers the strategies' sections, if any)
from contract import ConfigError, allowed_keys, parse_run_config
from contract.config import default_run_config

ROOT = Path(__file__).resolve().parents[3]


def pyproject_config() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return flatten_dict(tomllib.load(handle)["tool"]["flwr"]["app"]["config"])


def test_pyproject_lists_exactly_the_schema_keys_with_the_schema_defaults() -> None:
    # Flower rejects --run-config keys missing from pyproject, so every schema key must be there.
    flat = pyproject_config()
    assert sorted(flat) == allowed_keys()
    assert parse_run_config(flat) == default_run_config()


def test_values_arrive_typed() -> None:
    config = parse_run_config({"adapter.rank": 4, "train.lr": 0.1, "data.partitioner": "iid", "strategy.weighted": False})
    assert (config.adapter.rank, config.train.lr, config.data.partitioner, config.strategy.weighted) == (4, 0.1, "iid", False)
    assert config.to_flat()["adapter.rank"] == 4


def test_unknown_key_names_it_suggests_the_closest_and_lists_allowed() -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({"adapter.rnk": 4})
    message = str(err.value)
    assert "unknown config key `adapter.rnk`" in message
    assert "Did you mean `adapter.rank`?" in message
    assert "train.local-steps" in message  # the allowed list


def test_wrong_type_names_key_value_and_fix() -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({"adapter.rank": "eight"})
    message = str(err.value)
    assert "`adapter.rank` = 'eight'" in message
    assert "valid integer" in message
    assert "--run-config 'adapter.rank=...'" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("adapter.rank", 0, "greater than or equal to 1"),
        ("fraction-train", 1.5, "less than or equal to 1"),
        ("data.partitioner", "zipf", "'iid' or 'dirichlet'"),
        ("adapter.target-modules", " , ", "at least one module"),
        ("train.lr", -1.0, "greater than 0"),
    ],
)
def test_impossible_values_are_rejected_with_the_constraint(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({key: value})
    assert f"`{key}` = {value!r}" in str(err.value)
    assert expected in str(err.value)


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({"adapter.rank": 0, "data.partitioner": "zipf", "bogus": 1})
    assert str(err.value).count("\n  - ") == 3


def test_target_modules_parse() -> None:
    assert parse_run_config({"adapter.target-modules": "query, value"}).adapter.target_list() == ["query", "value"]
    assert parse_run_config({}).adapter.target_list() is None


def test_the_contract_knows_no_strategy_and_no_adapter_kind() -> None:
    # which kinds a strategy takes is the strategy's declaration (tests/strategies/test_registry.py);
    # the contract parses any pairing and the ServerApp and the CLI check it with the registries
    config = parse_run_config({"strategy.name": "fedsb", "adapter.name": "rslora"})
    assert (config.strategy.name, config.adapter.name) == ("fedsb", "rslora")
    assert not hasattr(config, "adapter_kind")
    with pytest.raises(ConfigError, match="`adapter.name` = '': String should have at least 1 character"):
        parse_run_config({"adapter.name": ""})
