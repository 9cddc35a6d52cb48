"""Changing the frozen base of adapted modules by an exact, versioned delta, in any base precision.

FedEx-LoRA folds the averaging residual into the frozen weights every round (arXiv 2410.09432 §3,
``W0 ← W0 + s·ΔW_res``) and FLoRA merges the stacked client product into them (arXiv 2409.05976
§3). Either way a client's base is ``W0 + D_v``, with ``D_v`` the cumulative delta after version
``v``, canonical float32 (``contract.base_delta``). Deltas are always given in the module's
``(m, n)`` orientation; GPT-2 ``Conv1D`` layers store ``(n, m)`` (``fan_in_fan_out``), handled here
and only here, the orientation bug of the FedEx reference code (``docs/algorithms.md §1``).

Two storages (``model.base-delta``, ``docs/precision.md §3``):

* ``fold``: ``W = cast(W0 + D)`` written into the base weight, from a pristine float32 copy of
  ``W0`` (never an accumulation of in-place additions that drifts; the copy is taken the first time
  a delta is set, so strategies that never change the base pay nothing). Exact only for a float32
  base: a bf16 weight keeps 8 significant bits, so a residual far below ``|W0|`` is rounded away.
* ``float32``: ``D`` is kept beside the base as a float32 ``(m, n)`` tensor and applied in the
  forward pass, ``y = base(x) + x Dᵀ`` (a forward hook on the base layer; the product in float32,
  added in the base's output dtype like PEFT adds the adapter's). The base weights are never
  touched, so a bf16, fp16 or 4-bit base carries the exact float32 ``D``. Cost: 4 bytes per adapted
  weight element, allocated when a delta is first set and freed when the base returns to ``W0``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from torch.utils.hooks import RemovableHandle

from adapters.peft_model import unwrap

Storage = Literal["fold", "float32"]


class BaseWeights:
    """The adapted modules' base weights of a PEFT model, and setting their base to ``W0 + D``."""

    def __init__(self, model: Any, *, storage: Storage = "fold") -> None:
        if storage not in ("fold", "float32"):
            raise ValueError(f"base-delta storage must be 'fold' or 'float32', got {storage!r}")
        self.storage: Storage = storage
        self._layers: dict[str, LoraLayer] = {}
        for name, module in unwrap(model).named_modules():
            if isinstance(module, LoraLayer) and "default" in module.lora_A:
                self._layers[name] = module
        if storage == "fold":
            packed = [n for n, layer in self._layers.items() if not _plain_float(layer)]
            if packed:
                raise ValueError(
                    f"`model.base-delta = fold` cannot write into the quantized base weight of {packed[0]}; "
                    "use `model.base-delta = float32`"
                )
        self._pristine: dict[str, torch.Tensor] = {}  # fold: float32 W0, stored orientation
        self._delta: dict[str, torch.Tensor] = {}  # float32: D, (m, n)
        self._hooks: dict[str, RemovableHandle] = {}

    @property
    def modules(self) -> list[str]:
        """Adapted module names, sorted (the layout's names)."""
        return sorted(self._layers)

    def shape(self, module: str) -> tuple[int, int]:
        """``(m, n)`` of ``module`` (out, in), whatever its storage orientation or quantization."""
        base: Any = self._layers[module].get_base_layer()  # nn.Linear, bitsandbytes' Linear4bit/8bitLt, or Conv1D
        if hasattr(base, "out_features") and hasattr(base, "in_features"):
            return int(base.out_features), int(base.in_features)
        stored = tuple(base.get_parameter("weight").shape)  # Conv1D: (n, m)
        return (stored[1], stored[0]) if self._fan_in_fan_out(module) else (stored[0], stored[1])

    def _fan_in_fan_out(self, module: str) -> bool:
        return bool(getattr(self._layers[module], "fan_in_fan_out", False))

    def _weight(self, module: str) -> torch.Tensor:
        weight: torch.Tensor = self._layers[module].get_base_layer().get_parameter("weight")
        return weight

    def _checked(self, module: str, delta: np.ndarray) -> torch.Tensor:
        if tuple(delta.shape) != self.shape(module):
            raise ValueError(f"base delta for {module} has shape {tuple(delta.shape)}, expected (m, n) = {self.shape(module)}")
        return torch.from_numpy(np.ascontiguousarray(delta, dtype=np.float32))  # (m, n)

    def set(self, deltas: Mapping[str, np.ndarray]) -> None:
        """Set every adapted module's base to ``W0 + D`` (``D: (m, n)``; missing modules: ``D = 0``)."""
        unknown = sorted(set(deltas) - set(self._layers))
        if unknown:
            raise ValueError(f"base delta for modules the model does not adapt: {unknown[:3]}")
        checked = {name: self._checked(name, delta) for name, delta in deltas.items()}
        if self.storage == "fold":
            self._set_folded(checked)
        else:
            self._set_beside(checked)

    def _set_folded(self, deltas: Mapping[str, torch.Tensor]) -> None:
        if not deltas and not self._pristine:
            return  # still the pristine base
        if not self._pristine:
            self._pristine = {n: self._weight(n).detach().to(torch.float32).clone() for n in self._layers}
        for name in self._layers:
            pristine, weight = self._pristine[name], self._weight(name)
            d = deltas.get(name)
            with torch.no_grad():
                if d is None:
                    weight.copy_(pristine.to(weight.dtype))
                    continue
                d = d.to(pristine.device)
                if self._fan_in_fan_out(name):
                    d = d.T  # Conv1D stores (n, m)
                weight.copy_((pristine + d).to(weight.dtype))

    def _set_beside(self, deltas: Mapping[str, torch.Tensor]) -> None:
        for name, layer in self._layers.items():
            d = deltas.get(name)
            if d is None:
                self._delta.pop(name, None)
                handle = self._hooks.pop(name, None)
                if handle is not None:
                    handle.remove()
                continue
            held = self._delta.get(name)
            if held is None:
                device = self._weight(name).device
                self._delta[name] = d.to(device=device, copy=True)
                self._hooks[name] = layer.get_base_layer().register_forward_hook(self._apply_hook(name))
            else:
                with torch.no_grad():
                    held.copy_(d)

    def _apply_hook(self, name: str) -> Any:
        def add_delta(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            d = self._delta[name]  # D: (m, n), float32
            x = args[0]  # (..., n)
            with torch.autocast(device_type=x.device.type, enabled=False):
                extra = F.linear(x.to(d.dtype), d)  # (..., m), float32
            return output + extra.to(output.dtype)

        return add_delta

    def current(self) -> dict[str, np.ndarray]:
        """``D`` per module as this model holds it, ``(m, n)`` float32 (for checks and exports)."""
        return {name: d.astype(np.float32) for name, d in self.effective().items()}

    def effective(self) -> dict[str, np.ndarray]:
        """The base change each module actually applies, ``(m, n)`` float64.

        ``float32``: ``D`` itself. ``fold``: the stored weight minus the pristine ``W0``, so a delta
        that the base dtype rounded (a bf16 base) shows here as it acts, not as it was sent
        (``docs/precision.md §4``: the exactness audit reads this).
        """
        out = {}
        for name in self._layers:
            m, n = self.shape(name)
            if self.storage == "float32":
                d = self._delta.get(name)
                out[name] = np.zeros((m, n)) if d is None else d.detach().cpu().double().numpy()
                continue
            if not self._pristine:
                out[name] = np.zeros((m, n))
                continue
            diff = self._weight(name).detach().double() - self._pristine[name].double()
            out[name] = (diff.T if self._fan_in_fan_out(name) else diff).cpu().numpy()
        return out

    def memory_bytes(self) -> int:
        """Bytes this object holds beside the model now (pristine copies or float32 deltas)."""
        held = self._pristine.values() if self.storage == "fold" else self._delta.values()
        return sum(t.numel() * t.element_size() for t in held)

    def materialize(self) -> None:
        """Write ``float32``-stored deltas into the base weights, upcast to float32 (for a merged
        export: ``W0 + D`` exactly), and drop the hooks. A quantized base cannot take it.

        Raises
        ------
        ValueError
            A module with a delta whose base is quantized.
        """
        for name, d in list(self._delta.items()):
            layer = self._layers[name]
            if not _plain_float(layer):
                raise ValueError(f"cannot merge the base delta into the quantized weight of {name}")
            weight = self._weight(name)
            with torch.no_grad():
                weight.data = weight.data.to(torch.float32) + (d.T if self._fan_in_fan_out(name) else d)
            self._hooks.pop(name).remove()
            del self._delta[name]


def _plain_float(layer: LoraLayer) -> bool:
    """Whether the base layer's weight is a plain float tensor (not a bitsandbytes packed one)."""
    weight = layer.get_base_layer().get_parameter("weight")
    return type(weight) in (torch.Tensor, torch.nn.Parameter) and weight.is_floating_point()


def adapted_elements(model: Any) -> int:
    """``Σ m·n`` over the adapted modules: the elements a dense float32 base delta holds."""
    weights = BaseWeights(model, storage="float32")  # reads shapes only: any base, quantized too
    return sum(m * n for m, n in (weights.shape(name) for name in weights.modules))
