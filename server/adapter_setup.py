"""Server-side adapter set-up before round 1: LoRA-SB's B and A, and what a strategy must be told.

Fed-SB needs B and A from a gradient estimate (``docs/algorithms.md §8.2``, ``§9.2``). Here the server
estimates it on a calibration sample of ``adapter.init-examples`` rows that it holds: with the
built-in tasks, a seeded sample of the task's training pool, standing in for a server-held
calibration split (``adapter.init = server``). With ``adapter.init = federated`` the server needs no
data: every node uploads the summed raw gradient of its own examples once (``docs/algorithms.md §9.2``), the
server sums them and takes the sign; that round's traffic is metered as set-up (round 0). Either
way the factors are installed before the initial payload is extracted, so round 1 starts from R0,
not from R = 0 (``docs/algorithms.md §8.1``: R = 0 would be LoRA-XS). The gradient upload is not privatised: with
DP on, the run must say so (issue 4).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adapters.frozen import factors_hash, frozen_factors
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from adapters.lora_sb import effective_lr, init_from_gradients, initialise_lora_sb, install_factors
from adapters.payload import layout
from client.tasks.base import Task
from server.metering import DOWN, SETUP, UP, ByteLedger
from contract import ARRAYS, CONFIG, GRADIENT_ESTIMATE, INIT_EXAMPLES, METRICS, RunConfig, message_bytes
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


def federated_lora_sb_init(grid: Grid, model: Any, config: RunConfig, ledger: ByteLedger, *, timeout: float = 3600) -> int:
    """Sum every node's uploaded gradient, sign it, factorise, install; returns the nodes used."""
    from logging import INFO, WARNING

    import time

    node_ids = sorted(grid.get_node_ids())
    deadline = time.monotonic() + timeout
    while len(node_ids) < config.min_train_nodes and time.monotonic() < deadline:
        time.sleep(1)  # as Flower's own sampler does: wait for enough nodes to connect
        node_ids = sorted(grid.get_node_ids())
    request = RecordDict({CONFIG: ConfigRecord({INIT_EXAMPLES: config.adapter.init_examples})})
    messages = [Message(content=request, message_type=GRADIENT_ESTIMATE, dst_node_id=n) for n in node_ids]
    for msg in messages:
        ledger.add(server_round=0, node=msg.metadata.dst_node_id, direction=DOWN, phase=SETUP, nbytes=message_bytes(msg))
    total: dict[str, np.ndarray] = {}
    seen = 0
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if not reply.has_content():
            log(WARNING, "LoRA-SB set-up: node %s sent no gradient: %s", reply.metadata.src_node_id, reply.error)
            continue
        ledger.add(server_round=0, node=reply.metadata.src_node_id, direction=UP, phase=SETUP, nbytes=message_bytes(reply))
        for module, array in reply.content[ARRAYS].items():
            g = array.numpy().astype(np.float64)  # G_i: (m, n)
            total[module] = total[module] + g if module in total else g
        seen += int(reply.content[METRICS]["num-examples"])
    if not total:
        raise RuntimeError("LoRA-SB set-up: no node returned a gradient estimate; check the clients' logs")
    rank = config.adapter.rank
    factors = init_from_gradients(
        total, rank, eta=effective_lr(config.train.lr, num_train=seen, batch_size=config.train.batch_size), seed=config.seed
    )
    install_factors(model, factors)
    log(INFO, "LoRA-SB set-up: B and A from the summed gradients of %s examples on %s nodes", seen, len(node_ids))
    return len(node_ids)


def strategy_adapter_params(model: Any, config: RunConfig) -> dict[str, Any]:
    """What the strategy needs to know of the adapter: the A/B layout (LoRA), nothing (ABBA) or the
    frozen factors (FFA-LoRA, LoRA-SB).

    ABBA trains all four factors (nothing frozen): its layout names both pairs, FedIT averages them
    naively (its ``B·A`` deviation metric skips ABBA modules) and FedEx-LoRA folds the exact Hadamard
    residual (``docs/algorithms.md §10.3``).
    """
    kind = config.adapter_kind
    if kind in ("lora", "abba"):
        return {"layout": layout_from_config(layout(model))}
    return {"frozen_factors": frozen_factors(model), "frozen_hash": factors_hash(model)}
