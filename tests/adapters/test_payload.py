"""The adapter payload: bit-exact round trips and a layout every process agrees on."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adapters.lora import AdapterSpec, build_adapted_model
from adapters.payload import PayloadError, extract, layout, load, payload_spec

ROOT = Path(__file__).resolve().parents[2]


def tiny(kind: str = "causal-lm", rank: int = 4, seed: int = 0):
    labels = 3 if kind == "sequence-classification" else None
    return build_adapted_model("tiny-llama", AdapterSpec(rank=rank, alpha=8), kind=kind, num_labels=labels, init_seed=seed)[0]


def digest(payload: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key, value in payload.items():
        h.update(key.encode())
        h.update(str(value.dtype).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("kind", ["causal-lm", "sequence-classification"])
def test_extract_load_round_trip_is_bit_exact(kind: str) -> None:
    model = tiny(kind)
    rng = np.random.default_rng(1)
    payload = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in extract(model).items()}
    load(model, payload)
    back = extract(model)
    assert list(back) == sorted(payload)
    for key in payload:
        assert back[key].dtype == np.float32
        assert np.array_equal(back[key], payload[key]), key


def test_payload_is_exactly_the_trainable_tensors() -> None:
    model = tiny("sequence-classification")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    payload = extract(model)
    assert sum(v.size for v in payload.values()) == trainable
    # r = 4 on q_proj (256 -> 256) and v_proj (256 -> 128) in 4 layers, plus the 3-class head
    lora = 4 * (4 * (256 + 256) + 4 * (256 + 128))
    head = 3 * 256
    assert trainable == lora + head
    assert any(k.endswith("score.weight") for k in payload)


def test_loaded_payload_changes_the_forward_pass_as_lora_says() -> None:
    model = tiny("causal-lm")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    payload = extract(model)
    first = next(iter(layout(model).values()))
    payload[first["b_key"]] = np.ones_like(payload[first["b_key"]])  # B = 0 -> ones: output must move
    load(model, payload)
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert not torch.allclose(before, after)


def test_layout_pairs_a_and_b_with_scale() -> None:
    model = tiny(rank=4)
    lay = layout(model)
    assert len(lay) == 8  # q_proj and v_proj in 4 layers
    payload = extract(model)
    for module, entry in lay.items():
        a, b = payload[entry["a_key"]], payload[entry["b_key"]]
        assert a.shape[0] == 4 and b.shape[1] == 4  # A: (r, n), B: (m, r)
        assert entry["scale"] == pytest.approx(8 / 4)
        assert entry["fan_in_fan_out"] is False
        assert np.all(b == 0)  # PEFT init: B = 0
        assert entry["a_key"].startswith(module)


def test_load_rejects_missing_extra_and_misshaped_tensors() -> None:
    model = tiny()
    payload = extract(model)
    key = next(iter(payload))
    with pytest.raises(PayloadError, match="missing"):
        load(model, {k: v for k, v in payload.items() if k != key})
    with pytest.raises(PayloadError, match="unexpected"):
        load(model, {**payload, "bogus.weight": np.zeros(1, np.float32)})
    with pytest.raises(PayloadError, match="adapter.rank"):
        load(model, {**payload, key: np.zeros((1, 1), np.float32)})
    assert np.array_equal(extract(model)[key], payload[key])  # nothing half-loaded


def test_same_seed_same_payload_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b, c = extract(tiny(seed=7)), extract(tiny(seed=7)), extract(tiny(seed=8))
    assert torch.equal(torch.get_rng_state(), state)
    assert digest(a) == digest(b) != digest(c)


def test_layout_and_initial_payload_are_identical_in_a_fresh_process() -> None:
    script = (
        "import json, sys; sys.path.insert(0, %r);"
        "from tests.adapters.test_payload import tiny, digest;"
        "from adapters.payload import extract, layout;"
        "m = tiny(seed=3); print(json.dumps({'digest': digest(extract(m)), 'layout': layout(m)}))"
    ) % str(ROOT)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    other = json.loads(out.stdout.strip().splitlines()[-1])
    model = tiny(seed=3)
    assert other["digest"] == digest(extract(model))
    assert other["layout"] == layout(model)


def test_payload_spec_matches_extract() -> None:
    model = tiny()
    spec = payload_spec(model)
    assert {k: v[0] for k, v in spec.items()} == {k: v.shape for k, v in extract(model).items()}
