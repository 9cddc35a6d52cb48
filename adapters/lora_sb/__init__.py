"""LoRA-SB (arXiv 2411.19557): ``W = W0 + s·B R A`` with frozen ``B``, ``A`` and a trainable ``r × r`` R.

The ``lora-sb`` adapter kind (``adapters.lora_sb.kind``); registered on import.
"""

from adapters.lora_sb.export import save_as_lora, to_lora
from adapters.lora_sb.init import (
    SBFactors,
    adapted_layers,
    effective_lr,
    estimate_gradients,
    init_from_gradients,
    initialise_lora_sb,
    install_factors,
    read_factors,
    sign_update,
)
from adapters.lora_sb.kind import FEDERATED_INIT_GAP, LoraSB
from adapters.lora_sb.layer import LoraSBLinear, LoraSBVariant, configure_lora_sb

__all__ = [
    "FEDERATED_INIT_GAP",
    "LoraSB",
    "LoraSBLinear",
    "LoraSBVariant",
    "SBFactors",
    "adapted_layers",
    "configure_lora_sb",
    "effective_lr",
    "estimate_gradients",
    "init_from_gradients",
    "initialise_lora_sb",
    "install_factors",
    "read_factors",
    "save_as_lora",
    "sign_update",
    "to_lora",
]
