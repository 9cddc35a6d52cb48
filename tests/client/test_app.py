"""The ClientApp: one base model per worker process, and a client's state is only its adapter."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

import client.worker as worker_module
from adapters.lora import AdapterSpec, build_adapted_model
from adapters.payload import extract
from client.app import app as client_app
from adapters.kind_registry import adapter_kind_of
from client.training import batch_indices
from contract import ADAPTER_KIND, LEARNING_RATE, parse_run_config
from tests.strategies.fake_grid import set_task_identity

RUN = {
    "strategy.name": "fedit",
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "adapter.rank": 4,
    "train.local-steps": 2,
    "train.batch-size": 4,
    "train.lr": 0.01,
}


def initial_arrays() -> ArrayRecord:
    model, _ = build_adapted_model("tiny-llama", AdapterSpec(rank=4, alpha=16), kind="causal-lm", num_labels=None, init_seed=42)
    return ArrayRecord({k: Array(v) for k, v in extract(model).items()})


def train_message(arrays: ArrayRecord, node_id: int, server_round: int = 1, adapter_kind: str | None = "lora") -> Message:
    set_task_identity()
    config = ConfigRecord({"server-round": server_round})
    if adapter_kind is not None:
        config[ADAPTER_KIND] = adapter_kind
    content = RecordDict({"arrays": arrays, "config": config})
    return Message(content, dst_node_id=node_id, message_type="train")


def context(partition_id: int, num_partitions: int = 4) -> Context:
    return Context(
        run_id=1,
        node_id=100 + partition_id,
        node_config={"partition-id": partition_id, "num-partitions": num_partitions},
        state=RecordDict(),
        run_config=dict(RUN),
    )


def reply_arrays(reply: Message) -> dict[str, np.ndarray]:
    assert not reply.has_error(), reply.error
    return {k: v.numpy() for k, v in reply.content["arrays"].items()}


def test_base_model_is_built_once_per_process_and_clients_do_not_leak_into_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    worker_module._CACHE.clear()
    builds = []
    real_build = worker_module.build_task_and_model
    monkeypatch.setattr(worker_module, "build_task_and_model", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    arrays = initial_arrays()

    alone = reply_arrays(client_app(train_message(arrays, 100), context(0)))
    worker_module._CACHE.clear()
    builds.clear()
    reply_arrays(client_app(train_message(arrays, 101), context(1)))  # another client first ...
    after_other = reply_arrays(client_app(train_message(arrays, 100), context(0)))  # ... then the same one

    assert len(builds) == 1  # one base model served both clients
    for key in alone:  # the first client's training left no trace in the second's result
        np.testing.assert_array_equal(alone[key], after_other[key])


def test_reply_carries_num_examples_and_the_train_loss() -> None:
    reply = client_app(train_message(initial_arrays(), 102), context(2))
    metrics = reply.content["metrics"]
    config = parse_run_config(RUN)
    shard = worker_module.get_worker(config, "lora").train_rows(config, partition_id=2, num_partitions=4)
    assert metrics["num-examples"] == len(shard) > 0
    assert np.isfinite(metrics["train_loss"])


def test_the_worker_is_built_with_the_adapter_kind_the_server_named_not_one_the_client_derives() -> None:
    worker_module._CACHE.clear()
    reply_arrays(client_app(train_message(initial_arrays(), 100), context(0)))
    config = parse_run_config(RUN)
    assert list(worker_module._CACHE) == [worker_module.worker_key(config, "lora")]
    ffa = worker_module.get_worker(config, "ffa")  # the same run config (strategy fedit), another kind
    assert adapter_kind_of(ffa.model) == "ffa" and list(worker_module._CACHE) == [worker_module.worker_key(config, "ffa")]
    worker_module._CACHE.clear()


def test_an_instruction_without_the_adapter_kind_gets_a_clear_error() -> None:
    with pytest.raises(ValueError, match=f"names no adapter kind \\(`{ADAPTER_KIND}`"):
        client_app(train_message(initial_arrays(), 100, adapter_kind=None), context(0))


def test_a_node_without_partition_config_gets_a_clear_error() -> None:
    ctx = context(0)
    ctx.node_config.clear()
    with pytest.raises(ValueError, match="--node-config 'partition-id=<i> num-partitions=<n>'"):
        client_app(train_message(initial_arrays(), 100), ctx)  # Flower turns this into an error reply


def test_batches_are_seeded_without_replacement_within_an_epoch() -> None:
    batches = batch_indices(10, steps=5, batch_size=4, seed=3)
    assert [len(b) for b in batches] == [4] * 5
    first_epoch = np.concatenate(batches)[:8]
    assert len(set(first_epoch.tolist())) == 8
    again = batch_indices(10, steps=5, batch_size=4, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, batch_indices(10, steps=5, batch_size=4, seed=4), strict=True))


@pytest.mark.parametrize(
    ("train_lr", "sent", "used"),
    [("auto", 0.005, 0.005), (0.03, 0.005, 0.03), ("auto", None, None), ("auto", float("nan"), None), ("auto", 50.0, None)],
)
def test_train_lr_auto_trains_at_the_rate_the_server_resolved(
    monkeypatch: pytest.MonkeyPatch, train_lr: object, sent: float | None, used: float | None
) -> None:
    # docs/algorithms.md §17: the strategy's rate reaches clients, who never import strategies, in the message
    import client.app as client_module

    rates: list[float] = []
    real_train = client_module.local_train
    monkeypatch.setattr(client_module, "local_train", lambda *a, **k: rates.append(k["lr"]) or real_train(*a, **k))
    message = train_message(initial_arrays(), 100)
    if sent is not None:
        message.content["config"][LEARNING_RATE] = sent
    ctx = context(0)
    ctx.run_config["train.lr"] = train_lr
    if used is None:
        with pytest.raises(ValueError, match=f"train.lr = auto needs the server's `{LEARNING_RATE}` in \\(0, 10\\]"):
            client_app(message, ctx)
        assert rates == []
    else:
        reply_arrays(client_app(message, ctx))
        assert rates == [used]
