"""rsLoRA as a Corolla adapter kind: the worked example of "Extending Corolla" (``docs/``), in one module.

rsLoRA (Kalajdzievski 2023, arXiv 2312.03732 §3) is LoRA with the rank-stabilised scale
``s = alpha / √r`` instead of ``alpha / r``: with ``1/r`` the update's contribution shrinks as the rank
grows and high ranks learn no better than low ones; ``1/√r`` keeps it stable. PEFT implements it
(``LoraConfig.use_rslora``), so the kind only switches it on. Its factors are LoRA's ``B: (m, r)``,
``A: (r, n)`` under the same keys, so it has the ``"pair"`` layout form and reuses plain LoRA's
numpy-side maths; every strategy that aggregates LoRA (FedIT, FedEx-LoRA, FLoRA) takes it, reading
the scale from the layout.

Importing this module registers the kind; nothing else in Corolla names it. A run selects it with
``adapter.name = "rslora"`` (the process that builds models must import this module first).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from peft import LoraConfig
from peft.tuners.lora import LoraLayer

from adapters.adapter_kind import AdapterKind, Arrays, LayoutEntry, ModuleParams, ProjectedUpdate
from adapters.kind_registry import register_adapter_kind
from adapters.plain_lora import PAIR, pair_projected, pair_update

if TYPE_CHECKING:
    from adapters.lora import AdapterSpec


def rank_stabilised_scale(alpha: float, rank: int) -> float:
    """``alpha / √r`` (arXiv 2312.03732 §3)."""
    return alpha / math.sqrt(rank)


@register_adapter_kind
class RsLora(AdapterKind):
    """``rslora``: LoRA with ``s = alpha / √r``."""

    name = "rslora"
    paper = "arXiv 2312.03732"
    summary = "rsLoRA: LoRA with the rank-stabilised scale s = alpha / sqrt(r)"
    trains = "A, B (+head)"
    frozen_layers = ()
    layout_keys = PAIR
    layout_form = "pair"  # LoRA's numpy form: the scale travels in the layout

    def configure(self, config: LoraConfig, spec: AdapterSpec) -> LoraConfig:
        config.use_rslora = True  # PEFT: scaling = lora_alpha / sqrt(r)
        return config

    def detect(self, config: LoraConfig, layer: LoraLayer) -> bool:
        """LoRA's structure (A and B, nothing frozen) built with ``use_rslora``."""
        return super().detect(config, layer) and bool(config.use_rslora)

    def factored_update(
        self, module: str, entry: LayoutEntry, before: Arrays, after: Arrays, frozen: Arrays
    ) -> tuple[np.ndarray, np.ndarray]:
        return pair_update(entry, before, after)

    def left_projected(
        self, module: str, entry: LayoutEntry, before: Arrays, after: Arrays, frozen: Arrays,
        project: Callable[[np.ndarray], np.ndarray],
    ) -> ProjectedUpdate:
        return pair_projected(entry, before, after, project)

    def module_params(self, m: int, n: int, spec: AdapterSpec) -> ModuleParams:
        """LoRA's ``r·(m + n)``: the scale changes, the parameters do not."""
        return ModuleParams(trained=spec.rank * (m + n), frozen=0)
