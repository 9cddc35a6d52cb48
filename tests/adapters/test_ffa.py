"""FFA-LoRA: A frozen from the shared seed, only B (+head) trains and travels."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from peft import PeftModel

from adapters.frozen import factors_hash, frozen_factors, load_frozen_factors
from adapters.kind_registry import adapter_kind_of
from adapters.models import build_base_model
from adapters.payload import extract, layout, load
from tests.adapters.toys import (
    LAYERS, RANK, SHAPES, gpt2_base, one_layer, stored_to_mn, tiny_gpt2, tiny_llama, token_batches,
)

HEAD = 3 * 256
B_PARAMS = RANK * 4 * (256 + 128)  # B: (m, r) of q_proj (m = 256) and v_proj (m = 128) in 4 layers


def test_only_b_and_head_train_and_travel() -> None:
    model = tiny_llama("ffa")
    assert adapter_kind_of(model) == "ffa"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all("lora_B" in n or "score" in n for n in trainable) and not any("lora_A" in n for n in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == B_PARAMS + HEAD
    payload = extract(model)
    assert sum(v.size for v in payload.values()) == B_PARAMS + HEAD
    assert all(k.endswith(("lora_B.weight", "score.weight")) for k in payload)
    assert all(set(e) == {"b_key", "scale", "fan_in_fan_out", "form"} for e in layout(model).values())
    assert set(frozen_factors(model)) == {k.replace("lora_B", "lora_A") for k in payload if "lora_B" in k}
    model.base_model.set_adapter("default")  # PEFT re-activating the adapter keeps A frozen
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable


def test_a_is_unchanged_by_an_optimizer_step_and_b_moves() -> None:
    model = tiny_llama("ffa")
    digest, before = factors_hash(model), extract(model)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = token_batches(260, sizes=(4,), seed=3)[0]
    model(input_ids=batch["input_ids"], labels=batch["labels"]).loss.backward()
    opt.step()
    assert factors_hash(model) == digest
    after = extract(model)
    assert all(not np.array_equal(before[k], after[k]) for k in after)


def test_a_comes_from_the_shared_seed_and_can_be_distributed() -> None:
    server, same, other = tiny_llama("ffa", seed=1), tiny_llama("ffa", seed=1), tiny_llama("ffa", seed=2)
    assert factors_hash(server) == factors_hash(same) != factors_hash(other)
    load_frozen_factors(other, frozen_factors(server), expected_hash=factors_hash(server))
    load(other, extract(server))
    ids = token_batches(260, sizes=(2,), seed=9)[0]["input_ids"]
    with torch.no_grad():
        assert torch.equal(other(input_ids=ids).logits, server(input_ids=ids).logits)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_orientation_forward_and_merge(layer: str, m: int, n: int) -> None:
    model = one_layer(layer, m, n, method="ffa")
    proj = model.base_model.model.proj
    rng = np.random.default_rng(0)
    b = torch.from_numpy(rng.standard_normal((m, RANK)))  # B: (m, r)
    with torch.no_grad():
        proj.lora_B["default"].weight.copy_(b)
    a = proj.lora_A["default"].weight.detach()  # A: (r, n)
    x = torch.randn(5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w0 = stored_to_mn(proj.get_base_layer().weight, layer)
    expected = x @ (w0 + proj.scaling["default"] * b @ a).T + proj.get_base_layer().bias
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    merged = copy.deepcopy(model).merge_and_unload().proj.weight
    assert merged.shape == proj.get_base_layer().weight.shape  # (n, m) for Conv1D: a transpose would not fit
    torch.testing.assert_close(model(x), copy.deepcopy(model).merge_and_unload()(x), rtol=1e-12, atol=1e-12)


def test_conv1d_gpt2_trains_b_only_and_saves_as_plain_lora(tmp_path) -> None:
    model = tiny_gpt2("ffa")
    assert all(e["fan_in_fan_out"] for e in layout(model).values())
    rng = np.random.default_rng(2)
    load(model, {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in extract(model).items()})
    ids = token_batches(64, sizes=(2,), seed=9)[0]["input_ids"] % 64
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    model.save_pretrained(str(tmp_path / "ffa"))  # FFA-LoRA is standard LoRA on disk
    loaded = PeftModel.from_pretrained(gpt2_base(), str(tmp_path / "ffa"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected, rtol=1e-6, atol=1e-6)


def test_starts_equal_to_the_base_model() -> None:
    # B = 0 at the start, as in LoRA: the adapted model is the base model
    model = tiny_llama("ffa", kind="causal-lm")
    base = build_base_model("tiny-llama", kind="causal-lm").model
    ids = token_batches(260, sizes=(2,), seed=9)[0]["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, base(input_ids=ids).logits)
