"""Exporting the final global model into the run folder.

``adapter/`` is always a PEFT adapter that ``PeftModel.from_pretrained`` loads, written by the adapter
kind (``AdapterKind.export_adapter``): plain LoRA for LoRA and FFA, and for LoRA-SB the equivalent
plain LoRA with ``B' = B·R``. When the strategy also changed the frozen base (FedEx-LoRA, FLoRA), the
adapter alone no longer reproduces the model, so ``merged/`` gets the merged weights ``W0 + D + ΔW``
as a plain transformers checkpoint. A kind whose adapter needs Corolla's own layers to load
(``AdapterKind.merged_export``; ABBA, ``W0 + s·(B1 A1) ⊙ (B2 A2)``) always gets ``merged/`` too.
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
    if base_deltas or kind.merged_export:
        model.merge_and_unload().save_pretrained(folder.merged_dir)
        tokenizer.save_pretrained(folder.merged_dir)
