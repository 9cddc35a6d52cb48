"""ABBA on whole models: tiny Llama and GPT-2 (Conv1D) train, ship, merge; FedIT averages it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from adapters.abba import merged_model, merged_state_dict, save_merged
from adapters.kind_registry import adapter_kind_of
from adapters.lora import AdapterSpec, build_adapted_model
from adapters.payload import extract, layout, load
from client.app import app as client_app
from server.adapter_setup import resolve_run_adapter_kind
from server.app import run
from server.run_folder import read_rounds
from contract import parse_run_config
from tests.adapters.toys import tiny_gpt2
from tests.server.conftest import TINY_RUN
from tests.strategies.fake_grid import FakeGrid

SPEC = AdapterSpec(method="abba", rank=8, alpha=4.0)  # r1 = r2 = 4, s = 4


def _llama(seed: int = 0):
    return build_adapted_model("tiny-llama", SPEC, kind="causal-lm", num_labels=None, init_seed=seed)[0]


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(seed))


def test_tiny_llama_trains_and_the_payload_round_trips_bit_exact() -> None:
    state = torch.random.get_rng_state()
    model = _llama()
    assert torch.equal(torch.random.get_rng_state(), state)  # init drew from local generators only
    assert adapter_kind_of(model) == "abba"
    first = extract(model)
    assert first.keys() == extract(_llama()).keys()
    assert all(np.array_equal(first[k], v) for k, v in extract(_llama()).items())  # same seed, same init
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    modules = layout(model)
    assert len(first) == 4 * len(modules) and len(trainable) == len(first)
    for name in modules:
        b1, a1 = first[f"{name}.lora_B.weight"], first[f"{name}.lora_A.weight"]
        b2, a2 = first[f"{name}.lora_B2.weight"], first[f"{name}.lora_A2.weight"]
        assert b1.shape[1] == a1.shape[0] == 4 and b2.shape[1] == a2.shape[0] == 4 and not b2.any()
    ids = _ids()
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    trained = extract(model)
    assert any(not np.array_equal(trained[k], first[k]) for k in first if "lora_A2" in k)
    fresh = _llama(seed=1)
    load(fresh, trained)
    assert all(np.array_equal(v, trained[k]) for k, v in extract(fresh).items())
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)


def test_merged_export_reproduces_the_adapted_model(tmp_path: Path) -> None:
    model = tiny_gpt2("abba")  # Conv1D layers: fan_in_fan_out
    assert all(e["fan_in_fan_out"] for e in layout(model).values())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B2" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(10)[None] % 64
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        merged = merged_model(model)
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted, rtol=1e-5, atol=1e-5)
        assert not any("lora_" in k for k in merged_state_dict(model))
        assert torch.equal(model(input_ids=ids).logits, adapted)  # the adapted model is untouched
        reloaded = AutoModelForCausalLM.from_pretrained(save_merged(model, tmp_path / "merged")).eval()
        torch.testing.assert_close(reloaded(input_ids=ids).logits, adapted, rtol=1e-5, atol=1e-5)


def test_fedit_averages_abba_in_process(tmp_path: Path) -> None:
    values = {
        **TINY_RUN, "adapter.name": "abba", "adapter.rank": 4, "num-server-rounds": 1,
        "train.local-steps": 2, "eval.max-examples": 16, "output-dir": str(tmp_path),
    }
    config = parse_run_config(values)
    assert resolve_run_adapter_kind(config) == "abba"
    grid = FakeGrid(client_app, 2, run_config=values)
    folder = run(grid, config)
    rows = read_rounds(folder.path / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["clients"] == 2
    replies = [reply for _, reply in grid.log if reply.has_content() and "arrays" in reply.content]
    assert replies and all(any("lora_A2" in k for k in r.content["arrays"].keys()) for r in replies)
    assert (folder.path / "merged").is_dir()
