"""Exporting the final global model into the run folder.

``adapter/`` is always a PEFT adapter that ``PeftModel.from_pretrained`` loads: plain LoRA for
LoRA and FFA, and for LoRA-SB the equivalent plain LoRA with ``B' = B·R``. When the strategy also
changed the frozen base (FedEx-LoRA, FLoRA), the adapter alone no longer reproduces the model, so
``merged/`` gets the merged weights ``W0 + D + s·B A`` as a plain transformers checkpoint. ABBA
always gets ``merged/`` (``W0 + s·(B1 A1) ⊙ (B2 A2)``): its ``adapter/`` needs Corolla's ABBA layer
to load (``adapters.abba``), plain PEFT cannot rebuild it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from adapters.base_delta import BaseWeights
from adapters.lora_sb import save_as_lora
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
    """Write ``adapter/`` (and ``merged/`` when the base changed). Consumes ``model`` (merges it)."""
    load(model, dict(payload))
    if adapter_kind == "lora-sb":
        save_as_lora(model, folder.adapter_dir)
    else:
        model.save_pretrained(folder.adapter_dir)
    if base_deltas:
        base.set(base_deltas)
    if base_deltas or adapter_kind == "abba":
        model.merge_and_unload().save_pretrained(folder.merged_dir)
        tokenizer.save_pretrained(folder.merged_dir)
