"""The Corolla ServerApp: typed config -> base model spec -> strategy -> metered round loop -> run folder.

Wrappers around the strategy, outermost first: :class:`RoundDriver` (resumed round numbers, reply
order, timeouts) -> :class:`Metered` (bytes) -> :class:`PluginRelay` (task-plugin reports and
broadcasts) -> the strategy. After every round the recorder writes the round's row and a checkpoint
(``server.checkpoint``); ``resume-from`` continues from it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from adapters.base_delta import BaseWeights
from adapters.frozen import frozen_factors, load_frozen_factors
from adapters.lora import AdapterSpec, build_adapted_model
from adapters.payload import extract
from client.tasks import build_task
from server.adapter_setup import initialise_adapter, resolve_run_adapter_kind, strategy_adapter_params
from server.central_eval import CentralEvaluator
from server.checkpoint import Checkpoint, check_compatible, rng_state
from server.export import export_final
from server.metering import DOWN, UP, ByteLedger, Metered
from server.plugin_relay import PluginRelay
from server.privacy_statement import privacy_statement
from server.progress import ProgressGrid
from server.recorder import RoundRecorder
from server.round_driver import RoundDriver
from server.secagg import secagg_summary, secure_strategy
from server.run_folder import RunFolder
from strategies import build_strategy
from contract import RunConfig, parse_run_config

app = ServerApp()


def run(grid: Grid, config: RunConfig) -> RunFolder:
    """Run the whole federation described by ``config`` on ``grid``; returns the run folder."""
    started = time.perf_counter()
    resumed = Checkpoint.load(Path(config.resume_from).expanduser()) if config.resume_from else None
    if resumed is not None:
        check_compatible(resumed.config, config.to_flat())
    adapter_kind = resolve_run_adapter_kind(config)  # `adapter.name = auto`: the strategy's first kind
    task = build_task(config.task.name, seed=config.seed, max_length=config.task.max_length)
    task.configure(config)
    model, tokenizer = build_adapted_model(
        config.model.name,
        AdapterSpec.from_config(config.adapter, method=adapter_kind),
        kind=task.model_kind,
        num_labels=task.num_labels,
        init_seed=config.seed,
    )
    datasets = task.build_datasets()
    ledger = ByteLedger(rows=list(resumed.ledger)) if resumed else ByteLedger()
    privacy = privacy_statement(config, adapter_kind)  # logs what ε does not cover before anything runs
    if resumed is not None:
        load_frozen_factors(model, resumed.frozen)  # never re-run Fed-SB's init: it may have asked clients
    else:  # the adapter kind's set-up (LoRA-SB: B, R0, A from a gradient estimate)
        initialise_adapter(adapter_kind, model=model, task=task, tokenizer=tokenizer, datasets=datasets,
                           config=config, grid=grid, ledger=ledger)
    start_arrays = resumed.global_arrays if resumed else extract(model)
    initial = ArrayRecord({key: Array(value) for key, value in start_arrays.items()})
    strategy = build_strategy(
        config.strategy.name,
        **strategy_adapter_params(model),
        weighted=config.strategy.weighted,
        fraction_train=config.fraction_train,
        fraction_evaluate=config.fraction_evaluate,
        min_train_nodes=config.min_train_nodes,
        min_evaluate_nodes=1,
        min_available_nodes=config.min_train_nodes,
        seed=config.seed,
    )
    strategy = secure_strategy(strategy, config, task=task, ledger=ledger)  # secagg.*: only sums reach it
    if resumed is not None:
        strategy.restore_state(resumed.strategy_arrays, resumed.strategy_meta)
        folder = RunFolder.reopen(Path(config.resume_from), config, resumed.rows)
    else:
        folder = RunFolder.create(config)  # only once everything above resolved: a bad name leaves nothing
    random.seed(config.seed)  # Flower samples nodes with the global `random`
    relay = PluginRelay(strategy, task, folder.path)
    if resumed is not None:
        random.setstate(resumed.rng_state)
        if resumed.broadcast is not None:
            relay.broadcast = resumed.broadcast
            task.apply_broadcast(resumed.broadcast)
    meter = Metered(relay, ledger)  # plugin records are metered too
    driver = RoundDriver(meter, offset=resumed.server_round if resumed else 0)
    base = BaseWeights(model)
    base_deltas = getattr(strategy, "base_deltas", None)  # strategies that change the frozen base
    evaluator = None
    if config.eval.central:
        rows = datasets["test"].to_list()
        if config.eval.max_examples:
            rows = rows[: config.eval.max_examples]
        evaluator = CentralEvaluator(
            task, model, tokenizer, rows, batch_size=config.eval.batch_size, base=base, base_deltas=base_deltas
        )
    recorder = RoundRecorder(
        folder, meter, evaluator, main_metric=task.main_metric, num_rounds=config.num_server_rounds,
        show_epsilon=config.privacy.enabled, rows=resumed.rows if resumed else None,
        timed_out=driver.timed_out,
    )
    frozen = frozen_factors(model)

    def record_and_checkpoint(server_round: int, arrays: ArrayRecord) -> Any:
        metrics = recorder(server_round, arrays)
        if server_round > 0:
            state_arrays, state_meta = strategy.export_state()
            Checkpoint(
                server_round=server_round, config=config.to_flat(),
                global_arrays={key: array.numpy() for key, array in arrays.items()}, frozen=frozen,
                strategy_arrays=state_arrays, strategy_meta=state_meta, rng_state=rng_state(),
                ledger=list(meter.ledger.rows), rows=recorder.rows, broadcast=relay.broadcast,
            ).save(folder.path)
        return metrics

    def status() -> str:
        last = recorder.rows[-1] if recorder.rows else {}
        metric = last.get(f"eval_{task.main_metric}")
        latest = f", eval_{task.main_metric} {metric:.4f} (round {last['round']})" if metric is not None else ""
        return f"{meter.ledger.total() / 1e6:.2f} MB so far{latest}"

    result = driver.start(
        grid=ProgressGrid(grid, num_rounds=config.num_server_rounds, status=status),
        initial_arrays=initial,
        num_rounds=config.num_server_rounds - driver.offset,
        train_config=ConfigRecord({}),
        evaluate_config=ConfigRecord({}),
        evaluate_fn=driver.evaluate_fn(record_and_checkpoint),
        timeout=config.round_timeout or 3600,
    )
    final = result.arrays if len(result.arrays) else initial
    meter.ledger.write_csv(folder.ledger_path)
    export_final(
        model,
        tokenizer,
        {key: array.numpy() for key, array in final.items()},
        folder,
        adapter_kind=adapter_kind,
        base=base,
        base_deltas=base_deltas() if base_deltas is not None else None,
    )
    last = recorder.rows[-1] if recorder.rows else {}
    folder.write_summary(
        {
            "rounds": config.num_server_rounds,
            "strategy": config.strategy.name,
            "model": config.model.name,
            "task": config.task.name,
            "main_metric": task.main_metric,
            "final": {k: v for k, v in last.items() if k.startswith("eval_")},
            "bytes_down": meter.ledger.total(direction=DOWN),
            "bytes_up": meter.ledger.total(direction=UP),
            "dropped": sum(int(r.get("dropped", 0)) for r in recorder.rows),
            "timed_out": sum(int(r.get("timed_out", 0)) for r in recorder.rows),
            **({"resumed_after_round": resumed.server_round} if resumed else {}),
            **secagg_summary(config, recorder.rows),
            **({"privacy": {**privacy, "epsilon": max((r["epsilon"] for r in recorder.rows if "epsilon" in r), default=None)}}
               if privacy else {}),
            "wall_s": round(time.perf_counter() - started, 2),
        }
    )
    print(f"Corolla run complete: {folder.path}", flush=True)
    return folder


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower entry point."""
    run(grid, parse_run_config(context.run_config))
