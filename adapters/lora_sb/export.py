"""Export a LoRA-SB model as a standard PEFT LoRA adapter.

``s·B R A = 1·(s·B R) A``: the export keeps ``A``, sets ``B' = s·B R`` (``(m, r)``) and
``lora_alpha = r`` so PEFT's scale is 1, drops ``lora_R`` and keeps the trained head. A plain
``LoraConfig`` model (``PeftModel.from_pretrained``) then computes exactly the same function, with no
Corolla code needed to load it (LoRA-SB's merge script rebuilds B, A and R instead, ``docs/algorithms.md §8.3``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import save_file

from adapters.lora_sb.init import adapted_layers
from adapters.peft_model import unwrap

ADAPTER_WEIGHTS = "adapter_model.safetensors"  # PEFT's SAFETENSORS_WEIGHTS_NAME


def to_lora(model: Any) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """``(config, state)`` of the equivalent plain LoRA adapter (PEFT checkpoint key names)."""
    peft_model = unwrap(model)
    layers = {n: m for n, m in adapted_layers(peft_model).items() if hasattr(m, "lora_R")}
    if not layers:
        raise ValueError("to_lora expects a LoRA-SB model (`adapter.name = lora-sb`)")
    config = copy.deepcopy(peft_model.peft_config["default"])
    if not isinstance(config, LoraConfig):
        raise TypeError(f"to_lora expects a LoRA-SB model, whose PEFT config is a LoraConfig; got {type(config).__name__}")
    config._custom_modules = None  # plain PEFT LoRA layers on load
    config.lora_alpha = config.r  # scale 1: B' carries s
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}
    for name, layer in layers.items():
        r_weight = state.pop(f"{name}.lora_R.weight")  # R: (r, r)
        b_key = f"{name}.lora_B.weight"
        state[b_key] = (state[b_key] @ r_weight) * layer.scaling["default"]  # B' = s·B R: (m, r)
    return config, {k: v.contiguous() for k, v in sorted(state.items())}


def save_as_lora(model: Any, directory: str | Path) -> Path:
    """Write the :func:`to_lora` adapter where ``PeftModel.from_pretrained(base, directory)`` loads it."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    config, state = to_lora(model)
    config.save_pretrained(str(target))
    save_file(state, str(target / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return target
