"""A PEFT ``LoraVariant`` base whose merge and unmerge go through the layer's ``get_delta_weight``.

LoRA-SB (``s·B R A``) and ABBA (``s·(B1 A1) ⊙ (B2 A2)``) differ in their update and forward pass,
not in how a dense update is added to or removed from the stored base weight (in the base weight's
orientation and dtype); that part lives here once.
"""

from __future__ import annotations

import torch
from peft.tuners.lora.layer import LoraLayer, LoraVariant


class DeltaWeightVariant(LoraVariant):
    """Merge/unmerge by the layer's dense ``get_delta_weight`` (stored orientation)."""

    @staticmethod
    def merge_safe(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        """``W0 + ΔW`` as a new tensor."""
        return orig_weight + module.get_delta_weight(active_adapter).to(orig_weight.dtype)

    @staticmethod
    def merge_unsafe(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> None:
        """Add ``ΔW`` to the stored base weight in place."""
        orig_weight.data += module.get_delta_weight(active_adapter).to(orig_weight.dtype)

    @staticmethod
    def unmerge(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        """``W - ΔW``."""
        return orig_weight - module.get_delta_weight(active_adapter).to(orig_weight.dtype)
