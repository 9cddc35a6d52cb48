"""ABBA (arXiv 2505.14238), the ``abba`` kind: ``W = W0 + s·(B1 A1) ⊙ (B2 A2)``, all four factors trained.

``B1: (m, r1)`` is ``lora_B``, ``A1: (r1, n)`` ``lora_A``, ``B2: (m, r2)`` ``lora_B2``, ``A2: (r2, n)``
``lora_A2`` (``adapters.abba.layer``); ``r1, r2`` come from ``AdapterSpec.ranks()``. The update has rank
up to ``r1·r2``, so there is no plain-LoRA export of it: ``merged/`` is always written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from peft import LoraConfig

from adapters.abba.layer import A2_LAYER, B2_LAYER, configure_abba
from adapters.adapter_kind import AdapterKind, Arrays, LayoutEntry, ModuleParams
from adapters.kind_registry import register_adapter_kind

if TYPE_CHECKING:
    from adapters.lora import AdapterSpec


def _rows_khatri_rao(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Row-wise Khatri-Rao: ``(m, r1 r2)`` with ``[i, p·r2 + q] = b1[i, p]·b2[i, q]``."""
    return (b1[:, :, None] * b2[:, None, :]).reshape(b1.shape[0], -1)


@register_adapter_kind
class Abba(AdapterKind):
    """``abba``: a Hadamard product of two low-rank pairs, ranks ``rank1``/``rank2``, ``s = alpha``."""

    name = "abba"
    paper = "arXiv 2505.14238"
    summary = "ABBA: W0 + s·(B1 A1) ⊙ (B2 A2), two low-rank pairs, all four factors trained"
    trains = "B1, A1, B2, A2 (+head)"
    frozen_layers = ()
    layout_keys = {"a_key": "lora_A", "b_key": "lora_B", "a2_key": A2_LAYER, "b2_key": B2_LAYER}
    layout_form = "hadamard-pairs"
    merged_export = True  # the adapter needs Corolla's ABBA layer to load; merged/ is the portable form

    def configure(self, config: LoraConfig, spec: AdapterSpec) -> LoraConfig:
        """``r = r1`` to PEFT, ``r2`` and ``s`` on the config (``configure_abba``)."""
        rank1, rank2 = spec.ranks()
        config.r = rank1
        return configure_abba(config, rank2=rank2)

    def factored_update(
        self, module: str, entry: LayoutEntry, before: Arrays, after: Arrays, frozen: Arrays
    ) -> tuple[np.ndarray, np.ndarray]:
        """``s·(B1A1)⊙(B2A2)`` difference through ``s·KR(B1, B2)·KR(A1ᵀ, A2ᵀ)ᵀ``: rank <= 2 r1 r2."""
        s = float(entry["scale"])

        def khatri_rao(payload: Arrays) -> tuple[np.ndarray, np.ndarray]:
            b1, a1, b2, a2 = (np.asarray(payload[entry[k]], dtype=np.float64) for k in ("b_key", "a_key", "b2_key", "a2_key"))
            return _rows_khatri_rao(b1, b2), _rows_khatri_rao(a1.T, a2.T).T  # (m, r1 r2), (r1 r2, n)

        (l1, r1), (l0, r0) = khatri_rao(after), khatri_rao(before)
        return np.c_[s * l1, -s * l0], np.r_[r1, r0]

    def module_params(self, m: int, n: int, spec: AdapterSpec) -> ModuleParams:
        """``(r1 + r2)·(m + n)`` trained, nothing frozen."""
        rank1, rank2 = spec.ranks()
        return ModuleParams(trained=(rank1 + rank2) * (m + n), frozen=0)
