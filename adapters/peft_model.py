"""The PEFT model underneath everything in ``adapters``: unwrapping it and finding its LoRA layers.

Every adapter kind is PEFT LoRA underneath (``adapters.adapter_kind``), so these two questions have
one answer for all of them. Opacus's ``GradSampleModule`` never leaves ``privacy/``: pass
``PrivateTraining.model``, the plain PEFT model.
"""

from __future__ import annotations

from typing import Any

from peft import PeftModel
from peft.tuners.lora import LoraLayer

ADAPTER = "default"  # the one PEFT adapter name Corolla uses


def unwrap(model: Any) -> PeftModel:
    """``model`` as a PEFT model; anything else (e.g. Opacus's ``GradSampleModule``, which stays inside
    ``privacy/``: pass ``PrivateTraining.model``) is refused."""
    if not isinstance(model, PeftModel):
        raise TypeError(f"expected a PEFT model, got {type(model).__name__}")
    return model


def adapted_layers(model: Any) -> dict[str, LoraLayer]:
    """``{module name: LoRA layer}`` of a PEFT model, sorted (the names ``layout`` uses)."""
    peft_model = unwrap(model)
    layers = {n: m for n, m in peft_model.named_modules() if isinstance(m, LoraLayer) and ADAPTER in m.lora_A}
    return dict(sorted(layers.items()))


def layer_names(layer: LoraLayer) -> frozenset[str]:
    """The adapter layers a LoRA module holds for Corolla's adapter (``lora_A``, ``lora_B``, plus a kind's own
    such as ``lora_R``), read from PEFT's ``adapter_layer_names``."""
    return frozenset(n for n in layer.adapter_layer_names if ADAPTER in getattr(layer, n, {}))


def frozen_layer_names(layer: LoraLayer) -> frozenset[str]:
    """The adapter layers PEFT declares frozen in this module (``frozen_peft_weight_names``)."""
    return frozenset(layer.frozen_peft_weight_names.get(ADAPTER, ()))
