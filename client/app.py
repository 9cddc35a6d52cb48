"""The Corolla ClientApp: load the global adapter, train or evaluate locally, reply.

Handlers only parse config, fetch the cached worker and call library code; see
``client.worker`` for what is built once per process. The run config is parsed with
``partial=True``: sections of extensions this process never imports (strategies') are skipped, the
ServerApp validated them. The adapter kind is never derived here: every instruction names the one
the server resolved (``ADAPTER_KIND`` in its config record), and the worker is built with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Callable
from logging import WARNING

from flwr.app import Array, ArrayRecord, Context, Error, Message, MetricRecord, MetricRecordValues, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log

from adapters.lora_sb import estimate_gradients
from adapters.payload import extract, load
from adapters.precision import set_gradient_checkpointing
from client.base_sync import PendingBase, sync_base
from client.factor_roles import RoundFactors
from client.faults import InjectedFailure, draw_fault, malform
from client.frozen_sync import CONFIRMED, sync_frozen
from client.node_state import NodeStateMissing, state_missing_reply
from client.privacy_history import HistoryMissing, check_history, history_path, persist_history, restore_history
from client.rank_pruning import RankPruning
from client.secagg import register_secagg
from client.training import PrivateRound, local_train
from client.tasks.base import AdapterUpdate
from client.worker import Worker, get_worker
from privacy import BudgetExhausted, DPConfig
from contract.extensions import load_installed_extensions
from contract.wire import decode_record, encode_record
from contract.ranks import ADAPTER_RANK, NODE_RANK_KEY, RANK_QUERY, client_rank
from contract import (
    ADAPTER_KIND,
    ARRAYS,
    BASE_VERSION,
    BROADCAST,
    CONFIG,
    EPSILON,
    EPSILON_SPENT,
    GRADIENT_ESTIMATE,
    INIT_EXAMPLES,
    LEARNING_RATE,
    METRICS,
    NUM_EXAMPLES,
    PARTITION_ID,
    PRIVACY_BUDGET_EXHAUSTED,
    PRIVACY_HISTORY_MISSING,
    REPORT,
    SERVER_ROUND,
    TRAIN_LOSS,
    RunConfig,
    decode_json_record,
    encode_json_record,
    parse_run_config,
)

load_installed_extensions()  # other packages' strategies, kinds and tasks (docs/extending.md §1)

app = ClientApp()


def _node_partition(context: Context) -> tuple[int, int]:
    try:
        return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    except KeyError as exc:
        raise ValueError(
            f"node config lacks {exc}; start the SuperNode with "
            "--node-config 'partition-id=<i> num-partitions=<n>'"
        ) from exc


def _worker(msg: Message, context: Context) -> tuple[RunConfig, Worker]:
    """The run config and the cached worker for the adapter kind the instruction names."""
    config = parse_run_config(context.run_config, partial=True)
    instruction = msg.content.config_records[CONFIG]
    if ADAPTER_KIND not in instruction:
        raise ValueError(
            f"the server's {msg.metadata.message_type} instruction names no adapter kind (`{ADAPTER_KIND}` in its "
            f"`{CONFIG}` record); run the ServerApp and the ClientApp from the same Corolla version"
        )
    return config, get_worker(config, str(instruction[ADAPTER_KIND]))


def _own_rank(config: RunConfig, worker: Worker, context: Context, partition_id: int) -> int | None:
    """With ``adapter.ranks`` set: this client's rank, installed in the worker's adapter (``None``: one
    rank for all, the model is left as built)."""
    if not config.adapter.mixed_ranks() and NODE_RANK_KEY not in context.node_config:
        return None
    rank = client_rank(config.adapter.rank_list(), config.adapter.rank, partition_id, context.node_config)
    worker.use_rank(rank)
    return rank


def _pruning(msg: Message, config: RunConfig, context: Context, partition_id: int) -> RankPruning | None:
    """HetLoRA's rank self-pruning when the instruction carries its rule (``client.rank_pruning``)."""
    configured = client_rank(config.adapter.rank_list(), config.adapter.rank, partition_id, context.node_config)
    return RankPruning.of(msg.content, context, configured=configured)


def _use_rank(worker: Worker) -> Callable[[int], dict]:
    """``rank -> layout``: give the worker's adapter that rank and return its layout."""
    def use(rank: int) -> dict:
        worker.use_rank(rank)
        return worker.layout
    return use


def _instruction_int(msg: Message, key: str) -> int:
    """The integer ``key`` of the instruction's config record (``server-round``, ``init-examples``)."""
    value = msg.content.config_records[CONFIG].get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"the server's {msg.metadata.message_type} instruction has `{key}` = {value!r}, not an integer")
    return value


def _learning_rate(msg: Message, config: RunConfig) -> float:
    """This round's AdamW rate: ``train.lr``, or for ``auto`` the rate the server resolved from the strategy
    (``contract.LEARNING_RATE``; clients never import strategies; docs/algorithms.md §17)."""
    if config.train.lr != "auto":
        return float(config.train.lr)
    value = msg.content.config_records[CONFIG].get(LEARNING_RATE)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10:  # NaN fails too
        raise ValueError(f"train.lr = auto needs the server's `{LEARNING_RATE}` in (0, 10]; the instruction has {value!r}")
    return float(value)


def _client_seed(seed: int, server_round: int, partition_id: int) -> int:
    return (seed * 1_000_003 + server_round * 10_007 + partition_id) % (2**31)


def _private_round(config: RunConfig, context: Context) -> PrivateRound | None:
    """DP-SGD settings for this round, or ``None``; ε is spread over all ``num-server-rounds``
    (the client plans to train in every round: a conservative plan under sampling)."""
    if not config.privacy.enabled:
        return None
    dp = DPConfig.from_values(config.privacy.model_dump(by_alias=True))
    return PrivateRound(config=dp, planned_rounds=config.num_server_rounds, state=context.state)


def _restore_privacy(msg: Message, context: Context, private: PrivateRound, *, partition_id: int, num_examples: int) -> None:
    """Bring back this node's accountant history after a restart (``client.privacy_history``) and
    refuse (:class:`HistoryMissing`) if it is below the ε the server saw this node report."""
    mechanism = private.config.accountant
    restore_history(context, partition_id=partition_id, mechanism=mechanism)
    expected = msg.content.config_records[CONFIG].get(EPSILON_SPENT, 0.0)
    if isinstance(expected, bool) or not isinstance(expected, int | float) or not expected >= 0:
        raise ValueError(f"the server's train instruction has `{EPSILON_SPENT}` = {expected!r}, not an ε >= 0")
    check_history(
        context, expected=float(expected), mechanism=mechanism, delta=private.config.delta_for(num_examples),
        path=history_path(context, partition_id),
    )


def _load_global(
    worker: Worker, content: RecordDict, factors: RoundFactors, *, wire_dtype: str, personal: bool = True,
    pruning: RankPruning | None = None,
) -> dict:
    """Install the global payload (and any plugin broadcast) in the worker's model; return it.

    The payload arrives in ``adapter.wire-dtype`` and is decoded to float32 (``contract.wire``). A partial
    payload (``client.factor_roles``) is completed first: personal local layers for training, zeros (the
    global model) for ``personal=False``. With ``pruning`` the adapter first takes the round's rank."""
    arrays = decode_record(content.array_records[ARRAYS], wire_dtype)
    received = {key: array.numpy() for key, array in arrays.items()}
    if pruning is not None:  # the round's rank: the node's own or the payload's, the smaller
        received = pruning.fit(received, _use_rank(worker))
    received = factors.complete(received, worker.model, personal=personal)
    load(worker.model, received)
    state = decode_json_record(content, BROADCAST)
    if state is not None:
        worker.task.apply_broadcast(state)
    return received


@dataclass(frozen=True)
class NodeSync:
    """What a train or evaluate message settles before any work: HetLoRA's pruning rule (else the node's own
    rank, with ``adapter.ranks``), the base version and frozen factors the message names (committed only
    after success), the round's factor roles and the global payload installed in the model."""

    pruning: RankPruning | None
    rank: int | None
    pending: PendingBase
    frozen: bool
    factors: RoundFactors
    received: dict


def _sync_node(
    msg: Message, context: Context, config: RunConfig, worker: Worker, partition_id: int, *, personal: bool
) -> NodeSync | Message:
    """Bring this node to the state ``msg`` expects (:class:`NodeSync`), or the reply that says it cannot
    (its base or frozen factors are gone: ``client.node_state``). ``personal``: train on the node's own
    local layers (train) or evaluate the global model (evaluate)."""
    pruning = _pruning(msg, config, context, partition_id)  # HetLoRA: the rank is settled with the payload
    rank = _own_rank(config, worker, context, partition_id) if pruning is None else None
    try:
        pending = sync_base(worker.base, msg.content, context)
        frozen = sync_frozen(worker, msg.content, context)
    except NodeStateMissing as exc:
        return state_missing_reply(msg, exc)
    factors = RoundFactors.of(msg.content, context)
    received = _load_global(worker, msg.content, factors, wire_dtype=config.adapter.wire_dtype, personal=personal,
                            pruning=pruning)
    return NodeSync(pruning, rank, pending, frozen, factors, received)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the adapter on this node's shard for ``train.local-steps`` steps."""
    config, worker = _worker(msg, context)
    partition_id, num_partitions = _node_partition(context)
    server_round = _instruction_int(msg, SERVER_ROUND)
    fault = draw_fault(config, server_round=server_round, partition_id=partition_id)
    if fault == "fail":
        raise InjectedFailure(f"faults.fail-fraction: partition {partition_id} fails round {server_round}")
    if fault == "slow":
        time.sleep(config.faults.slow_seconds)
    node = _sync_node(msg, context, config, worker, partition_id, personal=True)
    if isinstance(node, Message):
        return node
    pruning, rank, pending, frozen, factors, received = node.pruning, node.rank, node.pending, node.frozen, node.factors, node.received
    rows = worker.train_rows(config, partition_id=partition_id, num_partitions=num_partitions)
    private = _private_round(config, context)
    if private is not None:
        try:
            _restore_privacy(msg, context, private, partition_id=partition_id, num_examples=len(rows))
        except HistoryMissing as exc:
            log(WARNING, "partition %d, round %d: %s", partition_id, server_round, exc)
            return Message(error=Error(code=PRIVACY_HISTORY_MISSING, reason=str(exc)), reply_to=msg)
    set_gradient_checkpointing(worker.model, config.train.gradient_checkpointing)
    try:
        with factors.training(worker.model):  # the round's fixed layers (RoLoRA, FedSVD) do not train
            stats = local_train(
                worker.model,
                worker.task,
                worker.tokenizer,
                rows,
                steps=config.train.local_steps,
                batch_size=config.train.batch_size,
                lr=_learning_rate(msg, config),
                weight_decay=config.train.weight_decay,
                seed=_client_seed(config.seed, server_round, partition_id),
                private=private,
                regulariser=pruning.regulariser(worker.model) if pruning is not None else None,
            )
    except BudgetExhausted as exc:
        log(WARNING, "partition %d, round %d: %s", partition_id, server_round, exc)
        # no base commit: the server drops this reply, so it still believes the previous version
        return Message(error=Error(code=PRIVACY_BUDGET_EXHAUSTED, reason=str(exc)), reply_to=msg)
    if private is not None:  # on disk before the reply leaves: a restart cannot forget this round's ε
        persist_history(context, partition_id=partition_id, mechanism=private.config.accountant)
    update = AdapterUpdate(before=received, after=extract(worker.model), layout=worker.layout)
    payload = worker.task.transform_update(worker.model, update)
    payload = update.after if payload is None else payload
    payload = factors.reply(payload)  # without local and fixed layers
    if pruning is not None:  # HetLoRA: a faded tail is cut off, the reply at the smaller rank
        payload = pruning.prune(payload, worker.layout)
        rank = pruning.rank
    if fault == "malformed":
        payload = malform(payload)
    report = worker.task.client_report(worker.model, worker.tokenizer, rows, update=update)
    metrics: dict[str, MetricRecordValues] = {TRAIN_LOSS: stats.loss, NUM_EXAMPLES: len(rows), PARTITION_ID: partition_id, BASE_VERSION: pending.version, CONFIRMED: int(frozen)}
    metrics.update(factors.reply_metrics())
    if rank is not None:
        metrics[ADAPTER_RANK] = rank
    if stats.epsilon is not None:
        metrics[EPSILON] = stats.epsilon
    reply = RecordDict(
        {
            ARRAYS: encode_record(payload, config.adapter.wire_dtype),  # adapter.wire-dtype (contract.wire)
            METRICS: MetricRecord(metrics),
        }
    )
    if report is not None:
        reply[REPORT] = encode_json_record(report)
    pending.commit(context)
    factors.commit(update.after)
    if pruning is not None:
        pruning.commit()
    return Message(content=reply, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global adapter on this node's share of the task's test split."""
    config, worker = _worker(msg, context)
    partition_id, num_partitions = _node_partition(context)
    node = _sync_node(msg, context, config, worker, partition_id, personal=False)
    if isinstance(node, Message):
        return node
    pending, frozen, factors, received = node.pending, node.frozen, node.factors, node.received
    rank = node.pruning.rank if node.pruning is not None else node.rank
    if factors.local:  # a personalised strategy (FedSA): score on test data drawn like this node's training data
        rows = worker.local_test_rows(config, partition_id=partition_id, num_partitions=num_partitions)
    else:
        rows = worker.test_rows(partition_id=partition_id, num_partitions=num_partitions, seed=config.seed)
    result = worker.task.evaluate(worker.model, worker.tokenizer, rows, batch_size=config.eval.batch_size)
    metrics: dict[str, MetricRecordValues] = {f"eval_{name}": float(value) for name, value in result.values.items()}
    personal = factors.personal_scores(  # FedSA: this node's own B on the same test rows
        worker.model, received,
        lambda: worker.task.evaluate(worker.model, worker.tokenizer, rows, batch_size=config.eval.batch_size).values,
    )
    metrics.update({f"eval_{name}": value for name, value in personal.items()})
    if worker.task.implements("shard_metrics"):  # the client's own training shard, e.g. memorisation
        own = worker.train_rows(config, partition_id=partition_id, num_partitions=num_partitions)
        shard = worker.task.shard_metrics(worker.model, worker.tokenizer, own, batch_size=config.eval.batch_size)
        metrics.update({f"eval_{name}": float(value) for name, value in shard.items()})
    metrics[NUM_EXAMPLES] = result.num_examples
    metrics[BASE_VERSION] = pending.version
    metrics[CONFIRMED] = int(frozen)
    metrics.update(factors.reply_metrics())
    if rank is not None:
        metrics[ADAPTER_RANK] = rank
    pending.commit(context)
    factors.commit()
    return Message(content=RecordDict({METRICS: MetricRecord(metrics)}), reply_to=msg)


@app.train(GRADIENT_ESTIMATE.split(".")[1])
def gradient_estimate(msg: Message, context: Context) -> Message:
    """Fed-SB set-up (arXiv 2502.15436; ``docs/algorithms.md §9.2``): this node's summed raw gradient of every adapted base
    weight over up to ``init-examples`` of its own examples; the server sums them and takes the sign."""
    config, worker = _worker(msg, context)
    partition_id, num_partitions = _node_partition(context)
    rows = worker.train_rows(config, partition_id=partition_id, num_partitions=num_partitions)
    count = min(_instruction_int(msg, INIT_EXAMPLES), len(rows))
    size = config.train.batch_size
    batches = [worker.task.collate(worker.tokenizer, rows[i : i + size]) for i in range(0, count, size)]
    grads = estimate_gradients(worker.model, batches, lambda m, b: worker.task.example_losses(m, b).mean(), num_samples=count)
    reply = RecordDict(
        {
            ARRAYS: ArrayRecord({module: Array(g.astype("float32")) for module, g in grads.items()}),
            METRICS: MetricRecord({NUM_EXAMPLES: count}),
        }
    )
    return Message(content=reply, reply_to=msg)


@app.query(RANK_QUERY.split(".")[1])
def adapter_rank(msg: Message, context: Context) -> Message:
    """The rank census (``docs/algorithms.md §18``): this node's partition id and the LoRA rank it trains."""
    config = parse_run_config(context.run_config, partial=True)
    partition_id, _ = _node_partition(context)
    rank = client_rank(config.adapter.rank_list(), config.adapter.rank, partition_id, context.node_config)
    return Message(content=RecordDict({METRICS: MetricRecord({PARTITION_ID: partition_id, ADAPTER_RANK: rank})}), reply_to=msg)


register_secagg(app, train)  # SecAgg+ stages (`query.secagg_*`, `train.secagg_collect`); collect trains with `train`
