"""Server-side adapter set-up before round 1, and what a strategy must be told about the adapter.

The adapter kind decides what its set-up is (``AdapterKind.server_init``; LoRA-SB: B and A from a
gradient estimate, ``docs/algorithms.md §8.2``, ``§9.2``); this module gives it the two data sources
a server has, without the kind importing the server:

- **the server's calibration sample** (``adapter.init = server``): ``adapter.init-examples`` rows the
  server holds; with the built-in tasks, a seeded sample of the task's training pool, standing in for
  a server-held calibration split;
- **the nodes' summed gradients** (``adapter.init = federated``): every node uploads the summed raw
  gradient of its own examples once (``GRADIENT_ESTIMATE``), the server sums them; that traffic is
  metered as set-up (round 0). The upload is not privatised: with DP on, the run says so
  (``AdapterKind.privacy_gaps``, ``server.privacy_statement``). Each reply is validated before it
  is summed (``docs/trust.md §1``): exactly the adapted modules, each ``(m, n)`` float32 and finite,
  headers checked before decoding, and ``1 <= num-examples <= adapter.init-examples``; a bad one is
  logged and left out.

Either way the set-up runs before the initial payload is extracted, so round 1 starts from the
kind's initial factors (LoRA-SB: R0, not R = 0, ``docs/algorithms.md §8.1``).
"""

from __future__ import annotations

import time
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from adapters.adapter_kind import CalibrationSample, GradientSum, ServerSetup
from adapters.frozen import factors_hash, frozen_factors
from adapters.kind_registry import adapter_kind_of, get_adapter_kind, resolve_adapter_kind
from adapters.payload import layout
from adapters.peft_model import adapted_layers, unwrap
from client.tasks.base import Task
from contract import (
    ADAPTER_KIND, ARRAYS, CONFIG, GRADIENT_ESTIMATE, INIT_EXAMPLES, NUM_EXAMPLES, ConfigError, MetricSchema, MetricSpec,
    RunConfig, message_bytes,
)
from server.metering import DOWN, SETUP, UP, ByteLedger
from strategies.layout import layout_from_config
from strategies.registry import learning_rate, mixed_rank_problems, strategy_info
from strategies.validation import Expected, MalformedReply, check_metrics, check_records, decode_array

CALIBRATION_STREAM = 7  # the calibration sample's RNG stream, [seed, 7]: apart from every other use of `seed`


def adapter_kind_problems(config: RunConfig) -> list[str]:
    """What is wrong with ``strategy.name`` and ``adapter.name`` together, one line each (empty: nothing).

    ``adapter.name`` must be a registered adapter kind (or ``auto``) that the strategy takes: one of its
    declared kinds, or one of the same layout form (the strategy reads nothing else of the adapter).
    """
    try:
        info = strategy_info(config.strategy.name)
        kind = resolve_adapter_kind(config.adapter.name, info.adapter_kinds, strategy=config.strategy.name)
    except ValueError as exc:
        return [str(exc)]
    return mixed_rank_problems(config, kind.name)


def resolve_run_adapter_kind(config: RunConfig) -> str:
    """The adapter kind the run uses (``adapter.name``, or the strategy's first with ``auto``); the ServerApp
    sends it to every client under ``ADAPTER_KIND``.

    Raises
    ------
    ConfigError
        An unregistered strategy, an unregistered adapter kind (the message lists the registered ones) or a
        kind the strategy cannot aggregate (naming the ones it can and the fix).
    """
    problems = adapter_kind_problems(config)
    if problems:
        raise ConfigError("invalid Corolla run config:\n  - " + "\n  - ".join(problems))
    info = strategy_info(config.strategy.name)
    return resolve_adapter_kind(config.adapter.name, info.adapter_kinds, strategy=config.strategy.name).name


def calibration_sample(task: Task, tokenizer: Any, datasets: Any, config: RunConfig) -> CalibrationSample:
    """``adapter.init-examples`` seeded rows of the training pool, collated into ``train.batch-size`` batches."""
    pool = datasets["train"]
    count = min(config.adapter.init_examples, len(pool))
    picks = np.random.default_rng([config.seed, CALIBRATION_STREAM]).choice(len(pool), size=count, replace=False)
    rows = pool.select(sorted(picks.tolist())).to_list()
    size = config.train.batch_size
    batches = [task.collate(tokenizer, rows[i : i + size]) for i in range(0, count, size)]
    return CalibrationSample(batches, lambda m, batch: task.example_losses(m, batch).mean(), count)


def gradient_shapes(model: Any) -> Expected:
    """``{module: ((m, n), float32)}``: what one node's gradient estimate must hold (``G: (m, n)`` per adapted
    base weight, ``Conv1D`` transposed back, as ``adapters.lora_sb.estimate_gradients`` returns it)."""
    out: Expected = {}
    for name, layer in sorted(adapted_layers(unwrap(model)).items()):
        weight = layer.get_base_layer().get_parameter("weight")  # W: (m, n); Conv1D stores (n, m)
        shape = tuple(int(d) for d in weight.shape)
        out[name] = (shape[::-1] if getattr(layer, "fan_in_fan_out", False) else shape, np.dtype(np.float32))
    return out


def check_gradient_reply(reply: Message, expected: Expected, *, max_examples: int) -> tuple[dict[str, np.ndarray], int]:
    """One node's gradient estimate, validated (module docstring); :class:`MalformedReply` says what is wrong."""
    if not reply.has_content():
        raise MalformedReply(f"no gradient: {reply.error.reason if reply.has_error() else 'empty reply'}", "error-reply")
    content = reply.content
    check_records(content, "train")
    schema = MetricSchema([MetricSpec(NUM_EXAMPLES, "int", 1, max_examples)], max_num_examples=max_examples)
    examples = check_metrics(content, schema=schema, reply="train")
    record = content.array_records[ARRAYS]
    if sorted(record) != sorted(expected):
        raise MalformedReply(f"gradient modules {sorted(record)[:3]}... differ from the adapted ones {sorted(expected)[:3]}...", "array-keys")
    grads = {}
    for module, (shape, dtype) in expected.items():
        g = decode_array(record[module], module, shape, dtype)
        if not np.isfinite(g).all():
            raise MalformedReply(f"gradient of `{module}` has non-finite values", "array-non-finite")
        grads[module] = g
    return grads, examples


def federated_gradients(
    grid: Grid, config: RunConfig, ledger: ByteLedger, *, adapter_kind: str, expected: Expected, timeout: float = 3600
) -> GradientSum:
    """Ask every node for the summed raw gradient of its first ``adapter.init-examples`` examples; sum them.

    Waits (as Flower's own sampler does) for ``min-train-nodes`` nodes to connect. A node that sends no
    gradient, or one that fails :func:`check_gradient_reply` against ``expected``, is logged and
    skipped; none at all raises.
    """
    node_ids = sorted(grid.get_node_ids())
    deadline = time.monotonic() + timeout
    while len(node_ids) < config.min_train_nodes and time.monotonic() < deadline:
        time.sleep(1)
        node_ids = sorted(grid.get_node_ids())
    # the nodes build their model with the server's adapter kind, as for every instruction
    request = RecordDict({CONFIG: ConfigRecord({INIT_EXAMPLES: config.adapter.init_examples, ADAPTER_KIND: adapter_kind})})
    messages = [Message(content=request, message_type=GRADIENT_ESTIMATE, dst_node_id=n) for n in node_ids]
    for msg in messages:
        ledger.add(server_round=0, node=msg.metadata.dst_node_id, direction=DOWN, phase=SETUP, nbytes=message_bytes(msg))
    total: dict[str, np.ndarray] = {}
    seen = 0
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_content():
            ledger.add(server_round=0, node=reply.metadata.src_node_id, direction=UP, phase=SETUP, nbytes=message_bytes(reply))
        try:
            grads, examples = check_gradient_reply(reply, expected, max_examples=config.adapter.init_examples)
        except MalformedReply as exc:
            log(WARNING, "adapter set-up: dropping node %s's gradient estimate (%s): %s", reply.metadata.src_node_id, exc.code, exc)
            continue
        for module, g in grads.items():
            g64 = g.astype(np.float64)  # G_i: (m, n); float32 inputs summed in float64 cannot overflow
            total[module] = total[module] + g64 if module in total else g64
        seen += examples
    if not total:
        raise RuntimeError("adapter set-up: no node returned a gradient estimate; check the clients' logs")
    return GradientSum(total, seen, len(node_ids))


def initialise_adapter(
    adapter_kind: str, *, model: Any, task: Task, tokenizer: Any, datasets: Any, config: RunConfig,
    grid: Grid, ledger: ByteLedger,
) -> None:
    """Run ``adapter_kind``'s server-side set-up on ``model`` (nothing for a kind without one)."""
    get_adapter_kind(adapter_kind).server_init(
        ServerSetup(
            model=model,
            config=config,
            calibration=lambda: calibration_sample(task, tokenizer, datasets, config),
            federated_gradients=lambda: federated_gradients(
                grid, config, ledger, adapter_kind=adapter_kind, expected=gradient_shapes(model)
            ),
            learning_rate=learning_rate(config),
        )
    )


def strategy_adapter_params(model: Any) -> dict[str, Any]:
    """What the strategy needs to know of the adapter: the frozen factors when the kind freezes any
    (FFA-LoRA, LoRA-SB; sent once, verified by hash), else the layout of what travels (LoRA, ABBA, ...)."""
    if get_adapter_kind(adapter_kind_of(model)).frozen_layers:
        return {"frozen_factors": frozen_factors(model), "frozen_hash": factors_hash(model)}
    return {"layout": layout_from_config(layout(model))}
