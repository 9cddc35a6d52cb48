"""One builder for task + model: the server and every client worker start from the same model."""

from __future__ import annotations

import pytest

import client.worker as worker_module
from adapters.kind_registry import adapter_kind_of
from adapters.payload import extract
from client.tasks.setup import build_task_and_model
from contract import parse_run_config

RUN = {"strategy.name": "fedit", "model.name": "tiny-llama", "task.name": "arithmetic", "adapter.rank": 4, "seed": 3}


@pytest.mark.parametrize("kind", ["lora", "ffa"])
def test_the_server_s_build_and_a_worker_s_are_the_same_model_bit_for_bit(kind: str) -> None:
    config = parse_run_config(RUN)
    server = build_task_and_model(config, kind)
    worker_module._CACHE.clear()
    worker = worker_module.get_worker(config, kind)
    try:
        assert adapter_kind_of(server.model) == adapter_kind_of(worker.model) == kind  # the kind passed, not derived
        assert server.task.config is config and type(server.task) is type(worker.task)
        mine, theirs = extract(server.model), extract(worker.model)
        assert list(mine) == list(theirs) and all(mine[k].tobytes() == theirs[k].tobytes() for k in mine)
        assert server.datasets["train"][:5] == worker.datasets["train"][:5]
        assert len(server.datasets["test"]) == len(worker.datasets["test"]) > 0
    finally:
        worker_module._CACHE.clear()
