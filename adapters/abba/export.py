"""Export an ABBA model as a plain base model with ``W = W0 + s·(B1 A1) ⊙ (B2 A2)`` merged in.

``ΔW`` is generally of rank up to ``r1·r2`` (``docs/algorithms.md §10.4``), so unlike LoRA-SB there is no exact
plain-LoRA export of the same rank: the merged weights are the portable form (the reference's
``merge_save.py`` does the same). Merging is done on a copy; the adapted model is left as it is.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from adapters.peft_model import unwrap


def merged_model(model: Any) -> torch.nn.Module:
    """A copy of the base model with every ABBA update merged in (PEFT's ``merge_and_unload``)."""
    peft_model = unwrap(model)
    if not any(hasattr(m, "lora_A2") for m in peft_model.modules()):
        raise ValueError("merged_model expects an ABBA model (`adapter.name = abba`)")
    return copy.deepcopy(peft_model).merge_and_unload()


def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The merged base model's state dict (the base model's own key names)."""
    return {k: v.detach().clone() for k, v in merged_model(model).state_dict().items()}


def save_merged(model: Any, directory: str | Path) -> Path:
    """Write the merged model with ``save_pretrained`` (loadable by plain transformers)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    merged = merged_model(model)
    if not isinstance(merged, PreTrainedModel):
        raise TypeError(f"save_merged writes a transformers model; the merged base is a {type(merged).__name__}")
    merged.save_pretrained(str(target))
    return target
