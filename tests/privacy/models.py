"""Tiny adapted models and per-example losses for the DP tests (tiny-llama, every adapter kind)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn

from adapters.lora import AdapterSpec, build_adapted_model
from adapters.lora_sb import adapted_layers, install_factors

RANK = 4
VOCAB_LOW, VOCAB_HIGH = 4, 200  # byte tokens of the tiny-llama tokenizer (no specials, so no padding)
LENGTH = 8

# (adapter kind, model kind): LoRA on a causal LM, then a trained classification head with each kind
CASES = [
    ("lora", "causal-lm"),
    ("lora", "sequence-classification"),
    ("ffa", "sequence-classification"),
    ("lora-sb", "sequence-classification"),
]
CASE_IDS = [f"{method}-{'clm' if kind == 'causal-lm' else 'cls'}" for method, kind in CASES]


def build(method: str, kind: str, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> PeftModel:
    """tiny-llama with ``method``'s adapter, in train mode, with every trained factor non-zero.

    PEFT starts LoRA's B (and LoRA-SB's uninstalled B, R) at 0, which makes A's gradient exactly 0;
    a per-sample check on zeros would prove nothing, so B is randomised for LoRA and LoRA-SB gets
    orthonormal B, A and a random R (the Fed-SB shape), all from ``seed``. ``float64`` lets gradient
    comparisons be exact to 1e-12 instead of to float32's summation-order noise.
    """
    labels = None if kind == "causal-lm" else 3
    model, _ = build_adapted_model("tiny-llama", AdapterSpec(rank=RANK, method=method), kind=kind,  # type: ignore[arg-type]
                                   num_labels=labels, init_seed=seed)
    rng = np.random.default_rng(seed + 1)
    if method == "lora-sb":
        factors = {}
        for name, layer in adapted_layers(model).items():
            m, n = layer.lora_B["default"].weight.shape[0], layer.lora_A["default"].weight.shape[1]
            b = np.linalg.qr(rng.standard_normal((m, RANK)))[0]
            a = np.linalg.qr(rng.standard_normal((n, RANK)))[0].T
            factors[name] = (b, rng.standard_normal((RANK, RANK)), a)
        install_factors(model, factors)
    elif method == "lora":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.as_tensor(0.05 * rng.standard_normal(tuple(p.shape)), dtype=p.dtype))
    model.to(dtype).train()
    return model


def batch(kind: str, size: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids (no padding) and, for classification, labels in {0, 1, 2}."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(VOCAB_LOW, VOCAB_HIGH, (size, LENGTH), generator=gen)
    out = {"input_ids": ids}
    if kind != "causal-lm":
        out["labels"] = torch.randint(0, 3, (size,), generator=gen)
    return out


def example_losses(model: nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-example loss, shape (B,): per-sequence mean token cross-entropy, or the class cross-entropy.

    The same reduction as the tasks' ``example_losses`` (``docs/tasks.md §1``): the caller takes ``.mean()``,
    which is what Opacus's ``loss_reduction="mean"`` assumes.
    """
    logits = model(input_ids=data["input_ids"]).logits
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if "labels" in data:
        return F.cross_entropy(logits, data["labels"], reduction="none")
    ids = data["input_ids"]
    tok = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="none")
    return tok.view(ids.size(0), -1).mean(dim=1)


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters by name (PEFT names, no ``_module.`` prefix)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def frozen(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every frozen parameter (base weights, FFA's A, LoRA-SB's A and B)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the trainable parameters."""
    return {n: p.detach().clone() for n, p in trainable(model).items()}


def restore(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Write ``snapshot`` copies back."""
    with torch.no_grad():
        for n, p in trainable(model).items():
            p.copy_(saved[n])


def per_example_grads(model: nn.Module, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference per-example gradients ``{name: (B, *shape)}`` by one autograd call per example."""
    params = trainable(model)
    rows = []
    for i in range(data["input_ids"].shape[0]):
        one = {k: v[i : i + 1] for k, v in data.items()}
        loss = example_losses(model, one).sum()
        rows.append(torch.autograd.grad(loss, list(params.values())))
    return {n: torch.stack([row[j] for row in rows]) for j, n in enumerate(params)}
