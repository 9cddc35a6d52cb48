"""Changing the rank of a model's plain LoRA adapter in place (per-client ranks, ``docs/algorithms.md §18``).

A simulation worker serves clients of different ranks with one frozen base model: before a client's
payload is loaded, :func:`set_lora_rank` gives every LoRA module factors of that client's rank,
``A: (r, n)`` and ``B: (m, r)``, and the scale ``s = alpha / r`` PEFT would give a rank-``r`` adapter
(Hu et al. 2021, arXiv 2106.09685 §4.1). The base weights are untouched; the new factors' values are
placeholders, overwritten by the payload that follows.

Only the ``pair`` layout form with nothing frozen qualifies (plain LoRA): FFA-LoRA's frozen A and
LoRA-SB's r×r R are shared by every client, so their rank cannot differ between clients.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adapters.peft_model import ADAPTER, adapted_layers, frozen_layer_names, layer_names, unwrap


def lora_rank(model: Any) -> int:
    """The rank of the model's LoRA adapter (every module shares it)."""
    ranks = {int(layer.r[ADAPTER]) for layer in adapted_layers(model).values()}
    if len(ranks) != 1:
        raise ValueError(f"the model's LoRA modules have ranks {sorted(ranks)}; expected one rank")
    return ranks.pop()


def set_lora_rank(model: Any, rank: int) -> bool:
    """Give every LoRA module of ``model`` rank ``rank`` (scale ``alpha / rank``); True if anything changed.

    Raises
    ------
    ValueError
        A rank below 1, rsLoRA-style scales, or an adapter with frozen factors or layers besides A and B.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    peft_model = unwrap(model)
    config = peft_model.peft_config[ADAPTER]
    if getattr(config, "use_rslora", False):
        raise ValueError("per-client ranks need plain LoRA scales alpha / r; rsLoRA is not supported")
    layers = adapted_layers(peft_model)
    changed = False
    for name, layer in layers.items():
        if int(layer.r[ADAPTER]) == rank:
            continue
        frozen, extra = frozen_layer_names(layer), layer_names(layer) - {"lora_A", "lora_B"}
        if frozen or extra:
            raise ValueError(
                f"module {name}: per-client ranks need plain LoRA on linear layers (adapter.name = lora); this adapter "
                f"freezes {sorted(frozen)} or adds {sorted(extra)}, which every client must share at one rank"
            )
        old_a, old_b = layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]
        if not (isinstance(old_a, nn.Linear) and isinstance(old_b, nn.Linear)):
            raise ValueError(f"module {name}: per-client ranks need LoRA factors on linear layers")
        weight = old_a.weight
        new_a = nn.Linear(old_a.in_features, rank, bias=False, device=weight.device, dtype=weight.dtype)  # A: (r, n)
        new_b = nn.Linear(rank, old_b.out_features, bias=old_b.bias is not None, device=weight.device, dtype=weight.dtype)  # B: (m, r)
        with torch.no_grad():
            nn.init.zeros_(new_b.weight)
        new_a.weight.requires_grad_(bool(old_a.weight.requires_grad))
        new_b.weight.requires_grad_(bool(old_b.weight.requires_grad))
        layer.lora_A[ADAPTER], layer.lora_B[ADAPTER] = new_a, new_b
        layer.r[ADAPTER] = rank
        layer.scaling[ADAPTER] = float(layer.lora_alpha[ADAPTER]) / rank
        changed = True
    setattr(config, "r", rank)  # LoraConfig.r: what PEFT reports and saves (the config is typed PeftConfig)
    return changed
