"""FFA-LoRA's one step after wrapping: declare every module's ``lora_A`` frozen.

A is declared frozen through PEFT's ``frozen_peft_weight_names`` (the mechanism PEFT's own MiCA
variant uses), which ``set_adapter`` re-applies, so it stays frozen when PEFT re-activates the
adapter; the model is otherwise a plain LoRA model and saves/loads as one.
"""

from __future__ import annotations

from typing import Any

from peft.tuners.lora.variants import _register_frozen_peft_weight

from adapters.peft_model import ADAPTER, adapted_layers

FROZEN_LAYERS = ("lora_A",)  # FFA-LoRA freezes A


def freeze_lora_a(model: Any) -> None:
    """Freeze ``lora_A`` of every LoRA module of ``model`` (the FFA-LoRA step after wrapping)."""
    layers = list(adapted_layers(model).values())
    if not layers:
        raise ValueError("FFA-LoRA expects a PEFT LoRA model; it has no LoRA modules")
    for layer in layers:
        if ADAPTER in getattr(layer, "lora_R", {}):
            raise ValueError("FFA-LoRA applies to plain LoRA modules, not LoRA-SB ones")
        for name in FROZEN_LAYERS:
            _register_frozen_peft_weight(layer, ADAPTER, name)
