"""FFA-LoRA (arXiv 2403.12313): standard PEFT LoRA with ``A`` frozen, so only ``B`` (and a head) train.

``W = W0 + s·B A`` with ``A: (r, n)`` fixed at its random initialisation and ``B: (m, r)`` starting at
zero, as in LoRA. With A shared, FedAvg of B is exact: ``mean_i(B_i) A = mean_i(B_i A)``, and DP
noise is not multiplied through a second trained factor (the paper's two motivations; section
numbers of that paper were not checked).

A is declared frozen through PEFT's ``frozen_peft_weight_names`` (the mechanism PEFT's own
MiCA variant uses), which ``set_adapter`` re-applies, so it stays frozen when PEFT re-activates the
adapter; the model is otherwise a plain LoRA model and saves/loads as one. Every client MUST hold the
same A: it is drawn from the shared ``init_seed`` and can be distributed and verified with
``adapters.frozen`` (``frozen_factors`` gives the A tensors, ``factors_hash`` their digest).
"""

from __future__ import annotations

from typing import Any

from peft.tuners.lora import LoraLayer
from peft.tuners.lora.variants import _register_frozen_peft_weight

from adapters.payload import unwrap

FROZEN_LAYERS = ("lora_A",)  # FFA-LoRA freezes A


def freeze_lora_a(model: Any) -> None:
    """Freeze ``lora_A`` of every LoRA module of ``model`` (the FFA-LoRA step after wrapping)."""
    layers = [m for m in unwrap(model).modules() if isinstance(m, LoraLayer) and "default" in m.lora_A]
    if not layers:
        raise ValueError("FFA-LoRA expects a PEFT LoRA model; it has no LoRA modules")
    for layer in layers:
        if "default" in getattr(layer, "lora_R", {}):
            raise ValueError("FFA-LoRA applies to plain LoRA modules, not LoRA-SB ones")
        for name in FROZEN_LAYERS:
            _register_frozen_peft_weight(layer, "default", name)
