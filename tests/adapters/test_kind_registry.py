"""Registration checks a kind against ``AdapterKind`` and fails at import, naming what is missing."""

from __future__ import annotations

import pytest

from adapters.adapter_kind import AdapterKind
from adapters.kind_registry import AdapterKindError, kind_names, register_adapter_kind
from adapters.plain_lora import PlainLora


def test_an_incomplete_kind_fails_registration_naming_every_missing_piece() -> None:
    with pytest.raises(AdapterKindError) as err:

        @register_adapter_kind
        class HalfKind(AdapterKind):  # no paper, no layout_form, no factored_update / module_params
            name = "half-kind"
            summary = "half a kind"
            trains = "A, B"
            layout_keys = {"a_key": "lora_A", "b_key": "lora_B"}

            def configure(self, config, spec):
                return config

    message = str(err.value)
    assert "HalfKind" in message
    assert "required hooks factored_update, module_params" in message
    assert "class attributes paper, layout_form" in message
    assert "half-kind" not in kind_names()


def test_a_taken_name_and_malformed_descriptions_are_refused() -> None:
    class Copy(PlainLora):
        paper = "LoRA paper"  # not an arXiv id
        layout_keys = {"a_key": "lora_A", "b_key": "lora_B", "m_key": "magnitude"}

    with pytest.raises(AdapterKindError) as err:
        register_adapter_kind(Copy)
    message = str(err.value)
    assert "the name 'lora' is already registered by PlainLora" in message
    assert "paper = 'LoRA paper' must be an arXiv id" in message
    assert "every layer must be a PEFT adapter layer" in message


def test_only_adapter_kind_subclasses_and_proper_names_register() -> None:
    with pytest.raises(AdapterKindError, match="not a subclass of adapters.adapter_kind.AdapterKind"):
        register_adapter_kind(dict)

    class Auto(PlainLora):
        name = "auto"

    class Shared(PlainLora):
        name = "shared-layers"
        frozen_layers = ("lora_A",)  # also shipped through layout_keys

    with pytest.raises(AdapterKindError, match="not 'auto'"):
        register_adapter_kind(Auto)
    with pytest.raises(AdapterKindError, match=r"layers \['lora_A'\] are both shipped and frozen"):
        register_adapter_kind(Shared)


def test_registering_the_same_class_again_is_a_no_op() -> None:
    before = kind_names()
    assert register_adapter_kind(PlainLora) is PlainLora
    assert kind_names() == before
