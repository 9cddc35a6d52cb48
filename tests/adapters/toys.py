"""Small adapted models for the adapter tests: one random layer, tiny Llama, tiny GPT-2 (Conv1D)."""

from __future__ import annotations

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from adapters.kind_registry import get_adapter_kind
from adapters.lora import AdapterSpec, build_adapted_model, wrap_with_lora
from adapters.models import BaseModel

M, N, RANK = 48, 32, 4
SHAPES = [(M, N), (N, N)]  # non-square (a wrong orientation raises) and square
LAYERS = ["linear", "conv1d"]


class One(nn.Module):
    """``y = proj(x)`` with ``proj`` an ``nn.Linear(n, m)`` or a GPT-2 ``Conv1D(m, n)`` (weight (n, m))."""

    def __init__(self, layer: str, m: int, n: int) -> None:
        super().__init__()
        self.proj = nn.Linear(n, m) if layer == "linear" else Conv1D(m, n)
        if layer == "conv1d":
            nn.init.normal_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def one_layer(
    layer: str, m: int = M, n: int = N, *, method: str = "lora-sb", rank: int = RANK, alpha: float = 8.0,
    dropout: float = 0.0, dtype: torch.dtype = torch.float64, seed: int = 0,
) -> PeftModel:
    """A single random layer wrapped with ``method``; all randomness from ``seed`` in a forked RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = One(layer, m, n).to(dtype)
        for p in base.parameters():
            p.requires_grad_(False)
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=["proj"])
        spec = AdapterSpec(rank=rank, alpha=alpha, dropout=dropout, method=method)
        model = get_peft_model(base, get_adapter_kind(method).configure(config, spec))
        get_adapter_kind(method).finalize(model)
    return model


def stored_to_mn(weight: torch.Tensor, layer: str) -> torch.Tensor:
    """A stored base weight in ``(m, n)`` orientation."""
    return weight.T if layer == "conv1d" else weight


def orthonormal_factors(m: int, n: int, r: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random ``B: (m, r)`` with orthonormal columns, ``R: (r, r)``, ``A: (r, n)`` with orthonormal rows."""
    b = np.linalg.qr(rng.standard_normal((m, r)))[0]
    a = np.linalg.qr(rng.standard_normal((n, r)))[0].T
    return b, rng.standard_normal((r, r)), a


def gpt2_base() -> GPT2LMHeadModel:
    """A frozen 1-layer GPT-2 (Conv1D everywhere, dropout 0), the same weights on every call."""
    config = GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=16,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = GPT2LMHeadModel(config).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def tiny_gpt2(method: str, *, rank: int = RANK, seed: int = 0) -> PeftModel:
    """:func:`gpt2_base` adapted on c_attn (32->96), c_fc (32->128) and both c_proj (32->32, 128->32)."""
    spec = AdapterSpec(rank=rank, alpha=8, target_modules=("c_attn", "c_fc", "c_proj"), method=method)
    return wrap_with_lora(BaseModel(gpt2_base(), None, "gpt2"), spec, kind="causal-lm", init_seed=seed)


def tiny_llama(method: str, kind: str = "sequence-classification", *, rank: int = RANK, seed: int = 0) -> PeftModel:
    """tiny-llama (q_proj 256->256, v_proj 256->128 in 4 layers), 3 labels for classification."""
    labels = 3 if kind == "sequence-classification" else None
    spec = AdapterSpec(rank=rank, alpha=8, method=method)
    return build_adapted_model("tiny-llama", spec, kind=kind, num_labels=labels, init_seed=seed)[0]


def token_batches(vocab: int, *, sizes: tuple[int, ...] = (3, 3), length: int = 8, seed: int = 0) -> list[dict]:
    """Random ``input_ids`` batches (with labels = input_ids for a causal LM)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for size in sizes:
        ids = torch.randint(4, vocab, (size, length), generator=gen)
        out.append({"input_ids": ids, "labels": torch.randint(0, 3, (size,), generator=gen)})
    return out
