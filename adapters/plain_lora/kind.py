"""Plain LoRA (Hu et al. 2021, arXiv 2106.09685 §4.1): ``W = W0 + s·B A``, both factors trained.

``B: (m, r)``, ``A: (r, n)``, ``s = alpha / r``; PEFT draws A Kaiming-uniform and sets B = 0, so the
adapted model starts equal to the base. The numpy-side maths below (the update as factors, its
projection) is that of every kind of the ``"pair"`` layout form, which rsLoRA-style kinds reuse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from peft import LoraConfig
from peft.tuners.lora import LoraLayer

from adapters.adapter_kind import AdapterKind, Arrays, LayoutEntry, ModuleParams, ProjectedUpdate
from adapters.kind_registry import register_adapter_kind
from adapters.low_rank import thin_svd_of_product

if TYPE_CHECKING:
    from adapters.lora import AdapterSpec

PAIR = {"a_key": "lora_A", "b_key": "lora_B"}


def _f64(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def pair_update(entry: LayoutEntry, before: Arrays, after: Arrays) -> tuple[np.ndarray, np.ndarray]:
    """``s(B1 A1 − B0 A0) = [sB1, −sB0] @ [A1; A0]``: ``(m, 2r)`` and ``(2r, n)``, rank <= 2r."""
    s = float(entry["scale"])
    b1, a1, b0, a0 = (_f64(p[entry[k]]) for p in (after, before) for k in ("b_key", "a_key"))
    return np.c_[s * b1, -s * b0], np.r_[a1, a0]


def pair_projected(
    entry: LayoutEntry, before: Arrays, after: Arrays, project: Callable[[np.ndarray], np.ndarray]
) -> ProjectedUpdate:
    """``B, A`` of rank r nearest to ``B0 A0 + P(B1 A1 − B0 A0)``: a truncated SVD of the rank <= 3r
    target (exact when ``B0 A0 = 0``, i.e. in round 1; otherwise the discarded energy is ``lost``)."""
    b1, a1, b0, a0 = (_f64(p[entry[k]]) for p in (after, before) for k in ("b_key", "a_key"))
    r = b1.shape[1]
    # B0A0 + P(B1A1 - B0A0) as factors [B0, PB1, -PB0] @ [A0; A1; A0]: rank <= 3r
    u, s, vh = thin_svd_of_product(np.c_[b0, project(b1), -project(b0)], np.r_[a0, a1, a0])
    k = min(r, s.size)
    root = np.sqrt(s[:k])
    new_b, new_a = np.zeros_like(b1), np.zeros_like(a1)
    new_b[:, :k], new_a[:k] = u[:, :k] * root, root[:, None] * vh[:k]
    arrays = {entry["b_key"]: new_b.astype(np.float32), entry["a_key"]: new_a.astype(np.float32)}
    return ProjectedUpdate(arrays, lost=float(np.sum(s[k:] ** 2)), total=float(np.sum(s**2)))


@register_adapter_kind
class PlainLora(AdapterKind):
    """``lora``: PEFT's own LoRA, unchanged."""

    name = "lora"
    paper = "arXiv 2106.09685"
    summary = "LoRA: W0 + s·B A with s = alpha / r, both factors trained"
    trains = "A, B (+head)"
    frozen_layers = ()
    layout_keys = PAIR
    layout_form = "pair"

    def configure(self, config: LoraConfig, spec: AdapterSpec) -> LoraConfig:
        return config

    def detect(self, config: LoraConfig, layer: LoraLayer) -> bool:
        """A and B, nothing frozen, and PEFT's default scale ``alpha / r`` (rsLoRA's is another kind)."""
        return super().detect(config, layer) and not config.use_rslora

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
        """``r·(m + n)`` trained, nothing frozen."""
        return ModuleParams(trained=spec.rank * (m + n), frozen=0)
