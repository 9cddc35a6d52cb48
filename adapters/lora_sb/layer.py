"""The LoRA-SB layer: PEFT LoRA with a trainable ``r × r`` map ``R`` between frozen ``A`` and ``B``.

``W = W0 + s·B R A`` with ``B: (m, r)`` (``lora_B``), ``R: (r, r)`` (``lora_R``) and ``A: (r, n)``
(``lora_A``); only ``R`` trains (LoRA-SB, arXiv 2411.19557 §3; ``docs/algorithms.md §8.1``). The forward pass
is ``y = W0 x + b + s·B(R(A·dropout(x)))``.

How it hooks into PEFT (no monkey-patching):

* :class:`LoraSBLinear` is PEFT's own ``lora.Linear`` whose only LoRA *variant* is
  :class:`LoraSBVariant` (PEFT's variant API, the one DoRA and KaSA use). It is installed through
  ``LoraConfig._register_custom_module`` for ``nn.Linear`` and GPT-2 ``Conv1D`` (see
  :func:`configure_lora_sb`), so the model stays a plain ``PeftType.LORA`` model and
  ``get_peft_model_state_dict`` / ``set_peft_model_state_dict`` / ``merge_and_unload`` work unchanged.
* The variant adds ``lora_R`` (a bias-free ``nn.Linear(r, r)``; a Linear multiplies by its weight
  transposed, so the composed delta is ``B R A`` with ``R`` as stored) to the layer's
  ``adapter_layer_names``, and declares ``lora_A`` and ``lora_B`` frozen through PEFT's
  ``frozen_peft_weight_names``, which ``set_adapter`` re-applies: ``A`` and ``B`` stay frozen even
  when PEFT re-activates the adapter.

State-dict keys (``get_peft_model_state_dict``): ``<module>.lora_A.weight`` ``(r, n)``,
``<module>.lora_B.weight`` ``(m, r)``, ``<module>.lora_R.weight`` ``(r, r)``, whatever the storage
orientation of the base weight.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig
from peft.tuners.lora.layer import LoraLayer, LoraVariant
from peft.tuners.lora.variants import _register_frozen_peft_weight
from peft.utils.other import transpose
from torch import nn
from transformers.pytorch_utils import Conv1D
from adapters.custom_lora import CustomLoraLinear, DeltaWeightVariant, custom_layer, factor_weight

R_LAYER = "lora_R"
FROZEN_LAYERS = ("lora_A", "lora_B")  # LoRA-SB freezes both factors (docs/algorithms.md §8.1)


class LoraSBVariant(DeltaWeightVariant):
    """PEFT LoRA variant ``ΔW = s·B R A`` with only ``R`` trainable (``docs/algorithms.md §8.1``)."""

    @staticmethod
    def init(module: LoraLayer, adapter_name: str, **kwargs: Any) -> None:
        """Add ``lora_R[adapter_name]`` (zero until factors are installed) and freeze ``A`` and ``B``."""
        layer = custom_layer(module, LoraSBLinear)
        if not hasattr(layer, R_LAYER):
            layer.lora_R = nn.ModuleDict({})
            layer.adapter_layer_names = (*layer.adapter_layer_names, R_LAYER)
        r = layer.r[adapter_name]
        weight_a = factor_weight(layer.lora_A, adapter_name)
        mapping = nn.Linear(r, r, bias=False, device=weight_a.device, dtype=weight_a.dtype)
        # R: (r, r). Zero keeps the uninitialised adapter inert (B = 0 too); LoRA-SB MUST install
        # R0 = Σ_r / s from its gradient initialisation (docs/algorithms.md §8.2; R = 0 is LoRA-XS, §8.1).
        nn.init.zeros_(mapping.weight)
        layer.lora_R[adapter_name] = mapping
        for name in FROZEN_LAYERS:
            _register_frozen_peft_weight(layer, adapter_name, name)

    @staticmethod
    def forward(
        module: LoraLayer, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        """``result + s·B(R(A·dropout(x)))``; ``x``: (..., n), result: (..., m)."""
        layer = custom_layer(module, LoraSBLinear)
        lora_a = layer.lora_A[active_adapter]  # A: (r, n)
        lora_r = layer.lora_R[active_adapter]  # R: (r, r)
        lora_b = layer.lora_B[active_adapter]  # B: (m, r)
        dropout = layer.lora_dropout[active_adapter]
        return result + lora_b(lora_r(lora_a(dropout(x)))) * layer.scaling[active_adapter]


class LoraSBLinear(CustomLoraLinear):
    """PEFT ``lora.Linear`` whose adapters are LoRA-SB; for ``nn.Linear`` and GPT-2 ``Conv1D``.

    ``Conv1D`` stores its weight ``(n, m)``: the layer sets ``fan_in_fan_out`` for it, as PEFT's own
    dispatcher does, so merging transposes ``B R A`` (``docs/algorithms.md §1``).
    """

    lora_R: nn.ModuleDict  # adapter -> R: (r, r), added by LoraSBVariant.init

    @property
    def lora_variants(self) -> dict[tuple[str, ...], type[LoraVariant] | None]:
        """Only LoRA-SB; any other variant flag (``use_dora``, ...) is rejected by PEFT."""
        return {(): LoraSBVariant}

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """``s·B R A`` in the stored orientation: ``(m, n)``, or ``(n, m)`` for ``fan_in_fan_out``."""
        weight_b: torch.Tensor = factor_weight(self.lora_B, adapter)  # B: (m, r)
        weight_r: torch.Tensor = factor_weight(self.lora_R, adapter)  # R: (r, r)
        weight_a: torch.Tensor = factor_weight(self.lora_A, adapter)  # A: (r, n)
        dtype = weight_b.dtype
        if weight_b.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
            weight_b, weight_r, weight_a = weight_b.float(), weight_r.float(), weight_a.float()
        delta = transpose(weight_b @ weight_r @ weight_a, self.fan_in_fan_out) * self.scaling[adapter]
        return delta.to(dtype)

    def __repr__(self) -> str:
        return "lora_sb." + nn.Module.__repr__(self)


CUSTOM_MODULES: dict[type[nn.Module], type[nn.Module]] = {nn.Linear: LoraSBLinear, Conv1D: LoraSBLinear}


def configure_lora_sb(config: LoraConfig) -> LoraConfig:
    """Turn a PEFT ``LoraConfig`` into a LoRA-SB one, in place (and return it).

    Sets ``lora_alpha = r`` so that ``s = 1`` (the reference forces it, ``docs/algorithms.md §8.1``: "method is
    hyperparameter independent") and registers :class:`LoraSBLinear` for ``nn.Linear`` and ``Conv1D``.
    """
    if config.use_dora or config.use_rslora or config.rank_pattern or config.alpha_pattern:
        raise ValueError(
            "LoRA-SB (`adapter.name = lora-sb`) uses one rank and s = 1: unset use_dora, use_rslora, "
            "rank_pattern and alpha_pattern"
        )
    config.lora_alpha = config.r
    config._register_custom_module(CUSTOM_MODULES)
    return config
