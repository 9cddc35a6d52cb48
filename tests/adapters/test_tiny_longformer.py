"""``tiny-longformer``: built offline, deterministic, LoRA on local and global projections, and the
receptive-field invariants the StructFormer slot test relies on (``docs/tasks.md §7``)."""

from __future__ import annotations

import torch

from adapters import tiny_longformer
from adapters.lora import AdapterSpec, build_adapted_model
from adapters.models import build_base_model
from adapters.payload import extract


def _model():
    return build_base_model("tiny-longformer", kind="masked-lm").model


def _hidden(model, ids: torch.Tensor, global_mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model.longformer(input_ids=ids, attention_mask=torch.ones_like(ids),
                               global_attention_mask=global_mask)
    return out.last_hidden_state


def test_tokenizer_is_word_level_with_specials_and_unknowns() -> None:
    tok = tiny_longformer.build_tokenizer()
    assert len(tok) == 5 + 2 + 192
    ids = tok("w000 w191 <sec> [SLOT] hello")["input_ids"]
    assert ids[:2] == [tok.convert_tokens_to_ids("w000"), tok.convert_tokens_to_ids("w191")]
    assert ids[-1] == tok.unk_token_id and tok.mask_token_id is not None


def test_two_builds_are_bit_identical_and_leave_the_global_rng_alone() -> None:
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    a, b = _model(), _model()
    assert torch.rand(1) == before
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_lora_adapts_the_local_and_the_global_projections() -> None:
    model, _ = build_adapted_model("tiny-longformer", AdapterSpec(rank=2), kind="masked-lm",
                                   num_labels=None, init_seed=0)
    modules = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in extract(model)}
    assert modules == {"query", "key", "value", "query_global", "key_global", "value_global"}


def test_receptive_field_is_layers_times_half_window_unless_the_token_is_global() -> None:
    model = _model()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(7, 199, (1, 64), generator=gen)
    p, far = 5, 5 + 2 * 8 + 1  # 2 layers x 8 tokens per side = 16: position 22 is out of reach
    changed = ids.clone()
    changed[0, far] = 7 if ids[0, far] != 7 else 8
    no_global = torch.zeros_like(ids)
    delta = (_hidden(model, ids, no_global) - _hidden(model, changed, no_global))[0, p].abs().max()
    assert delta < 1e-6
    glob = no_global.clone()
    glob[0, far] = 1
    delta_global = (_hidden(model, ids, glob) - _hidden(model, changed, glob))[0, p].abs().max()
    assert delta_global > 1e-4
    near = ids.clone()
    near[0, p + 8] = 7 if ids[0, p + 8] != 7 else 8  # within one layer's window: reaches p
    assert (_hidden(model, ids, no_global) - _hidden(model, near, no_global))[0, p].abs().max() > 1e-4
