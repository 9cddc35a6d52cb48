"""Strategy registry: names, duplicates, unknown-name errors."""

from __future__ import annotations

import pytest
from flwr.serverapp.strategy import FedAvg

import strategies
from strategies import registry
from strategies.fedit import FedIT


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_fedit_is_registered_and_buildable() -> None:
    assert "fedit" in strategies.strategy_names()
    built = registry.build_strategy("fedit", weighted=False, min_train_nodes=3)
    assert isinstance(built, FedIT)
    assert built.weighted is False and built.min_train_nodes == 3


def test_unknown_name_lists_registered_names_and_the_config_key() -> None:
    @registry.register_strategy("my-avg")
    class MyAvg(FedAvg):
        pass

    with pytest.raises(ValueError) as info:
        registry.build_strategy("fedx")
    text = str(info.value)
    assert "'fedx'" in text and "strategy.name" in text
    assert "'fedit'" in text and "'my-avg'" in text


def test_duplicate_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="already registered to strategies.fedit.FedIT"):

        @registry.register_strategy("fedit")
        class Other(FedAvg):
            pass


@pytest.mark.parametrize("name", ["FedIT", "fed_it", "", "-x", "x-"])
def test_malformed_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="kebab-case"):
        registry.register_strategy(name)


def test_non_strategy_is_rejected() -> None:
    with pytest.raises(TypeError, match="Strategy subclass"):
        registry.register_strategy("thing")(int)  # type: ignore[type-var]


def test_bad_params_name_the_strategy() -> None:
    with pytest.raises(TypeError, match="cannot build strategy 'fedit'"):
        registry.build_strategy("fedit", not_a_param=1)
