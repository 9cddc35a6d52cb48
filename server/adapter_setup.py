"""Server-side adapter set-up before round 1: LoRA-SB's B and A, and what a strategy must be told.

Fed-SB needs B and A from a gradient estimate (LoRA-SB §2.3, Fed-SB §3.4). Here the server
estimates it on a calibration sample of ``adapter.init-examples`` rows that it holds: with the
built-in tasks, a seeded sample of the task's training pool, standing in for a server-held
calibration split. (The federated alternative, clients uploading summed raw gradients, is not
built yet.) The factors are installed before the initial payload is extracted, so round 1 starts
from R0, not from R = 0 (LoRA-SB §2.6: R = 0 would be LoRA-XS).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adapters.frozen import factors_hash, frozen_factors
from adapters.lora_sb import effective_lr, initialise_lora_sb
from adapters.payload import layout
from client.tasks.base import Task
from strategies.contract import RunConfig
from strategies.layout import layout_from_config


def initialise_lora_sb_on_server(model: Any, task: Task, tokenizer: Any, datasets: Any, config: RunConfig) -> None:
    """Estimate gradients on a calibration sample and install LoRA-SB's B, R0, A into ``model``."""
    pool = datasets["train"]
    count = min(config.adapter.init_examples, len(pool))
    picks = np.random.default_rng([config.seed, 7]).choice(len(pool), size=count, replace=False)
    rows = pool.select(sorted(picks.tolist())).to_list()
    size = config.train.batch_size
    batches = [task.collate(tokenizer, rows[i : i + size]) for i in range(0, count, size)]
    initialise_lora_sb(
        model,
        batches,
        lambda m, batch: task.example_losses(m, batch).mean(),
        eta=effective_lr(config.train.lr, num_train=count, batch_size=size),
        seed=config.seed,
    )


def strategy_adapter_params(model: Any, config: RunConfig) -> dict[str, Any]:
    """What the strategy needs to know of the adapter: the A/B layout (LoRA) or the frozen factors."""
    kind = config.adapter_kind
    if kind == "lora":
        return {"layout": layout_from_config(layout(model))}
    return {"frozen_factors": frozen_factors(model), "frozen_hash": factors_hash(model)}
