"""FFA-LoRA (arXiv 2403.12313): standard PEFT LoRA with ``A`` frozen, so only ``B`` (and a head) train.

``W = W0 + s·B A`` with ``A: (r, n)`` fixed at its random initialisation and ``B: (m, r)`` starting at
zero, as in LoRA. With A shared, FedAvg of B is exact: ``mean_i(B_i) A = mean_i(B_i A)``, and DP
noise is not multiplied through a second trained factor (the paper's two motivations; section
numbers of that paper were not checked). Every client MUST hold the same A: it is drawn from the
shared ``init_seed`` and can be distributed and verified with ``adapters.frozen``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from peft import LoraConfig, PeftModel

from adapters.adapter_kind import AdapterKind, Arrays, LayoutEntry, ModuleParams, ProjectedUpdate
from adapters.ffa_lora.freeze import FROZEN_LAYERS, freeze_lora_a
from adapters.kind_registry import register_adapter_kind

if TYPE_CHECKING:
    from adapters.lora import AdapterSpec


def _f64(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


@register_adapter_kind
class FfaLora(AdapterKind):
    """``ffa``: LoRA with A frozen (sent once, or regenerated from the seed)."""

    name = "ffa"
    paper = "arXiv 2403.12313"
    summary = "FFA-LoRA: LoRA with A frozen at its random init, so averaging B is exact"
    trains = "B (+head)"
    frozen_layers = FROZEN_LAYERS
    layout_keys = {"b_key": "lora_B"}
    layout_form = "b-only"

    def configure(self, config: LoraConfig, spec: AdapterSpec) -> LoraConfig:
        return config

    def finalize(self, model: PeftModel) -> None:
        freeze_lora_a(model)

    def factored_update(
        self, module: str, entry: LayoutEntry, before: Arrays, after: Arrays, frozen: Arrays
    ) -> tuple[np.ndarray, np.ndarray]:
        """``s(B1 − B0) A``: ``(m, r)`` and the frozen ``A: (r, n)``."""
        a = _f64(frozen[f"{module}.lora_A.weight"])
        return float(entry["scale"]) * (_f64(after[entry["b_key"]]) - _f64(before[entry["b_key"]])), a

    def left_projected(
        self, module: str, entry: LayoutEntry, before: Arrays, after: Arrays, frozen: Arrays,
        project: Callable[[np.ndarray], np.ndarray],
    ) -> ProjectedUpdate:
        """``B' = B0 + P(B1 − B0)``: exact, the projection acts on B's side."""
        b0, b1 = (_f64(p[entry["b_key"]]) for p in (before, after))
        return ProjectedUpdate({entry["b_key"]: (b0 + project(b1 - b0)).astype(np.float32)}, lost=0.0, total=0.0)

    def module_params(self, m: int, n: int, spec: AdapterSpec) -> ModuleParams:
        """``r·m`` trained (B), ``r·n`` frozen (A)."""
        return ModuleParams(trained=spec.rank * m, frozen=spec.rank * n)
