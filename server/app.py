"""The Corolla ServerApp: prepare the run, run the rounds, finish.

1. **Prepare.** Check the strategy side of the config and resolve the adapter kind
   (``adapter.name = auto``: the strategy's first), build the task
   and the adapted model as every client does (``client.tasks.setup``), and the
   :class:`~server.run_state.RunState` the loop starts from: fresh (the adapter kind's server-side
   set-up, round 0) or resumed from a checkpoint. Build the strategy and wrap it
   (``server.strategy_chain``: round driver -> byte meter -> plugin relay -> strategy).
2. **Rounds.** Flower's own ``Strategy.start`` loop. Every train and evaluate instruction carries
   the adapter kind (``ADAPTER_KIND``), which clients build their model with. After every round the
   recorder writes the round's row and a checkpoint (``server.checkpoint``); ``resume-from``
   continues from it.
3. **Finish.** The ledger, the exported adapter (``server.export``) and ``summary.json``.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from adapters.base_delta import BaseWeights, adapted_elements
from adapters.frozen import frozen_factors
from adapters.payload import layout
from client.tasks.setup import TaskAndModel, build_task_and_model
from contract.extensions import load_installed_extensions
from contract import ADAPTER_KIND, EPSILON_SPENT, LEARNING_RATE, ConfigError, MetricSchema, RunConfig, ValidationConfig, parse_run_config
from server.adapter_setup import resolve_run_adapter_kind, strategy_adapter_params
from server.central_eval import CentralEvaluator
from server.epsilon_bound import EpsilonBound
from server.epsilon_ledger import EpsilonLedger
from server.checkpoint import Checkpoint, rng_state
from server.empty_round import check_round, is_empty
from server.exactness_audit import ExactnessAudit, audit_wanted
from server.export import export_final
from server.metering import DOWN, UP
from server.privacy_statement import privacy_statement
from server.rank_census import RankCensus
from server.progress import ProgressGrid
from server.recorder import DROPPED_EVALUATE, RoundRecorder, dropped_summary
from server.run_folder import RunFolder
from server.run_state import RunState, load_checkpoint
from server.secagg import secagg_summary, secure_strategy
from server.split_check import check_delta, check_split, federation_size
from server.strategy_chain import StrategyChain, wrap_strategy
from strategies import build_strategy
from strategies.client_ranks import ClientRanks
from strategies.protocol import CorollaStrategy
from strategies.registry import learning_rate, needs_rank_census, strategy_info
from strategies.validation import ReplyPolicy

load_installed_extensions()  # other packages' strategies, kinds and tasks (docs/extending.md §1)

app = ServerApp()


def run(grid: Grid, config: RunConfig) -> RunFolder:
    """Run the whole federation described by ``config`` on ``grid``; returns the run folder."""
    started = time.perf_counter()
    checkpoint = load_checkpoint(config)  # a run that cannot resume fails before anything is built
    adapter_kind = resolve_run_adapter_kind(config)  # `adapter.name = auto`: the strategy's first kind
    ranks = client_ranks(config)  # adapter.ranks: per-client ranks, the server's adapter has the largest
    built = build_task_and_model(server_side_config(config, ranks), adapter_kind)
    privacy = privacy_statement(config, adapter_kind, type(built.task))  # logs what ε does not cover before anything runs
    num_nodes = federation_size(grid, config)
    check_split(built, config, num_nodes)  # a split no client could draw fails here
    check_delta(built, config, num_nodes)  # so does a δ that some client's shard would refuse
    state = (
        RunState.resumed(checkpoint, built, Path(config.resume_from)) if checkpoint is not None
        else RunState.fresh(config, built, grid, adapter_kind)
    )
    strategy = _build_strategy(config, built, ranks)
    state.restore(strategy)
    epsilon = (  # docs/privacy.md §10: every node's ε, reported or bounded by the server
        EpsilonLedger(EpsilonBound(config, built, num_nodes), num_partitions=num_nodes, nodes=state.epsilon_nodes)
        if config.privacy.enabled else None
    )
    plain = strategy
    strategy = secure_strategy(  # secagg.*: only sums reach it
        strategy, config, task=built.task, ledger=state.ledger, epsilon=epsilon
    )
    if strategy is not plain and config.adapter.wire_dtype != "float32":
        raise ConfigError(
            f"`adapter.wire-dtype` = {config.adapter.wire_dtype!r} cannot combine with secure aggregation (it masks "
            "float32 updates); set `adapter.wire-dtype = float32` or turn `secagg.enabled` off"
        )
    folder = state.open_folder(config)  # only once everything above resolved: a bad name leaves nothing
    base = BaseWeights(built.model, storage=config.model.base_delta_storage())
    chain = wrap_strategy(
        strategy, task=built.task, folder=folder.path, ledger=state.ledger, round_offset=state.round_offset,
        broadcast=state.broadcast, epsilon=epsilon, wire_dtype=config.adapter.wire_dtype,
        audit=_exactness_audit(config, built, base, strategy, adapter_kind) if strategy is plain and ranks is None else None,
        census=RankCensus(ranks, state.ledger, timeout=config.round_timeout or 600) if ranks else None,
    )
    recorder = RoundRecorder(
        folder, chain, _central_evaluator(config, built, base, strategy), main_metric=built.task.main_metric,
        num_rounds=config.num_server_rounds, rows=state.rows, show_epsilon=config.privacy.enabled,
    )
    final = _run_rounds(grid, config, adapter_kind, state, chain, recorder, folder, built)
    chain.meter.ledger.write_csv(folder.ledger_path)
    export_final(
        built.model, built.tokenizer, {key: array.numpy() for key, array in final.items()}, folder,
        adapter_kind=adapter_kind, base=base, base_deltas=strategy.base_deltas(),
    )
    last = recorder.rows[-1] if recorder.rows else {}
    folder.write_summary(
        {
            "rounds": config.num_server_rounds,
            "strategy": config.strategy.name,
            "model": config.model.name,
            "task": config.task.name,
            "main_metric": built.task.main_metric,
            "final": {k: v for k, v in last.items() if k.startswith("eval_")},
            "bytes_down": chain.meter.ledger.total(direction=DOWN),
            "bytes_up": chain.meter.ledger.total(direction=UP),
            "dropped": dropped_summary(recorder.rows),
            "dropped_evaluate": dropped_summary(recorder.rows, field=DROPPED_EVALUATE),
            "timed_out": sum(int(r.get("timed_out", 0)) for r in recorder.rows),
            "rounds_without_replies": sum(is_empty(r) for r in recorder.rows),
            **state.summary(),
            **({"client_ranks": {str(node): rank for node, rank in sorted(ranks.by_node.items())}} if ranks else {}),
            **secagg_summary(config, recorder.rows),
            **({"privacy": {**privacy, "epsilon": epsilon.epsilon(), "nodes": epsilon.table()}}
               if privacy and epsilon is not None else {}),
            "wall_s": round(time.perf_counter() - started, 2),
        }
    )
    print(f"Corolla run complete: {folder.path}", flush=True)
    return folder


def client_ranks(config: RunConfig) -> ClientRanks | None:
    """``adapter.ranks`` as the strategy and the census share it (``None``: one rank for all, fixed). A
    strategy whose nodes' ranks may come to differ (HetLoRA's self-pruning) gets one with one rank listed."""
    if not needs_rank_census(config):
        return None
    return ClientRanks(config.adapter.rank_list() or (config.adapter.rank,), config.adapter.alpha)


def server_side_config(config: RunConfig, ranks: ClientRanks | None) -> RunConfig:
    """The config the server builds its model with: with per-client ranks, the global adapter has the
    largest rank (every node's adapter is a truncation of it, ``docs/algorithms.md §18``)."""
    if ranks is None or ranks.r_max == config.adapter.rank:
        return config
    return config.model_copy(update={"adapter": config.adapter.model_copy(update={"rank": ranks.r_max})})


def _build_strategy(config: RunConfig, built: TaskAndModel, ranks: ClientRanks | None = None) -> CorollaStrategy:
    """The registered ``strategy.name``, told what it needs of the adapter (after the server-side set-up)."""
    return build_strategy(
        config.strategy.name,
        config=config,
        **strategy_adapter_params(built.model),
        **({"client_ranks": ranks} if ranks is not None else {}),
        weighted=config.strategy.weighted,
        fraction_train=config.fraction_train,
        fraction_evaluate=config.fraction_evaluate,
        min_train_nodes=config.min_train_nodes,
        min_evaluate_nodes=1,
        min_available_nodes=config.min_train_nodes,
        seed=config.seed,
        reply_policy=reply_policy(config, built),
    )


def _exactness_audit(
    config: RunConfig, built: TaskAndModel, base: BaseWeights, strategy: CorollaStrategy, adapter_kind: str
) -> ExactnessAudit | None:
    """The per-round ``exact_rel_error`` audit for an exact strategy (``audit.exactness``), else ``None``.
    Not under SecAgg: the server never sees a client's own update there."""
    if not strategy_info(config.strategy.name).exact or not audit_wanted(config.audit.exactness, adapted_elements(built.model)):
        return None
    return ExactnessAudit(
        base=base, layout=layout(built.model), adapter_kind=adapter_kind, frozen=frozen_factors(built.model),
        weighted=config.strategy.weighted, base_deltas=strategy.base_deltas,
    )


def reply_policy(config: RunConfig, built: TaskAndModel) -> ReplyPolicy:
    """What the run accepts from clients (``docs/trust.md §1``): the core metrics plus those the task
    and the strategy declare, and the ``validation.*`` bounds."""
    limits = config.section(ValidationConfig)
    declared = [*built.task.reply_metrics, *strategy_info(config.strategy.name).reply_metrics]
    schema = MetricSchema.for_run(declared, limits=limits, privacy=config.privacy.enabled)
    return ReplyPolicy(schema=schema, max_update_norm=limits.max_update_norm)


def _central_evaluator(
    config: RunConfig, built: TaskAndModel, base: BaseWeights, strategy: CorollaStrategy
) -> CentralEvaluator | None:
    """The server's own evaluation on the task's test split (``eval.central``), or ``None``."""
    if not config.eval.central:
        return None
    rows = built.datasets["test"].to_list()
    if config.eval.max_examples:
        rows = rows[: config.eval.max_examples]
    return CentralEvaluator(
        built.task, built.model, built.tokenizer, rows, batch_size=config.eval.batch_size, base=base,
        base_deltas=strategy.base_deltas,
    )


def _run_rounds(
    grid: Grid,
    config: RunConfig,
    adapter_kind: str,
    state: RunState,
    chain: StrategyChain,
    recorder: RoundRecorder,
    folder: RunFolder,
    built: TaskAndModel,
) -> ArrayRecord:
    """Rounds ``state.round_offset + 1 .. num-server-rounds``; returns the final global arrays."""
    frozen = frozen_factors(built.model)

    def record_and_checkpoint(server_round: int, arrays: ArrayRecord) -> Any:
        metrics = recorder(server_round, arrays)
        # a round that aggregated nothing: fails the run if nothing has trained yet (docs/operations.md §2)
        check_round(recorder.rows[-1], recorder.rows[:-1], chain.strategy.last_dropped if server_round > 0 else ())
        if server_round > 0:
            state_arrays, state_meta = chain.strategy.export_state()
            Checkpoint(
                server_round=server_round, config=config.to_flat(),
                global_arrays={key: array.numpy() for key, array in arrays.items()}, frozen=frozen,
                strategy_arrays=state_arrays, strategy_meta=state_meta, rng_state=rng_state(),
                ledger=list(chain.meter.ledger.rows), rows=recorder.rows, broadcast=chain.relay.broadcast,
                epsilon_ledger=chain.driver.epsilon.state() if chain.driver.epsilon is not None else None,
            ).save(folder.path)
        return metrics

    def status() -> str:
        last = recorder.rows[-1] if recorder.rows else {}
        metric = last.get(f"eval_{built.task.main_metric}")
        latest = f", eval_{built.task.main_metric} {metric:.4f} (round {last['round']})" if metric is not None else ""
        return f"{chain.meter.ledger.total() / 1e6:.2f} MB so far{latest}"

    initial = ArrayRecord({key: Array(value) for key, value in state.start_arrays.items()})
    train_config = ConfigRecord({ADAPTER_KIND: adapter_kind, LEARNING_RATE: learning_rate(config)})
    if config.privacy.enabled:
        train_config[EPSILON_SPENT] = 0.0  # each node's value is set by the ε ledger (server.epsilon_ledger)
    random.setstate(state.rng_state)  # Flower samples nodes with the global `random`
    result = chain.driver.start(
        grid=ProgressGrid(grid, num_rounds=config.num_server_rounds, status=status),
        initial_arrays=initial,
        num_rounds=config.num_server_rounds - state.round_offset,
        train_config=train_config,
        evaluate_config=ConfigRecord({ADAPTER_KIND: adapter_kind}),
        evaluate_fn=chain.driver.evaluate_fn(record_and_checkpoint),
        timeout=config.round_timeout or 3600,
    )
    return result.arrays if len(result.arrays) else initial


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower entry point."""
    run(grid, parse_run_config(context.run_config))
