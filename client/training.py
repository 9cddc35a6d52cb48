"""The local training loop a client runs each round: a fixed number of AdamW steps on its shard.

The loop only sees a task's per-example loss and a model whose trainable parameters are the
adapter (and head); it reduces the loss to the batch mean. Plain rounds draw batches without
replacement, reshuffled each epoch, from a generator seeded by ``(seed, round, partition)``: a
client's round is reproducible, and clients differ.

With :class:`PrivateRound` the same loop runs as DP-SGD (``privacy.privatize``): batches are
Poisson-sampled index sets from Opacus's loader (seeded the same way), every step clips and noises
the trainable tensors' per-example gradients, an empty batch still takes a noise-only step, and
the accountant's history is written back to ``Context.state`` only when the round succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flwr.app import RecordDict

from client.tasks.base import Task
from privacy import DPConfig, privatize


@dataclass(frozen=True)
class TrainStats:
    """What one local round produced: the mean batch loss over its steps and, for a DP round, ε spent
    so far over all of this client's rounds (``None`` otherwise)."""

    loss: float
    epsilon: float | None = None


@dataclass(frozen=True)
class PrivateRound:
    """A DP-SGD round: the settings, the rounds the ε budget is spread over, the client's state."""

    config: DPConfig
    planned_rounds: int
    state: RecordDict  # Context.state: the accountant history lives here across rounds


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
    private: PrivateRound | None = None,
    regulariser: Callable[[], torch.Tensor] | None = None,
) -> TrainStats:
    """Run ``steps`` AdamW steps of ``task``'s loss on ``rows``; returns the mean batch loss.

    ``regulariser`` (HetLoRA's tail penalty, ``client.rank_pruning``) is added to every step's loss;
    the reported loss is the task's alone. It is not per-example, so DP-SGD refuses it.

    Raises
    ------
    privacy.BudgetExhausted
        For a DP round that would take ε past ``privacy.target-epsilon``; nothing was trained.
    ValueError
        A ``regulariser`` in a DP round.
    """
    if private is not None and regulariser is not None:
        raise ValueError("a loss regulariser cannot run under DP-SGD (its gradient is not per-example); "
                         "set hetlora.prune-lambda = 0 or privacy.enabled = false")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters; the adapter was not applied")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    was_training = model.training
    model.train()
    losses: list[float] = []
    epsilon = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout masks (and Poisson sampling under DP) follow the client's seed
        if private is None:
            for idx in batch_indices(len(rows), steps=steps, batch_size=batch_size, seed=seed):
                _step(model, optimizer, task, tokenizer, rows, idx, losses, regulariser)
        else:
            dp = privatize(
                model,
                optimizer,
                config=private.config,
                num_examples=len(rows),
                batch_size=batch_size,
                steps=steps,
                planned_rounds=private.planned_rounds,
                state=private.state,
            )
            with dp:
                for idx in dp.index_batches(steps):
                    if len(idx) == 0:
                        dp.noise_only_step()
                        continue
                    _step(dp.module, dp.optimizer, task, tokenizer, rows, idx, losses)
                epsilon = dp.save(private.state)
    model.train(was_training)
    mean_loss = float(np.mean(losses)) if losses else float("nan")
    return TrainStats(loss=mean_loss, epsilon=epsilon)


def _step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    task: Task,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    idx: np.ndarray,
    losses: list[float],
    regulariser: Callable[[], torch.Tensor] | None = None,
) -> None:
    """One optimizer step on the rows ``idx`` (plus ``regulariser()``); appends the batch's task loss."""
    batch = task.collate(tokenizer, [rows[i] for i in idx])
    optimizer.zero_grad(set_to_none=True)
    loss = task.example_losses(model, batch).mean()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"local loss became {loss.item()}; lower `train.lr`")
    (loss if regulariser is None else loss + regulariser()).backward()
    optimizer.step()
    losses.append(loss.item())
