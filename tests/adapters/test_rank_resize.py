"""Changing a plain LoRA adapter's rank in place (per-client ranks, docs/algorithms.md §18)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapters.base_delta import BaseWeights
from adapters.payload import extract, layout, load
from adapters.rank_resize import lora_rank, set_lora_rank
from client.tasks.setup import build_task_and_model
from contract import parse_run_config

RUN = {"model.name": "tiny-llama", "task.name": "arithmetic", "adapter.rank": 4, "adapter.alpha": 8.0, "strategy.name": "fedit"}


def test_a_resized_adapter_has_the_new_shapes_and_scale_and_the_base_is_untouched() -> None:
    model = build_task_and_model(parse_run_config(RUN), "lora").model
    base = BaseWeights(model)
    assert lora_rank(model) == 4 and set_lora_rank(model, 4) is False  # same rank: nothing changes
    assert set_lora_rank(model, 8) is True and lora_rank(model) == 8
    payload = extract(model)
    a_key = next(k for k in payload if k.endswith("lora_A.weight"))
    assert payload[a_key].shape[0] == 8
    assert {entry["scale"] for entry in layout(model).values()} == {8.0 / 8}
    assert all(np.abs(d).max() == 0 for d in base.current().values())  # W = W0 still
    rng = np.random.default_rng(0)
    new = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in payload.items()}
    load(model, new)  # a rank-8 payload fits
    np.testing.assert_array_equal(extract(model)[a_key], new[a_key])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    ids = torch.tensor([[5, 40, 77]])
    with torch.no_grad():
        model(input_ids=ids)  # the forward pass runs at the new rank


def test_adapters_with_frozen_shared_factors_refuse_another_rank() -> None:
    model = build_task_and_model(parse_run_config({**RUN, "strategy.name": "fedsb"}), "lora-sb").model
    assert set_lora_rank(model, 4) is False  # its own rank: allowed, nothing to do
    with pytest.raises(ValueError, match="plain LoRA"):
        set_lora_rank(model, 8)
