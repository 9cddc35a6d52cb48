"""What Corolla's custom PEFT LoRA layers share: the Conv1D-aware layer base and merge by delta weight.

LoRA-SB (``s·B R A``) and ABBA (``s·(B1 A1) ⊙ (B2 A2)``) differ in their update and forward pass,
not in how they sit on ``nn.Linear`` and GPT-2 ``Conv1D`` layers, nor in how a dense update is added
to or removed from the stored base weight (in its orientation and dtype); that part lives here once.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from peft import LoraConfig
from peft.tuners.lora.layer import Linear, LoraLayer, LoraVariant
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers.pytorch_utils import Conv1D


class CustomLoraLinear(Linear):
    """PEFT ``lora.Linear`` for ``nn.Linear`` and GPT-2 ``Conv1D`` alike.

    ``Conv1D`` stores its weight ``(n, m)``: ``fan_in_fan_out`` is set for it, as PEFT's own
    dispatcher does, so merging transposes ``ΔW`` (``docs/algorithms.md §1``).
    """

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: LoraConfig, **kwargs: Any) -> None:
        target = base_layer.get_base_layer() if isinstance(base_layer, BaseTunerLayer) else base_layer
        is_conv1d = isinstance(target, Conv1D)
        config.fan_in_fan_out = is_conv1d  # PEFT's dispatch_default mutates the config the same way
        kwargs.pop("is_target_conv_1d_layer", None)
        super().__init__(base_layer, adapter_name, config=config, is_target_conv_1d_layer=is_conv1d, **kwargs)


Layer = TypeVar("Layer", bound=CustomLoraLinear)


def custom_layer(module: LoraLayer, kind: type[Layer]) -> Layer:
    """``module`` as the custom layer a variant only ever runs on (PEFT types it as any LoRA layer)."""
    if not isinstance(module, kind):
        raise TypeError(f"this LoRA variant runs on {kind.__name__} layers, got {type(module).__name__}")
    return module


def factor_weight(layers: nn.ModuleDict, adapter: str) -> nn.Parameter:
    """The weight of the bias-free ``nn.Linear`` that holds one factor of ``adapter`` (``lora_A[adapter]``, ...)."""
    return layers[adapter].get_parameter("weight")


class DeltaWeightVariant(LoraVariant):
    """Merge/unmerge by the layer's dense ``get_delta_weight`` (stored orientation)."""

    @staticmethod
    def merge_safe(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        """``W0 + ΔW`` as a new tensor."""
        delta = custom_layer(module, CustomLoraLinear).get_delta_weight(active_adapter)
        return orig_weight + delta.to(orig_weight.dtype)

    @staticmethod
    def merge_unsafe(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> None:
        """Add ``ΔW`` to the stored base weight in place."""
        orig_weight.data += custom_layer(module, CustomLoraLinear).get_delta_weight(active_adapter).to(orig_weight.dtype)

    @staticmethod
    def unmerge(module: LoraLayer, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        """``W - ΔW``."""
        delta = custom_layer(module, CustomLoraLinear).get_delta_weight(active_adapter)
        return orig_weight - delta.to(orig_weight.dtype)
