"""The adapter-kind registry and ``AdapterSpec.method``: plain LoRA is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from adapters.frozen import factors_hash, frozen_factors
from adapters.kinds import ADAPTER_KINDS, AdapterKind, adapter_kind_of, get_adapter_kind, register_adapter_kind
from adapters.lora import AdapterSpec, build_adapted_model, lora_config
from adapters.payload import extract, layout
from tests.adapters.toys import tiny_llama


def test_builtin_kinds_and_errors_that_list_them() -> None:
    assert ADAPTER_KINDS == ("lora", "ffa", "lora-sb", "abba")
    with pytest.raises(ValueError, match="choose one of abba, ffa, lora, lora-sb"):
        AdapterSpec(method="vera")
    with pytest.raises(ValueError, match="already registered"):
        register_adapter_kind(AdapterKind("ffa", "x", frozen=()))
    assert get_adapter_kind("lora-sb").frozen == ("lora_A", "lora_B")


def test_lora_method_is_the_old_behaviour() -> None:
    spec = AdapterSpec(rank=4, alpha=8)  # no method given
    default = build_adapted_model("tiny-llama", spec, kind="sequence-classification", num_labels=3, init_seed=0)[0]
    explicit = tiny_llama("lora")
    assert AdapterSpec().method == "lora" and adapter_kind_of(default) == "lora"
    first, second = extract(default), extract(explicit)
    assert list(first) == list(second) and all(np.array_equal(first[k], second[k]) for k in first)
    assert all(set(e) == {"a_key", "b_key", "scale", "fan_in_fan_out"} for e in layout(default).values())
    assert frozen_factors(default) == {} and len(factors_hash(default)) == 64
    config = lora_config(AdapterSpec(rank=4, alpha=8), kind="causal-lm", model_type="llama")
    assert config.lora_alpha == 8 and config._custom_modules is None


def test_lora_sb_config_forces_unit_scale() -> None:
    config = lora_config(AdapterSpec(rank=4, alpha=16, method="lora-sb"), kind="causal-lm", model_type="llama")
    assert config.lora_alpha == 4 and config._custom_modules
    with pytest.raises(ValueError, match="use_rslora"):
        get_adapter_kind("lora-sb").configure(type(config)(r=4, use_rslora=True))


@pytest.mark.parametrize("method", ["ffa", "lora-sb", "abba"])
def test_kind_is_read_back_from_the_model(method: str) -> None:
    assert adapter_kind_of(tiny_llama(method)) == method
