"""Exporting the final global model into the run folder.

``adapter/`` is always a PEFT adapter that ``PeftModel.from_pretrained`` loads, written by the adapter
kind (``AdapterKind.export_adapter``): plain LoRA for LoRA and FFA, and for LoRA-SB the equivalent
plain LoRA with ``B' = B·R``. When the strategy also changed the frozen base (FedEx-LoRA, FLoRA), the
adapter alone no longer reproduces the model, so ``merged/`` gets the merged weights ``W0 + D + ΔW``
as a plain transformers checkpoint. A kind whose adapter needs Corolla's own layers to load
(``AdapterKind.merged_export``; ABBA, ``W0 + s·(B1 A1) ⊙ (B2 A2)``) always gets ``merged/`` too.

A base delta kept beside a low-precision base (``model.base-delta = float32``) is merged into
float32 copies of the adapted weights, so ``merged/`` holds ``W0 + D + ΔW`` exactly. A quantized
base cannot take it: ``merged/`` is not written, and ``base-delta.safetensors`` (``D`` per module,
``(m, n)`` float32) goes beside ``adapter/`` instead (``docs/precision.md §3``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from adapters.base_delta import BaseWeights
from adapters.kind_registry import get_adapter_kind
from adapters.payload import load
from server.run_folder import RunFolder


def export_final(
    model: Any,
    tokenizer: Any,
    payload: Mapping[str, np.ndarray],
    folder: RunFolder,
    *,
    adapter_kind: str,
    base: BaseWeights,
    base_deltas: Mapping[str, np.ndarray] | None,
) -> None:
    """Write ``adapter/`` (and ``merged/`` when the base changed or the kind needs it). Consumes ``model``
    (merges it)."""
    kind = get_adapter_kind(adapter_kind)
    load(model, dict(payload))
    kind.export_adapter(model, folder.adapter_dir)
    if base_deltas:
        base.set(base_deltas)
        if base.storage == "float32":
            try:
                base.materialize()
            except ValueError:  # a quantized base: D goes beside the adapter, no merged/
                from safetensors.numpy import save_file

                save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in base_deltas.items()},
                          str(folder.path / "base-delta.safetensors"))
                return
    if base_deltas or kind.merged_export:
        model.merge_and_unload().save_pretrained(folder.merged_dir)
        tokenizer.save_pretrained(folder.merged_dir)
