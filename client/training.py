"""The local training loop a client runs each round: a fixed number of AdamW steps on its shard.

The loop only sees a task's per-example loss and a model whose trainable parameters are the
adapter (and head); it reduces the loss to the batch mean, so DP-SGD can later wrap the same loop.
Batches are drawn without replacement, reshuffled each epoch, from a generator seeded by
``(seed, round, partition)``: a client's round is reproducible, and clients differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from client.tasks.base import Task


@dataclass(frozen=True)
class TrainStats:
    """What one local round produced: mean batch loss over the steps, steps and examples seen."""

    loss: float
    steps: int
    examples_seen: int


def batch_indices(num_rows: int, *, steps: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """``steps`` batches of row indices, without replacement within an epoch."""
    if num_rows <= 0:
        raise ValueError("this client's data partition is empty; use fewer clients or `data.alpha` larger")
    rng = np.random.default_rng(seed)
    size = min(batch_size, num_rows)
    order: list[int] = []
    batches = []
    for _ in range(steps):
        if len(order) < size:
            order += rng.permutation(num_rows).tolist()
        batches.append(np.array(order[:size]))
        del order[:size]
    return batches


def local_train(
    model: torch.nn.Module,
    task: Task,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
) -> TrainStats:
    """Run ``steps`` AdamW steps of ``task``'s loss on ``rows``; returns the mean batch loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters; the adapter was not applied")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    was_training = model.training
    model.train()
    losses = []
    seen = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout masks follow the client's seed too
        for idx in batch_indices(len(rows), steps=steps, batch_size=batch_size, seed=seed):
            batch = task.collate(tokenizer, [rows[i] for i in idx])
            optimizer.zero_grad(set_to_none=True)
            loss = task.example_losses(model, batch).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"local loss became {loss.item()}; lower `train.lr`")
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            seen += len(idx)
    model.train(was_training)
    return TrainStats(loss=float(np.mean(losses)), steps=len(losses), examples_seen=seen)
