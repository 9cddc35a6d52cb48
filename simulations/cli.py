"""The ``corolla`` command line.

Subcommands live in one table (``COMMANDS``) so that a test can check each is wired.

    corolla run        run a federated simulation through `flwr run` (Ray engine), checked
    corolla config     list every run-config key with its default and meaning, or validate overrides
    corolla strategies table of the registered aggregation strategies
    corolla tasks      table of the registered client tasks
    corolla adapters   table of the registered adapter kinds
    corolla comm       analytic communication per round and per run of each strategy, for a real model
    corolla compare    several strategies on one set-up, then the communication-vs-accuracy report
    corolla report     re-render that report from existing run folders

The run config is the one the ServerApp validates: the core keys plus every section the task
plugins and strategies register when imported (:func:`load_extensions`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from contract import ConfigError, RunConfig


def load_extensions() -> None:
    """Import what registers config sections, tasks and strategies, as the ServerApp does."""
    import client.tasks  # noqa: F401  (the task plugins and their sections)
    import strategies  # noqa: F401  (the strategies and their sections)
    from contract.extensions import load_installed_extensions

    load_installed_extensions()  # other packages' extensions (docs/extending.md §1)


def _run(args: argparse.Namespace) -> int:
    from simulations.launch import find_app_dir, launch, resolve_config

    load_extensions()
    app_dir = find_app_dir(Path(args.app) if args.app else None)
    try:
        config, overrides = resolve_config(app_dir, args.run_config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    problem = _unknown_names(config, local=args.connection is None)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    print(
        f"Corolla: {config.strategy.name} on {config.model.name} / {config.task.name}, "
        f"{args.clients} clients, {config.num_server_rounds} rounds -> {overrides['output-dir']}",
        flush=True,
    )
    if args.ray_address is not None:
        from simulations.ray_cluster import RayAddressError, check_ray_address

        if args.connection is not None:
            print("--ray-address joins a Ray cluster for a simulation; --connection names a deployment: pass one", file=sys.stderr)
            return 2
        try:
            check_ray_address(args.ray_address)  # before anything starts
        except RayAddressError as exc:
            print(exc, file=sys.stderr)
            return 2
    problem = _resource_problem(config, args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from simulations.flower_env import ForeignSuperLink

    try:
        result = launch(
            app_dir, overrides, num_supernodes=args.clients, cpus_per_client=args.cpus_per_client,
            gpus_per_client=args.gpus_per_client, connection=args.connection, ray_address=args.ray_address,
        )
    except ForeignSuperLink as exc:
        print(f"Corolla: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        print(f"Corolla: run {result.run_id} did not complete: status {result.status}", file=sys.stderr)
        return 1
    print(f"Corolla: run {result.run_id} {result.status}")
    return 0


def _resource_problem(config: RunConfig, args: argparse.Namespace) -> str:
    """Why the local machine cannot run these clients' devices (empty: it can; ``docs/precision.md §6``).

    Checked only for a local simulation (a deployment's or a Ray cluster's nodes have their own GPUs)."""
    if args.gpus_per_client < 0 or args.gpus_per_client > 64:
        return f"--gpus-per-client must be between 0 and 64 (a fraction packs clients on a GPU), got {args.gpus_per_client}"
    if args.connection is not None or args.ray_address is not None:
        return ""
    wants_cuda = config.model.device.startswith("cuda")
    if not (wants_cuda or args.gpus_per_client or config.model.quantization != "none"):
        return ""
    from adapters.precision import DeviceUnavailable, quantization_problem, resolve_device

    try:
        device = resolve_device(config.model.device if config.model.device != "auto" or not args.gpus_per_client else "cuda")
    except DeviceUnavailable as exc:
        return f"{exc} (--gpus-per-client {args.gpus_per_client:g})" if args.gpus_per_client else str(exc)
    if wants_cuda and not args.gpus_per_client:
        return (f"`model.device` = {config.model.device!r}, but --gpus-per-client is 0: Ray hides the GPUs from "
                "ClientApps that reserve none; pass e.g. --gpus-per-client 0.25 (four clients per GPU)")
    return quantization_problem(config.model.quantization, device) or ""


def _unknown_names(config: RunConfig, *, local: bool = True) -> str:
    """Registered names are only known at run time: check them here, before Flower starts.

    ``local``: the ServerApp runs on this machine (a simulation, ``corolla config``), so a
    ``model.name`` written as a path must be a model folder here.
    """
    from adapters.models import model_name_problem
    from client.tasks import task_names
    from server.adapter_setup import adapter_kind_problems

    problems = adapter_kind_problems(config)  # a registered strategy, and a registered adapter kind it takes
    if config.task.name not in task_names():
        problems.append(f"`task.name` = {config.task.name!r} is not registered; choose one of {', '.join(task_names())}")
    model_problem = model_name_problem(config.model.name, local=local)
    if model_problem:
        problems.append(model_problem)
    if not problems and config.privacy.enabled:  # a combination DP cannot describe (docs/privacy.md §8)
        from client.tasks import get_task_class
        from server.adapter_setup import resolve_run_adapter_kind
        from server.privacy_statement import not_covered

        try:
            not_covered(config, resolve_run_adapter_kind(config), get_task_class(config.task.name))
        except ConfigError as exc:
            problems.append(str(exc))
    return "\n".join(problems)


def _config(args: argparse.Namespace) -> int:
    from contract.config import default_run_config, describe_key
    from simulations.launch import find_app_dir, resolve_config

    load_extensions()
    if args.run_config:
        try:
            config, _ = resolve_config(find_app_dir(Path(args.app) if args.app else None), args.run_config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        problem = _unknown_names(config)
        if problem:
            print(problem, file=sys.stderr)
            return 2
        print("valid:", config.to_flat())
        return 0
    for key, value in default_run_config().to_flat().items():
        print(f"{key:26s} {value!r:14s} {describe_key(key)}")
    return 0


def _listing(command: str) -> int:
    """Print the table of one registry (``corolla strategies`` / ``tasks`` / ``adapters``)."""
    from simulations import listings

    build = {"strategies": listings.strategies_listing, "tasks": listings.tasks_listing,
             "adapters": listings.adapters_listing}[command]
    try:
        listing = build()
    except ImportError as exc:  # a registry this checkout lacks, or a plugin that fails to import
        print(f"corolla {command}: cannot read the registrations ({exc})", file=sys.stderr)
        return 1
    listings.render(listing)
    return 0


def _ranks(value: str) -> tuple[int, ...]:
    """``--ranks`` as ``adapter.ranks`` parses it (a bad entry: the CommError names it)."""
    from contract.ranks import parse_ranks
    from simulations.comm import CommError

    try:
        return parse_ranks(value)
    except ValueError as exc:
        raise CommError(str(exc).replace("`adapter.ranks`", "--ranks")) from exc


def _comm(args: argparse.Namespace) -> int:
    from simulations.comm import CommError, report, secagg_section

    try:
        text, payload = report(
            args.model, rank=args.rank, clients=args.clients, rounds=args.rounds, fedsb_rank=args.fedsb_rank,
            strategies=_names(args.strategies), targets=_names(args.targets),
            bytes_per_param=args.bytes_per_param, ffa_a_by_seed=not args.ffa_a_once,
            secagg=secagg_section(args.secagg_bits, args.secagg_max_weight),
            ranks=_ranks(args.ranks),
        )
    except CommError as exc:
        print(f"corolla comm: {exc}", file=sys.stderr)
        return 2
    print(text)
    if args.json:
        import json

        try:
            Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        except OSError as exc:
            print(f"corolla comm: --json {args.json!r}: cannot write ({exc}); pass a writable path", file=sys.stderr)
            return 2
    return 0


def _compare(args: argparse.Namespace) -> int:
    from flwr.common.config import parse_config_args

    from simulations.compare import CompareError, compare
    from strategies import registered_strategies, strategy_names

    load_extensions()
    # the FedIT baseline first: every ratio in the report is against it
    strategies = _names(args.strategies) if args.strategies else sorted(strategy_names(), key=lambda n: (n != "fedit", n))
    if args.ranks and not args.strategies:  # mixed ranks: only the strategies that take them (docs/algorithms.md §18)
        mixed = {info.name for info in registered_strategies() if info.mixed_ranks}
        strategies = [s for s in strategies if s in mixed]
    unknown = [s for s in strategies if s not in strategy_names()]
    if unknown:
        print(f"--strategies: {', '.join(unknown)} not registered; choose from {', '.join(strategy_names())}", file=sys.stderr)
        return 2
    overrides = parse_config_args(args.run_config) if args.run_config else {}
    shortcuts = {"model.name": args.model, "task.name": args.task, "num-server-rounds": args.rounds, "adapter.rank": args.rank,
                 "adapter.ranks": args.ranks}
    overrides.update({key: value for key, value in shortcuts.items() if value is not None})
    overrides["adapter.name"] = "auto"  # each strategy gets the adapter it aggregates exactly
    if args.dp is not None:
        overrides.update({"privacy.enabled": True, "privacy.target-epsilon": args.dp, "privacy.noise-multiplier": 0.0})
    out = Path(args.out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        result = compare(strategies, overrides, out=out, clients=args.clients,
                         app_dir=Path(args.app) if args.app else None, target=args.target)
    except (ConfigError, CompareError) as exc:
        print(f"corolla compare: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    print(result.table)
    print(f"Corolla: {len(strategies)} strategies in {result.wall_s / 60:.1f} min; report: {result.index}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from simulations.report import RunFolderError, load_run, write_report

    if not args.runs:
        print("corolla report: name at least one run folder, e.g. corolla report runs/compare-*/runs/*", file=sys.stderr)
        return 2
    try:
        runs = [load_run(Path(folder)) for folder in args.runs]
    except RunFolderError as exc:
        print(f"corolla report: {exc}", file=sys.stderr)
        return 2
    index = write_report(runs, Path(args.out), target=args.target)
    print(f"Corolla: report of {len(runs)} runs: {index}")
    return 0


def _names(value: str) -> list[str]:
    return [v for v in value.replace(" ", ",").split(",") if v]


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "run": (_run, "run a federated simulation (flwr run on Flower's Ray engine)"),
    "config": (_config, "list run-config keys, or validate --run-config overrides"),
    "strategies": (lambda _: _listing("strategies"), "table of the aggregation strategies (exact or not, adapter kinds, keys)"),
    "tasks": (lambda _: _listing("tasks"), "table of the client tasks (model kind, main metric, keys)"),
    "adapters": (lambda _: _listing("adapters"), "table of the adapter kinds (what trains, what is frozen, which strategies)"),
    "comm": (_comm, "analytic communication per round and per run of each strategy, for a real model"),
    "compare": (_compare, "run several strategies on the same set-up and write the communication-vs-accuracy report"),
    "report": (_report, "re-render the report from existing run folders (no training)"),
}

COMM_EPILOG = """\
upload / download are what ONE client sends / receives in ONE round; download/client is the x-axis of the
Fed-SB paper's communication figure (FLoRA and FedEx-LoRA receive all K clients' factors, K*r*sum(m+n);
FedEx's residual is capped at the dense m*n per module, so at large K it drops below FLoRA).
one-time/client: Fed-SB's frozen B and A (and FFA's A with --ffa-a-once), downloaded once per run.
round total = K x (upload + download); run total = rounds x round total + K x one-time.
E.g. corolla comm --model gemma-2-9b --rank 32 --clients 25 reproduces the paper's 2,700.9M vs 11.76M (230x).
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="corolla", description="Federated fine-tuning of LLMs on Flower.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text)
        if name in ("run", "config", "compare"):
            cmd.add_argument("--app", help="the Flower app directory (default: this checkout)")
            cmd.add_argument(
                "--run-config", "-c", action="append", default=[],
                help="overrides, e.g. 'num-server-rounds=5 adapter.rank=16' (repeatable)",
            )
        if name == "comm":
            _comm_arguments(cmd)
        if name == "compare":
            _compare_arguments(cmd)
        if name == "report":
            cmd.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run folders written by corolla run / compare")
            cmd.add_argument("--out", default="runs/report", help="report folder (default runs/report)")
            cmd.add_argument("--target", type=float, help="metric target for 'bytes to target' (default: 95%% of the best)")
        if name == "run":
            cmd.add_argument("--clients", type=int, default=10, help="simulated SuperNodes (default 10)")
            cmd.add_argument("--cpus-per-client", type=int, default=1, help="CPUs per ClientApp (integer)")
            cmd.add_argument(
                "--gpus-per-client", type=float, default=0.0,
                help="GPUs per ClientApp, Flower's client-resources-num-gpus (0.25 packs four clients on a GPU; default 0)",
            )
            cmd.add_argument("--connection", help="a SuperLink connection from ~/.flwr/config.toml (deployment)")
            cmd.add_argument(
                "--ray-address", metavar="HOST:PORT",
                help="run the simulation on this existing Ray cluster (its head's address) instead of a local Ray",
            )
    return parser


def _compare_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--strategies", help="comma-separated (default: every registered strategy)")
    cmd.add_argument("--model", help="model.name for every run (default: the config's)")
    cmd.add_argument("--task", help="task.name for every run")
    cmd.add_argument("--rounds", type=int, help="num-server-rounds for every run")
    cmd.add_argument("--rank", type=int, help="adapter.rank for every run")
    cmd.add_argument("--ranks", help="adapter.ranks for every run, e.g. 4,8,16,32 (default: only the strategies "
                     "that take mixed ranks run; the report adds bytes per rank class)")
    cmd.add_argument("--dp", type=float, metavar="EPSILON", help="DP-SGD on, calibrated to this ε per client")
    cmd.add_argument("--clients", type=int, default=10, help="simulated SuperNodes (default 10)")
    cmd.add_argument("--target", type=float, help="metric target for 'bytes to target' (default: 95%% of the best)")
    cmd.add_argument("--out", help="report folder (default runs/compare-<time>)")


def _comm_arguments(cmd: argparse.ArgumentParser) -> None:
    from simulations.comm import ALL_7

    cmd.formatter_class = argparse.RawDescriptionHelpFormatter
    cmd.epilog = COMM_EPILOG
    cmd.add_argument(
        "--model", help="a preset (llama-3.2-1b, llama-3.2-3b, mistral-7b-v0.1, gemma-2-9b; any case) "
        "or a local config.json, or the folder holding one; built on the meta device, never downloaded",
    )
    cmd.add_argument("--rank", type=int, default=32, help="LoRA rank r of every strategy but fedsb (default 32)")
    cmd.add_argument("--clients", type=int, default=25, help="clients K aggregated per round (default 25)")
    cmd.add_argument("--rounds", type=int, default=1, help="federated rounds in the run (default 1)")
    cmd.add_argument("--fedsb-rank", type=int, default=200, help="Fed-SB's rank (default 200, the paper's)")
    cmd.add_argument(
        "--ranks", default="", help="per-client ranks round-robin over the clients, e.g. 4,8,16,32: one row per "
        "strategy that takes mixed ranks and rank class (adapter.ranks; docs/algorithms.md §18)",
    )
    cmd.add_argument(
        "--strategies", default="fedit,ffa,fedex,flora,fedsb",
        help="comma-separated, of full, fedit, ffa, flora, fedex, fedsb (default all but full)",
    )
    cmd.add_argument("--targets", default=",".join(ALL_7), help="comma-separated module names (default all 7)")
    cmd.add_argument("--bytes-per-param", type=int, default=4, help="4 for float32 (default), 2 for bf16")
    cmd.add_argument("--ffa-a-once", action="store_true", help="charge FFA's A as a one-time download")
    cmd.add_argument("--secagg-bits", type=int, default=22, help="SecAgg's secagg.quantization-bits (default 22)")
    cmd.add_argument("--secagg-max-weight", type=int, default=10000, help="SecAgg's secagg.max-weight (default 10000)")
    cmd.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``corolla`` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "clients", 1) < 1:
        print("--clients must be >= 1", file=sys.stderr)
        return 2
    return COMMANDS[args.command][0](args)


if __name__ == "__main__":
    sys.exit(main())
