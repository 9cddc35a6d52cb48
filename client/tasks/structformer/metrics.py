"""Evaluation metrics of structure-aware MLM (StructFormer, arXiv 2411.16618 §4; ``docs/tasks.md §7``).

- ``loss`` per masked token and ``bits_per_token = loss / ln 2`` (what the paper calls "BPC"; it is
  per masked *token*, not per character);
- ``masked_accuracy``, split into ``acc_near`` (within the model's local receptive field, layers x
  half-window tokens, of a heading/title token) and ``acc_far`` (beyond it: only global attention
  can bring the heading there); ``slot_accuracy`` on slot documents;
- ``heading_attention``: per masked body token, the attention mass on heading/title tokens, read from
  HF Longformer's local ``attentions`` (the band around the token, plus the global-key columns that
  come first), averaged over heads and layers, then over tokens. Padding never enters it (padded
  keys get no attention and a padded query is never a masked token), so it does not depend on how
  documents are batched.
"""

from __future__ import annotations

import math

import torch

from client.tasks.structformer.collator import HEADING, TITLE


def receptive_field(model: torch.nn.Module) -> int:
    """Tokens either side a token's output can depend on without global attention: layers x window / 2."""
    config = getattr(model, "config", None)
    window = getattr(config, "attention_window", None)
    if config is None or window is None:
        raise ValueError("heading-distance metrics need a Longformer-style model config with `attention_window`")
    windows = window if isinstance(window, (list, tuple)) else [window] * config.num_hidden_layers
    return sum(int(w) // 2 for w in windows)


def heading_attention_mass(attentions: tuple[torch.Tensor, ...], global_mask: torch.Tensor, roles: torch.Tensor,
                           queries: torch.Tensor) -> torch.Tensor:
    """Attention mass on heading/title keys per query, mean over layers and heads.

    ``attentions``: per layer ``(B, H, T, G + w + 1)`` (G global-key columns first, then the local band
    ``i - w/2 … i + w/2``); ``global_mask``/``roles``: ``(B, T)``; ``queries``: ``(Q, 2)`` (batch, position).
    Returns ``(Q,)``.
    """
    is_heading = (roles == TITLE) | (roles == HEADING)  # (B, T)
    b, i = queries[:, 0], queries[:, 1]  # (Q,)
    width = roles.shape[1]
    total = torch.zeros(len(queries))
    for layer in attentions:
        probs = layer.float().mean(dim=1)  # (B, T, G + w + 1)
        band = probs.shape[-1]
        n_global = int(global_mask.sum(dim=1).max()) if global_mask.any() else 0
        w = band - n_global - 1
        rows = probs[b, i]  # (Q, G + w + 1)
        offsets = torch.arange(w + 1) - w // 2  # (w + 1,)
        keys = i[:, None] + offsets[None, :]  # (Q, w + 1)
        inside = (keys >= 0) & (keys < width)
        key_heading = is_heading[b[:, None], keys.clamp(0, width - 1)] & inside  # (Q, w + 1)
        mass = (rows[:, n_global:] * key_heading).sum(dim=1)
        if n_global:
            for q in range(len(queries)):  # global columns: this example's global positions, in order
                positions = torch.nonzero(global_mask[b[q]]).flatten()
                heads = is_heading[b[q], positions].float()  # (G_b,)
                mass[q] += (rows[q, : len(positions)] * heads).sum()
        total += mass
    return total / len(attentions)


def summarize(loss_sum: float, tokens: int, correct: torch.Tensor, distance: torch.Tensor, slot: torch.Tensor,
              attention: torch.Tensor, *, field: int) -> dict[str, float]:
    """The metric dict from per-masked-token tensors (``correct``/``distance``/``slot``/``attention``: ``(N,)``)."""
    nan = float("nan")
    mean = lambda t: float(t.float().mean()) if t.numel() else nan  # noqa: E731
    loss = loss_sum / tokens if tokens else nan
    near, far = distance <= field, distance > field
    return {
        "loss": loss,
        "bits_per_token": loss / math.log(2) if tokens else nan,
        "masked_accuracy": mean(correct),
        "acc_near": mean(correct[near]),
        "acc_far": mean(correct[far]),
        "slot_accuracy": mean(correct[slot.bool()]),
        "heading_attention": mean(attention),
        "far_tokens": float(far.sum()),
    }
