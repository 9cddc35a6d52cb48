"""LoRA-SB / Fed-SB on whole models: payload, frozen factors, set-up, export (``docs/algorithms.md §8-§9``, ``docs/exactness.md §6``)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from peft import PeftModel

from adapters.frozen import factors_hash, frozen_factors, hash_arrays, leading_factors, load_frozen_factors
from adapters.kind_registry import adapter_kind_of
from adapters.lora_sb import (
    estimate_gradients,
    init_from_gradients,
    initialise_lora_sb,
    install_factors,
    read_factors,
    save_as_lora,
)
from adapters.models import build_base_model
from adapters.payload import PayloadError, extract, layout, load
from tests.adapters.toys import RANK, gpt2_base, tiny_gpt2, tiny_llama, token_batches

ETA = 1e-3
M_LLAMA = 8  # q_proj and v_proj in 4 layers
HEAD = 3 * 256


def cls_loss(model, batch):
    return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss


def lm_loss(model, batch):
    return model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def initialised():
    """tiny-llama classifier with LoRA-SB set up from 5 samples (batches of 3, the last one cut)."""
    model = tiny_llama("lora-sb")
    factors = initialise_lora_sb(model, token_batches(260, sizes=(3, 3)), cls_loss, eta=ETA, num_samples=5)
    return model, factors


def test_payload_is_exactly_r_and_the_head(initialised) -> None:
    model, _ = initialised
    payload = extract(model)
    assert adapter_kind_of(model) == "lora-sb"
    assert all(k.endswith("lora_R.weight") for k in payload if not k.endswith("score.weight"))
    assert sum(v.size for v in payload.values()) == M_LLAMA * RANK**2 + HEAD
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == M_LLAMA * RANK**2 + HEAD
    lay = layout(model)
    assert len(lay) == M_LLAMA and all(set(e) == {"r_key", "scale", "fan_in_fan_out", "form"} for e in lay.values())
    frozen = frozen_factors(model)
    assert len(frozen) == 2 * M_LLAMA and not set(frozen) & set(payload)
    assert all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in frozen)


def test_set_up_moves_the_model_and_installs_orthonormal_factors(initialised) -> None:
    model, factors = initialised
    base = tiny_llama("lora-sb")  # B = R = 0 until factors are installed: the base model
    ids = token_batches(260, sizes=(2,), seed=9)[0]["input_ids"]
    assert not torch.allclose(logits(model, ids), logits(base, ids))  # W_init = W0 + [ΔŴ]_r ≠ W0 (docs/algorithms.md §8.2 step 5)
    installed = read_factors(model)
    assert list(installed) == list(factors) == sorted(layout(model))
    for name, (b, r0, a) in factors.items():
        np.testing.assert_allclose(b.T @ b, np.eye(RANK), atol=1e-5)
        np.testing.assert_allclose(a @ a.T, np.eye(RANK), atol=1e-5)
        for x, y in zip(installed[name], (b, r0, a), strict=True):
            np.testing.assert_array_equal(x, y)


def test_client_gets_bit_identical_model_from_frozen_factors_and_payload(initialised) -> None:
    server, _ = initialised
    client = tiny_llama("lora-sb")
    digest = factors_hash(server)
    assert factors_hash(client) != digest
    load_frozen_factors(client, frozen_factors(server), expected_hash=digest)
    load(client, extract(server))
    assert factors_hash(client) == digest == hash_arrays(frozen_factors(server))
    ids = token_batches(260, sizes=(2,), seed=9)[0]["input_ids"]
    assert torch.equal(logits(client, ids), logits(server, ids))
    with pytest.raises(PayloadError, match="hash"):
        load_frozen_factors(client, frozen_factors(server), expected_hash="0" * 64)


def test_training_moves_only_r_and_the_head_and_round_trips_bit_exactly(initialised) -> None:
    model = copy.deepcopy(initialised[0])
    digest, before = factors_hash(model), extract(model)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    cls_loss(model, token_batches(260, sizes=(4,), seed=3)[0]).backward()
    opt.step()
    after = extract(model)
    assert factors_hash(model) == digest  # B and A unchanged (Fed-SB invariant 2)
    assert all(not np.array_equal(before[k], after[k]) for k in after)  # every R and the head moved
    twin = tiny_llama("lora-sb")
    load_frozen_factors(twin, frozen_factors(model))
    load(twin, after)
    for key, value in extract(twin).items():
        np.testing.assert_array_equal(value, after[key])
    merged = copy.deepcopy(model).eval().merge_and_unload()
    ids = token_batches(260, sizes=(2,), seed=9)[0]["input_ids"]
    torch.testing.assert_close(logits(merged, ids), logits(model.eval(), ids), rtol=1e-5, atol=1e-5)


def test_federated_set_up_equals_pooled_set_up() -> None:
    # docs/algorithms.md §9.2: clients upload summed raw gradients; the server sums, then takes the sign
    batches = token_batches(260, sizes=(3, 2, 3), seed=4)
    model = tiny_llama("lora-sb")
    rng_state = torch.get_rng_state()
    pooled = estimate_gradients(model, batches, cls_loss)
    clients = [estimate_gradients(model, batches[:2], cls_loss), estimate_gradients(model, batches[2:], cls_loss)]
    summed = {k: clients[0][k] + clients[1][k] for k in pooled}
    for k in pooled:
        np.testing.assert_allclose(summed[k], pooled[k], rtol=1e-5, atol=1e-9)
    factors = init_from_gradients(summed, RANK, eta=ETA)
    install_factors(model, factors)
    assert torch.equal(torch.get_rng_state(), rng_state)  # set-up never touches the global RNG (docs/exactness.md §6)
    assert set(frozen_factors(model)) == {f"{m}.lora_{x}.weight" for m in factors for x in "AB"}


def test_conv1d_model_set_up_and_merge() -> None:
    model = tiny_gpt2("lora-sb")
    batches = [{"input_ids": b["input_ids"] % 64} for b in token_batches(64, sizes=(2, 2), seed=5)]
    grads = estimate_gradients(model, batches, lm_loss)
    prefix = "base_model.model.transformer.h.0."
    assert {k.removeprefix(prefix): v.shape for k, v in grads.items()} == {  # G: (m, n), Conv1D transposed back
        "attn.c_attn": (96, 32), "attn.c_proj": (32, 32), "mlp.c_fc": (128, 32), "mlp.c_proj": (32, 128)}
    install_factors(model, init_from_gradients(grads, RANK, eta=ETA))
    ids = batches[0]["input_ids"]
    unmerged = logits(model, ids)
    assert not torch.allclose(unmerged, logits(tiny_gpt2("lora-sb"), ids))
    torch.testing.assert_close(logits(copy.deepcopy(model).merge_and_unload(), ids), unmerged, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("which", ["tiny-llama-classifier", "tiny-gpt2-conv1d"])
def test_export_loads_as_plain_peft_lora_with_the_same_outputs(which: str, tmp_path) -> None:
    rng = np.random.default_rng(6)
    if which == "tiny-llama-classifier":
        model = tiny_llama("lora-sb")
        ids = token_batches(260, sizes=(2,), seed=9)[0]["input_ids"]
        fresh = build_base_model("tiny-llama", kind="sequence-classification", num_labels=3).model
    else:
        model = tiny_gpt2("lora-sb")
        ids = token_batches(64, sizes=(2,), seed=9)[0]["input_ids"] % 64
        fresh = gpt2_base()
    factors = {n: (np.linalg.qr(rng.standard_normal((f.B.shape[0], RANK)))[0], rng.standard_normal((RANK, RANK)),
                   np.linalg.qr(rng.standard_normal((f.A.shape[1], RANK)))[0].T) for n, f in read_factors(model).items()}
    install_factors(model, factors)
    payload = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in extract(model).items()}
    load(model, payload)  # a trained R (and head), not just R0
    expected = logits(model, ids)
    save_as_lora(model, tmp_path / "export")
    exported = PeftModel.from_pretrained(fresh, str(tmp_path / "export"))
    assert exported.peft_config["default"].lora_alpha == RANK and adapter_kind_of(exported) == "lora"
    torch.testing.assert_close(logits(exported, ids), expected, rtol=1e-5, atol=1e-5)


def test_rank_heterogeneous_client_uses_the_leading_block(initialised) -> None:
    # docs/algorithms.md §9.4: a rank-2 client with B[:, :2], A[:2] and R_i (2x2) applies B pad(R_i) A
    server, _ = initialised
    client = tiny_llama("lora-sb", rank=2)
    block = leading_factors(frozen_factors(server), 2)
    load_frozen_factors(client, block, expected_hash=hash_arrays(block))
    payload = extract(client)
    r_small = {k: np.random.default_rng(0).standard_normal(v.shape).astype(np.float32) if "lora_R" in k else v
               for k, v in payload.items()}
    load(client, r_small)
    padded = {k: np.pad(v, ((0, RANK - 2), (0, RANK - 2))) if "lora_R" in k else v for k, v in r_small.items()}
    full = copy.deepcopy(server)
    load(full, padded)
    ids = token_batches(260, sizes=(2,), seed=9)[0]["input_ids"]
    torch.testing.assert_close(logits(client, ids), logits(full, ids), rtol=1e-5, atol=1e-5)
