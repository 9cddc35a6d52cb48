"""The Corolla ServerApp: typed config -> base model spec -> strategy -> metered round loop -> run folder."""

from __future__ import annotations

import random
import time

from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from adapters.base_delta import BaseWeights
from adapters.lora import AdapterSpec, build_adapted_model
from adapters.payload import extract
from client.tasks import build_task
from server.adapter_setup import federated_lora_sb_init, initialise_lora_sb_on_server, strategy_adapter_params
from server.central_eval import CentralEvaluator
from server.export import export_final
from server.metering import DOWN, UP, ByteLedger, Metered
from server.plugin_relay import PluginRelay
from server.privacy_statement import privacy_statement
from server.recorder import RoundRecorder
from server.run_folder import RunFolder
from strategies import build_strategy
from strategies.contract import RunConfig, parse_run_config

app = ServerApp()


def run(grid: Grid, config: RunConfig) -> RunFolder:
    """Run the whole federation described by ``config`` on ``grid``; returns the run folder."""
    started = time.perf_counter()
    task = build_task(config.task.name, seed=config.seed, max_length=config.task.max_length)
    task.configure(config)
    model, tokenizer = build_adapted_model(
        config.model.name,
        AdapterSpec.from_config(config.adapter, method=config.adapter_kind),
        kind=task.model_kind,
        num_labels=task.num_labels,
        init_seed=config.seed,
    )
    datasets = task.build_datasets()
    ledger = ByteLedger()
    privacy = privacy_statement(config)  # logs what ε does not cover before anything runs
    if config.adapter_kind == "lora-sb" and config.adapter.init == "server":
        initialise_lora_sb_on_server(model, task, tokenizer, datasets, config)
    elif config.adapter_kind == "lora-sb":
        federated_lora_sb_init(grid, model, config, ledger)
    initial = ArrayRecord({key: Array(value) for key, value in extract(model).items()})
    strategy = build_strategy(
        config.strategy.name,
        **strategy_adapter_params(model, config),
        weighted=config.strategy.weighted,
        fraction_train=config.fraction_train,
        fraction_evaluate=config.fraction_evaluate,
        min_train_nodes=config.min_train_nodes,
        min_evaluate_nodes=1,
        min_available_nodes=config.min_train_nodes,
        seed=config.seed,
    )
    folder = RunFolder.create(config)  # only once everything above resolved: a bad name leaves nothing
    random.seed(config.seed)  # Flower samples nodes with the global `random`
    meter = Metered(PluginRelay(strategy, task, folder.path), ledger)  # plugin records are metered too
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
        show_epsilon=config.privacy.enabled,
    )
    result = meter.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=config.num_server_rounds,
        train_config=ConfigRecord({}),
        evaluate_config=ConfigRecord({}),
        evaluate_fn=recorder,
    )
    final = result.arrays if len(result.arrays) else initial
    meter.ledger.write_csv(folder.ledger_path)
    export_final(
        model,
        tokenizer,
        {key: array.numpy() for key, array in final.items()},
        folder,
        adapter_kind=config.adapter_kind,
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
