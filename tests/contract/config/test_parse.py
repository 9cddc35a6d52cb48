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


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("adapter.rank", "8", "valid integer (str given; no conversion is made: write a whole number without quotes"),
        ("adapter.rank", 8.0, "valid integer (float given"),
        ("adapter.rank", True, "valid integer (bool given"),
        ("eval.central", "yes", "valid boolean (str given; no conversion is made: write true or false"),
        ("eval.central", 1, "valid boolean (int given"),
        ("train.lr", "0.1", "valid number (str given"),
        ("model.name", 5, "valid string (int given"),
        ("privacy.enabled", "true", "valid boolean"),
        ("guideq.report", "false", "valid boolean"),  # a task plugin's section: the same strictness
        ("secagg.quantization-bits", "22", "valid integer"),
    ],
)
def test_no_coercion_between_strings_numbers_and_booleans(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({key: value})
    assert f"`{key}` = {value!r}" in str(err.value) and expected in str(err.value)


def test_a_whole_number_stays_accepted_where_a_float_is_declared() -> None:
    # TOML (pyproject, --run-config) writes `train.lr = 1` as an int: Flower passes it as one
    from flwr.common.config import parse_config_args

    flat = parse_config_args(["train.lr=1 data.alpha=2 round-timeout=30"])
    assert flat == {"train.lr": 1, "data.alpha": 2, "round-timeout": 30}
    config = parse_run_config(flat)
    assert (config.train.lr, config.data.alpha, config.round_timeout) == (1.0, 2.0, 30.0)
    assert isinstance(config.train.lr, float)


@pytest.mark.parametrize(
    "key",
    ["data.alpha", "train.weight-decay", "train.lr", "privacy.max-grad-norm", "privacy.target-epsilon",
     "privacy.noise-multiplier", "round-timeout", "adapter.alpha", "faults.slow-seconds", "secagg.clip-range",
     "structformer.mask-prob", "instruct.test-fraction"],
)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_inf_and_nan_are_refused_everywhere(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match="finite number .inf and nan are never valid settings"):
        parse_run_config({key: value})


@pytest.mark.parametrize(
    ("key", "too_big", "largest"),
    [
        ("num-server-rounds", 100_001, 100_000),
        ("seed", 2**32, 2**32 - 1),
        ("train.local-steps", 1_000_001, 1_000_000),
        ("train.batch-size", 65_537, 65_536),
        ("eval.batch-size", 65_537, 65_536),
        ("min-train-nodes", 1_000_001, 1_000_000),
        ("round-timeout", 7 * 24 * 3600 + 1, 7 * 24 * 3600),
        ("privacy.target-epsilon", 1001, 1000),
        ("train.weight-decay", 11, 10),
        ("guideq.num-train", 10_000_001, 10_000_000),
    ],
)
def test_numbers_have_upper_bounds(key: str, too_big: int, largest: int) -> None:
    with pytest.raises(ConfigError, match="less than or equal to"):
        parse_run_config({key: too_big})
    assert parse_run_config({key: largest}).to_flat()[key] == largest


@pytest.mark.parametrize(
    "name", ["..", ".", "../up", "a/b", "a\\b", "a\x00b", "tab\tname", "bell\x07", "-rf", ".hidden", "two words", "x" * 101, "é/x"]
)
def test_a_run_name_that_is_not_one_plain_folder_name_is_refused_at_validation(name: str) -> None:
    with pytest.raises(ConfigError, match="`run-name`"):
        parse_run_config({"run-name": name})


@pytest.mark.parametrize("name", ["fedsb-r16", "2026-01-01_run.v2", "x" * 100, "été", "a+b=c@d,e"])
def test_plain_run_names_pass(name: str) -> None:
    assert parse_run_config({"run-name": name}).run_name == name


def test_paths_with_control_characters_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({"output-dir": "runs\x00", "resume-from": "runs/x\n"})
    assert str(err.value).count("NUL or control characters") == 2


def test_privacy_delta_is_below_one_hundredth() -> None:
    with pytest.raises(ConfigError, match="`privacy.delta` = 0.5: Input should be less than 0.01"):
        parse_run_config({"privacy.enabled": True, "privacy.noise-multiplier": 1.0, "privacy.delta": 0.5})
    assert parse_run_config({"privacy.delta": 1e-6}).privacy.delta == 1e-6


@pytest.mark.parametrize(("key", "value"), [("train.lr", -1.0), ("train.lr", "fast"), ("audit.exactness", "x")])
def test_a_value_fitting_no_member_of_a_union_gets_one_line_at_the_users_key(key: str, value: object) -> None:
    # `train.lr` is a number or "auto": pydantic reports each member under `train.lr.<member>`
    with pytest.raises(ConfigError) as err:
        parse_run_config({key: value})
    lines = [line for line in str(err.value).splitlines() if line.startswith("  - ")]
    assert len(lines) == 1 and lines[0].startswith(f"  - `{key}` = {value!r}: ")
    assert "; or 'auto'" in lines[0] and f"--run-config '{key}=...'" in lines[0]
