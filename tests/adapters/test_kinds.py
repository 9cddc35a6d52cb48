"""The adapter-kind registry and ``AdapterSpec.method``: plain LoRA is unchanged, every kind declares itself."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.frozen import factors_hash, frozen_factors
from adapters.kind_registry import (
    adapter_kind_of,
    get_adapter_kind,
    kind_names,
    registered_kinds,
    resolve_adapter_kind,
)
from adapters.kinds import BUILTIN_KINDS
from adapters.lora import AdapterSpec, build_adapted_model, lora_config
from adapters.payload import extract, layout
from adapters.peft_model import adapted_layers
from tests.adapters.toys import tiny_llama


def test_builtin_kinds_and_errors_that_list_them() -> None:
    assert BUILTIN_KINDS == ("lora", "ffa", "lora-sb", "abba")
    assert kind_names()[:4] == BUILTIN_KINDS
    with pytest.raises(ValueError, match="choose one of abba, ffa, lora, lora-sb.* or `auto`"):
        AdapterSpec(method="vera")
    assert get_adapter_kind("lora-sb").frozen_layers == ("lora_A", "lora_B")
    assert get_adapter_kind("abba").merged_export and not get_adapter_kind("lora").merged_export


def test_lora_method_is_the_old_behaviour() -> None:
    spec = AdapterSpec(rank=4, alpha=8)  # no method given
    default = build_adapted_model("tiny-llama", spec, kind="sequence-classification", num_labels=3, init_seed=0)[0]
    explicit = tiny_llama("lora")
    assert AdapterSpec().method == "lora" and adapter_kind_of(default) == "lora"
    first, second = extract(default), extract(explicit)
    assert list(first) == list(second) and all(np.array_equal(first[k], second[k]) for k in first)
    assert all(set(e) == {"a_key", "b_key", "scale", "fan_in_fan_out", "form"} for e in layout(default).values())
    assert frozen_factors(default) == {} and len(factors_hash(default)) == 64
    config = lora_config(AdapterSpec(rank=4, alpha=8), kind="causal-lm", model_type="llama")
    assert config.lora_alpha == 8 and config._custom_modules is None


def test_lora_sb_config_forces_unit_scale() -> None:
    config = lora_config(AdapterSpec(rank=4, alpha=16, method="lora-sb"), kind="causal-lm", model_type="llama")
    assert config.lora_alpha == 4 and config._custom_modules
    with pytest.raises(ValueError, match="use_rslora"):
        get_adapter_kind("lora-sb").configure(type(config)(r=4, use_rslora=True), AdapterSpec(rank=4, method="lora-sb"))


def test_abba_config_takes_both_ranks_from_the_spec() -> None:
    config = lora_config(AdapterSpec(rank=5, alpha=2.0, method="abba"), kind="causal-lm", model_type="llama")
    assert config.r == 2 and config._abba.rank2 == 3 and config.lora_alpha == 2.0 * 2  # r1 = 5 // 2, r2 = 5 - r1


@pytest.mark.parametrize("method", ["ffa", "lora-sb", "abba"])
def test_kind_is_read_back_from_the_model(method: str) -> None:
    assert adapter_kind_of(tiny_llama(method)) == method


@pytest.mark.parametrize("method", BUILTIN_KINDS)
def test_declared_layers_and_parameter_counts_match_the_built_model(method: str) -> None:
    """What a kind declares (layout fields, frozen layers, per-module counts) is what PEFT builds."""
    kind = get_adapter_kind(method)
    spec = AdapterSpec(rank=4, alpha=8, method=method)
    model = build_adapted_model("tiny-llama", spec, kind="causal-lm", num_labels=None, init_seed=0)[0]
    payload, frozen, entries = extract(model), frozen_factors(model), layout(model)
    for name, layer in adapted_layers(model).items():
        weight = layer.get_base_layer().weight  # nn.Linear: (m, n)
        expected = kind.module_params(weight.shape[0], weight.shape[1], spec)
        assert set(entries[name]) - {"scale", "fan_in_fan_out", "form"} == set(kind.layout_keys)
        assert entries[name]["form"] == kind.layout_form
        assert sum(payload[k].size for k in payload if k.startswith(f"{name}.")) == expected.trained
        assert sum(frozen[k].size for k in frozen if k.startswith(f"{name}.")) == expected.frozen
        assert {k.rsplit(".", 2)[-2] for k in frozen if k.startswith(f"{name}.")} == set(kind.frozen_layers)


def test_auto_and_named_kinds_resolve_against_what_the_strategy_aggregates() -> None:
    assert resolve_adapter_kind("auto", ("lora-sb",)).name == "lora-sb"
    assert resolve_adapter_kind("auto").name == "lora"
    assert resolve_adapter_kind("abba", ("lora", "abba")).name == "abba"
    assert resolve_adapter_kind("ffa").name == "ffa"  # a strategy that takes any kind
    with pytest.raises(ValueError, match=r"`strategy.name` = 'fedsb' needs `adapter.name` in \['lora-sb'\].*'ffa'"):
        resolve_adapter_kind("ffa", ("lora-sb",), strategy="fedsb")
    with pytest.raises(ValueError, match="not a registered adapter kind"):
        resolve_adapter_kind("vera", ("lora",))


def test_every_registered_kind_describes_itself() -> None:
    for kind in registered_kinds():
        assert kind.paper.startswith("arXiv ") and kind.summary and kind.trains and kind.layout_form
