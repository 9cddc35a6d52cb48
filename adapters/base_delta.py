"""Changing the frozen base weights of adapted modules by an exact, versioned delta.

FedEx-LoRA folds the averaging residual into the frozen weights every round (arXiv 2410.09432 §3,
``W0 ← W0 + s·ΔW_res``) and FLoRA merges the stacked client product into them (arXiv 2409.05976
§3). Either way a client's base is ``W0 + D_v``, with ``D_v`` the cumulative delta after version
``v``. Deltas are always given in the module's ``(m, n)`` orientation and float32; they are
transposed here, and only here, for ``fan_in_fan_out`` layers (GPT-2 ``Conv1D`` stores ``(n, m)``),
the orientation bug of the FedEx reference code (``docs/algorithms.md §1``).

``BaseWeights`` keeps a pristine fp32 copy of each adapted module's original weight, so setting a
base is ``W = W0 + D`` (never an accumulation of in-place additions that drifts): a simulation
worker that serves many clients at different versions sets each client's base exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from peft.tuners.lora import LoraLayer

from adapters.peft_model import unwrap


class BaseWeights:
    """Pristine base weights of a PEFT model's LoRA modules, and setting ``W = W0 + D``."""

    def __init__(self, model: Any) -> None:
        self._layers: dict[str, LoraLayer] = {}
        self._pristine: dict[str, torch.Tensor] = {}
        for name, module in unwrap(model).named_modules():
            if isinstance(module, LoraLayer) and "default" in module.lora_A:
                weight = module.get_base_layer().get_parameter("weight")
                self._layers[name] = module
                self._pristine[name] = weight.detach().to(torch.float32).clone()

    @property
    def modules(self) -> list[str]:
        """Adapted module names, sorted (the layout's names)."""
        return sorted(self._layers)

    def shape(self, module: str) -> tuple[int, int]:
        """``(m, n)`` of ``module`` (out, in), whatever its storage orientation."""
        stored = tuple(self._pristine[module].shape)
        return (stored[1], stored[0]) if self._fan_in_fan_out(module) else (stored[0], stored[1])

    def _fan_in_fan_out(self, module: str) -> bool:
        return bool(getattr(self._layers[module], "fan_in_fan_out", False))

    def set(self, deltas: Mapping[str, np.ndarray]) -> None:
        """Set every adapted module's base to ``W0 + D`` (``D: (m, n)``; missing modules: ``D = 0``)."""
        unknown = sorted(set(deltas) - set(self._layers))
        if unknown:
            raise ValueError(f"base delta for modules the model does not adapt: {unknown[:3]}")
        for name, layer in self._layers.items():
            pristine = self._pristine[name]
            weight = layer.get_base_layer().get_parameter("weight")
            delta = deltas.get(name)
            with torch.no_grad():
                if delta is None:
                    weight.copy_(pristine.to(weight.dtype))
                    continue
                if tuple(delta.shape) != self.shape(name):
                    raise ValueError(f"base delta for {name} has shape {tuple(delta.shape)}, expected (m, n) = {self.shape(name)}")
                d = torch.from_numpy(np.ascontiguousarray(delta, dtype=np.float32))  # (m, n)
                if self._fan_in_fan_out(name):
                    d = d.T  # Conv1D stores (n, m)
                weight.copy_((pristine + d).to(weight.dtype))

    def current(self) -> dict[str, np.ndarray]:
        """``D = W - W0`` per module, ``(m, n)`` float32 (for checks and exports)."""
        out = {}
        for name, layer in self._layers.items():
            d = layer.get_base_layer().get_parameter("weight").detach().to(torch.float32) - self._pristine[name]
            out[name] = (d.T if self._fan_in_fan_out(name) else d).numpy().copy()
        return out
