"""A node's base follows the server's versions: deltas add up, a full delta resets, a gap is refused."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, RecordDict

from adapters.base_delta import BaseWeights
from adapters.lora import AdapterSpec, build_adapted_model
from client.base_sync import BaseVersionMismatch, sync_base
from contract import BASE_DELTA, BASE_FROM_VERSION, BASE_VERSION, CONFIG, encode_base_delta

MODULE = "base_model.model.model.layers.0.self_attn.v_proj"  # (m, n) = (128, 256): non-square


@pytest.fixture(scope="module")
def base() -> BaseWeights:
    model, _ = build_adapted_model("tiny-llama", AdapterSpec(rank=4), kind="causal-lm", num_labels=None, init_seed=0)
    return BaseWeights(model)


def message(start: int, target: int, deltas: dict) -> RecordDict:
    content = RecordDict({CONFIG: ConfigRecord({BASE_VERSION: target, BASE_FROM_VERSION: start})})
    if deltas:
        content[BASE_DELTA] = encode_base_delta(deltas)
    return content


def test_deltas_accumulate_then_a_delta_from_zero_replaces(base: BaseWeights) -> None:
    rng = np.random.default_rng(0)
    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    d1 = rng.standard_normal((128, 256)).astype(np.float32)
    u, v = rng.standard_normal((128, 3)).astype(np.float32), rng.standard_normal((3, 256)).astype(np.float32)
    sync_base(base, message(0, 1, {MODULE: d1}), ctx).commit(ctx)
    sync_base(base, message(1, 2, {MODULE: (u, v)}), ctx).commit(ctx)  # factored form
    np.testing.assert_allclose(base.current()[MODULE], d1 + u @ v, rtol=1e-5, atol=1e-5)
    full = rng.standard_normal((128, 256)).astype(np.float32)
    sync_base(base, message(0, 5, {MODULE: full}), ctx).commit(ctx)  # the log collapsed: start over from W0
    np.testing.assert_allclose(base.current()[MODULE], full, rtol=1e-6, atol=1e-6)


def test_a_gap_in_versions_is_refused_and_nothing_is_committed(base: BaseWeights) -> None:
    ctx = Context(run_id=1, node_id=2, node_config={}, state=RecordDict(), run_config={})
    d = np.ones((128, 256), np.float32)
    sync_base(base, message(0, 1, {MODULE: d}), ctx).commit(ctx)
    with pytest.raises(BaseVersionMismatch, match="from version 3 to 4, but this node holds version 1"):
        sync_base(base, message(3, 4, {MODULE: d}), ctx)
    assert int(ctx.state["corolla.base-meta"][BASE_VERSION]) == 1


def test_uncommitted_work_leaves_the_node_at_its_old_version(base: BaseWeights) -> None:
    ctx = Context(run_id=1, node_id=3, node_config={}, state=RecordDict(), run_config={})
    sync_base(base, message(0, 1, {MODULE: np.ones((128, 256), np.float32)}), ctx)  # training then failed
    assert "corolla.base-meta" not in ctx.state


def test_a_conv1d_style_delta_lands_transposed() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel
    from peft import LoraConfig, get_peft_model

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=None, eos_token_id=None))
    model = get_peft_model(gpt2, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    weights = BaseWeights(model)
    name = weights.modules[0]
    assert weights.shape(name) == (96, 32)  # (m, n); Conv1D stores (32, 96)
    delta = np.arange(96 * 32, dtype=np.float32).reshape(96, 32)
    weights.set({name: delta})
    np.testing.assert_allclose(weights.current()[name], delta, rtol=1e-6, atol=1e-3)
    with pytest.raises(ValueError, match="expected \\(m, n\\)"):
        weights.set({name: delta.T})
