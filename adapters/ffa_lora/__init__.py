"""FFA-LoRA (arXiv 2403.12313), the ``ffa`` adapter kind (LoRA with A frozen); registered on import."""

from adapters.ffa_lora.freeze import FROZEN_LAYERS, freeze_lora_a
from adapters.ffa_lora.kind import FfaLora

__all__ = ["FROZEN_LAYERS", "FfaLora", "freeze_lora_a"]
