"""Strategy registry: infos, the protocol check, duplicates, adapter kinds, unknown-name errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from flwr.serverapp.strategy import FedAvg

import strategies
from contract.config import AdapterConfig, ConfigError, RunConfig, StrategyConfig, default_run_config, parse_run_config
from strategies import registry
from strategies.comm_cost import CommInputs, factor_average_comm
from strategies.fedit import FedIT
from strategies.protocol import CorollaStrategy, DroppedReply, StrategyState, protocol_problems
from strategies.registry import StrategyInfo

BUILT_IN = {"fedex", "fedit", "fedsb", "ffa", "flora"}


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def info(name: str, **changes: Any) -> StrategyInfo:
    fields: dict[str, Any] = {
        "name": name, "summary": "a test strategy", "exact": False, "adapter_kinds": ("lora",),
        "comm": factor_average_comm,
    }
    return StrategyInfo(**{**fields, **changes})


def test_built_ins_are_registered_with_their_infos() -> None:
    infos = strategies.registered_strategies()
    assert [i.name for i in infos] == sorted(i.name for i in infos)  # sorted, as the CLI prints them
    assert BUILT_IN <= {i.name for i in infos}
    by_name = {i.name: i for i in infos}
    assert {n for n in BUILT_IN if by_name[n].exact} == {"fedex", "flora", "ffa", "fedsb"}
    assert [by_name[n].auto_kind for n in ("fedit", "fedex", "flora", "ffa", "fedsb")] == ["lora", "lora", "lora", "ffa", "lora-sb"]
    inputs = CommInputs(((8, 16),), rank=2, clients=3)
    assert by_name["fedit"].comm(inputs) == (48, 48, 0)  # r·(m + n) each way
    assert by_name["fedsb"].comm(inputs) == (4, 4, 48)  # M·r² each way, B and A once


def test_fedit_is_registered_and_buildable() -> None:
    assert "fedit" in strategies.strategy_names()
    built = registry.build_strategy("fedit", weighted=False, min_train_nodes=3)
    assert isinstance(built, FedIT) and isinstance(built, CorollaStrategy)
    assert built.weighted is False and built.min_train_nodes == 3
    assert built.base_deltas() is None and built.export_state() == StrategyState({}, {})


def test_unknown_name_lists_registered_names_and_the_config_key() -> None:
    @registry.register_strategy(info("my-avg"))
    class MyAvg(FedIT):
        pass

    with pytest.raises(ValueError) as err:
        registry.build_strategy("fedx")
    text = str(err.value)
    assert "'fedx'" in text and "strategy.name" in text
    assert "'fedit'" in text and "'my-avg'" in text
    assert registry.strategy_class("my-avg") is MyAvg


def test_duplicate_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="already registered to strategies.fedit.FedIT"):

        @registry.register_strategy(info("fedit"))
        class Other(FedIT):
            pass


@pytest.mark.parametrize("name", ["FedIT", "fed_it", "", "-x", "x-"])
def test_malformed_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="kebab-case"):
        info(name)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"summary": ""}, "summary must be one non-empty line"),
        ({"summary": "two\nlines"}, "summary must be one non-empty line"),
        ({"adapter_kinds": ()}, "adapter_kinds must be a non-empty tuple"),
        ({"adapter_kinds": ["lora"]}, "adapter_kinds must be a non-empty tuple"),
        ({"adapter_kinds": ("auto",)}, "distinct real kinds"),
        ({"adapter_kinds": ("lora", "lora")}, "distinct real kinds"),
        ({"exact": 1}, "exact must be a bool"),
        ({"comm": 3}, "comm must be a communication formula"),
        ({"section": dict}, "section must be a contract.config.Section subclass"),
        ({"config_problems": 3}, "config_problems must be a function"),
        ({"rank_census": lambda config: True}, "rank_census needs mixed_ranks=True"),
        ({"learning_rate": 0.0}, r"learning_rate must be a number in \(0, 10\]"),
        ({"learning_rate": float("nan")}, "learning_rate must be a number"),
        ({"learning_rate": "0.01"}, "learning_rate must be a number"),
    ],
)
def test_bad_infos_name_the_field(changes: dict[str, Any], match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        info("x", **changes)


def test_a_plain_flower_strategy_fails_registration_naming_every_missing_member() -> None:
    with pytest.raises(TypeError) as err:

        @registry.register_strategy(info("plain"))
        class Plain(FedAvg):
            pass

    text = str(err.value)
    for member in ("last_dropped", "last_dropped_evaluate", "export_state", "restore_state", "base_deltas"):
        assert f"missing `{member}`" in text
    assert "configure_train" not in text  # FedAvg has it
    assert "plain" not in strategies.strategy_names()


def test_a_strategy_missing_one_member_fails_naming_it() -> None:
    class NoRestore(FedAvg, CorollaStrategy):
        @property
        def last_dropped(self) -> list[DroppedReply]:
            return []

        @property
        def last_dropped_evaluate(self) -> list[DroppedReply]:
            return []

        def export_state(self) -> StrategyState:
            return StrategyState({}, {})

    assert protocol_problems(NoRestore) == ["`restore_state` is abstract (not implemented)"]
    with pytest.raises(TypeError, match=r"'no-restore'.*\n  - `restore_state` is abstract"):
        registry.register_strategy(info("no-restore"))(NoRestore)

    class Complete(NoRestore):
        def restore_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
            pass

    assert protocol_problems(Complete) == []


def test_non_strategy_is_rejected() -> None:
    with pytest.raises(TypeError, match="not a flwr.serverapp.strategy.Strategy subclass"):
        registry.register_strategy(info("thing"))(int)
    with pytest.raises(TypeError, match="needs a StrategyInfo"):
        registry.register_strategy("thing")  # type: ignore[arg-type]


def test_bad_params_name_the_strategy() -> None:
    with pytest.raises(TypeError, match="cannot build strategy 'fedit'"):
        registry.build_strategy("fedit", not_a_param=1)


def test_auto_resolves_to_the_first_kind_and_a_wrong_kind_names_the_fix() -> None:
    assert registry.resolve_adapter_kind("fedsb", "auto") == "lora-sb"
    assert registry.resolve_adapter_kind("fedex", "abba") == "abba"
    with pytest.raises(ValueError) as err:
        registry.resolve_adapter_kind("ffa", "lora")
    text = str(err.value)
    assert "`strategy.name` = 'ffa'" in text and "['ffa']" in text and "got 'lora'" in text
    assert 'adapter.name="ffa"' in text and "auto" in text
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        registry.resolve_adapter_kind("nope", "auto")


def config(strategy: str, adapter: str = "auto") -> RunConfig:
    """A parsed default config with these two names (set unvalidated: this check is what validates them)."""
    return default_run_config().model_copy(
        update={"strategy": StrategyConfig(name=strategy), "adapter": AdapterConfig(name=adapter)}  # type: ignore[arg-type]
    )


def test_config_check_returns_the_kind_or_lists_the_problem() -> None:
    assert registry.check_strategy_config(config("ffa")) == "ffa"
    assert registry.check_strategy_config(config("flora", "lora")) == "lora"
    with pytest.raises(ConfigError, match=r"invalid Corolla run config:\n  - `strategy.name` = 'flora' needs `adapter.name` in \['lora'\]"):
        registry.check_strategy_config(config("flora", "abba"))
    with pytest.raises(ConfigError, match="unknown strategy 'nope'"):
        registry.check_strategy_config(config("nope"))
    assert registry.strategy_config_problems(config("fedit")) == []


def test_train_lr_auto_resolves_to_the_strategys_rate_and_an_explicit_rate_wins() -> None:
    # docs/algorithms.md §17: FedEx-LoRA's own rate; every other built-in keeps the default 0.02
    def lr(values: dict[str, Any]) -> float:
        return registry.learning_rate(parse_run_config(values))

    assert default_run_config().train.lr == "auto"
    assert lr({"strategy.name": "fedex"}) == 0.005
    assert lr({"strategy.name": "flora"}) == lr({"strategy.name": "fedit"}) == 0.02
    assert lr({"strategy.name": "fedex", "train.lr": 0.03}) == 0.03
    assert lr({"strategy.name": "fedex", "train.lr": 1}) == 1.0
