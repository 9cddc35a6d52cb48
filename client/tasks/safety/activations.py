"""Activation-space overlap of two prompt sets (arXiv 2505.14185, Experiment 4; ``docs/tasks.md §5``).

Last-token hidden states of every selected layer, ``A_l: (N, D)`` per prompt set; the basis of the
row space of ``A_l`` (the column space of ``A_lᵀ``, uncentred) that captures η of the energy; MSO
between the two sets' bases with the baseline ``max(k1, k2)/D``, averaged over the layers from
⌊0.65·L⌋ to ⌊0.9·L⌋ - 1 (at least layer ⌊0.65·L⌋ on shallow models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from client.tasks._batching import chunks, eval_mode, model_device
from client.tasks.safety.subspace import energy_basis, mso, mso_baseline, svd_dense

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Off-task prompts: the default second set when `safety.prompts-b` is empty (no harmful data ships).
OFF_TASK_PROMPTS: tuple[str, ...] = (
    "Write a short poem about the sea.", "Translate 'good morning' into French.",
    "What is the capital of Japan?", "Describe the colour blue to someone who cannot see.",
    "List three uses of a paperclip.", "Summarise the plot of a fairy tale in one sentence.",
    "Give advice for a first job interview.", "Explain why the sky looks blue.",
    "Name a famous painter and one painting.", "Suggest a name for a pet turtle.",
    "How do plants make their food?", "Write a polite email declining an invitation.",
    "What does a librarian do all day?", "Describe a rainy afternoon in a city.",
    "Recommend a board game for four players.", "Explain the rules of chess briefly.",
)


def layer_range(num_layers: int) -> list[int]:
    """Layers ⌊0.65L⌋ … ⌊0.9L⌋ - 1 (0-based block indices; never empty)."""
    first, stop = int(0.65 * num_layers), int(0.9 * num_layers)
    return list(range(first, max(stop, first + 1)))


def num_blocks(model: torch.nn.Module) -> int:
    """The transformer blocks ``L`` of a HF model (or a PEFT model around one): its config's ``num_hidden_layers``."""
    layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if layers is None:
        raise ValueError(f"`safety.activation` needs a model whose config has `num_hidden_layers`; "
                         f"{type(model).__name__} has none (set `safety.activation = false`)")
    return int(layers)


def last_token_states(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                      layers: Sequence[int], *,
                      batch_size: int = 16) -> dict[int, np.ndarray]:
    """``layer -> (N, D)`` hidden state after block ``layer`` at each prompt's last real token."""
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    device = model_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with eval_mode(model):
        for chunk in chunks(list(prompts), batch_size):
            ids = [list(tokenizer(p)["input_ids"]) or [pad] for p in chunk]
            width = max(map(len, ids))
            input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in ids], device=device)
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids], device=device)
            hidden = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states
            last = mask.sum(dim=1) - 1
            rows = torch.arange(len(ids), device=device)
            for layer in layers:
                out[layer].append(hidden[layer + 1][rows, last].float().cpu().numpy())  # [0] is the embeddings
    return {layer: np.concatenate(parts) for layer, parts in out.items()}


def activation_overlap(states_a: dict[int, np.ndarray], states_b: dict[int, np.ndarray],
                       etas: Sequence[float]) -> dict[str, float]:
    """``act_mso_eta_<η>`` and ``act_mso_baseline_eta_<η>``, averaged over the layers."""
    result: dict[str, float] = {}
    for eta in etas:
        values, baselines = [], []
        for layer, a in states_a.items():
            qa, qb = energy_basis(svd_dense(a.T), eta), energy_basis(svd_dense(states_b[layer].T), eta)  # (D, k)
            values.append(mso(qa, qb))
            baselines.append(mso_baseline(qa.shape[1], qb.shape[1], a.shape[1]))
        result[f"act_mso_eta_{eta:g}"] = float(np.mean(values))
        result[f"act_mso_baseline_eta_{eta:g}"] = float(np.mean(baselines))
    return result
