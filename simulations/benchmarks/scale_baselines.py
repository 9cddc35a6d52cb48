"""The two baselines of the scale benchmark, timed in-process on the same task and settings.

- :func:`floor_seconds`: the compute floor - the local steps of ``clients`` clients in a bare Python
  loop on one already-built model (load the global adapter, train, extract), no Flower, no messages.
- :func:`naive_seconds`: a ClientApp that rebuilds everything for every message - Corolla's own
  ClientApp with its per-process worker cache cleared before each message, called through Flower's
  Message API in-process (what peer examples that build the model inside ``client_fn`` pay).
"""

from __future__ import annotations

import time
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

import client.worker as worker_module
from adapters.payload import extract, load
from client.app import app as client_app
from client.tasks import clear_partition_cache
from client.training import local_train
from contract import ADAPTER_KIND, LEARNING_RATE, parse_run_config
from server.adapter_setup import resolve_run_adapter_kind
from strategies.registry import learning_rate


def _set_identity() -> None:
    """``Message(...)`` outside a Flower process needs the process-global task identity (internal API)."""
    from flwr.supercore.task_identity import TaskIdentity  # noqa: PLC0415 - flwr 1.42 internal

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1


def floor_seconds(values: dict[str, Any], *, num_partitions: int, clients: int) -> float:
    """Mean seconds per client-round of the bare training loop (model built once, not timed)."""
    config = parse_run_config(values)
    worker_module._CACHE.clear()
    worker = worker_module.get_worker(config, resolve_run_adapter_kind(config))
    initial = extract(worker.model)
    worker.train_rows(config, partition_id=0, num_partitions=num_partitions)  # the split, once, untimed
    started = time.perf_counter()
    for partition in range(clients):
        load(worker.model, initial)
        rows = worker.train_rows(config, partition_id=partition, num_partitions=num_partitions)
        local_train(worker.model, worker.task, worker.tokenizer, rows, steps=config.train.local_steps,
                    batch_size=config.train.batch_size, lr=learning_rate(config), weight_decay=config.train.weight_decay,
                    seed=partition)
        extract(worker.model)
    return (time.perf_counter() - started) / clients


def naive_seconds(values: dict[str, Any], *, num_partitions: int, clients: int) -> float:
    """Mean seconds per train message of a ClientApp that rebuilds model and data every message."""
    config = parse_run_config(values)
    adapter_kind = resolve_run_adapter_kind(config)
    worker_module._CACHE.clear()
    arrays = ArrayRecord({k: Array(v) for k, v in extract(worker_module.get_worker(config, adapter_kind).model).items()})
    _set_identity()
    started = time.perf_counter()
    for partition in range(clients):
        worker_module._CACHE.clear()  # the naive ClientApp: nothing survives between messages,
        clear_partition_cache()  # neither the model nor the data split
        instruction = ConfigRecord({"server-round": 1, ADAPTER_KIND: adapter_kind, LEARNING_RATE: learning_rate(config)})
        message = Message(RecordDict({"arrays": arrays, "config": instruction}),
                          dst_node_id=100 + partition, message_type="train")
        context = Context(run_id=1, node_id=100 + partition, state=RecordDict(), run_config=dict(values),
                          node_config={"partition-id": partition, "num-partitions": num_partitions})
        reply = client_app(message, context)
        if reply.has_error():
            raise RuntimeError(f"naive baseline: the ClientApp failed: {reply.error.reason}")
    seconds = (time.perf_counter() - started) / clients
    worker_module._CACHE.clear()
    clear_partition_cache()
    return seconds
