"""The ``corolla`` command line.

Subcommands live in one table (``COMMANDS``) so that a test can check each is wired.

    corolla run        run a federated simulation through `flwr run` (Ray engine), checked
    corolla config     list every run-config key with its default and meaning, or validate overrides
    corolla strategies list the registered aggregation strategies
    corolla tasks      list the registered client tasks
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from strategies.contract import ConfigError, RunConfig


def _run(args: argparse.Namespace) -> int:
    from simulations.launch import find_app_dir, launch, resolve_config

    app_dir = find_app_dir(Path(args.app) if args.app else None)
    try:
        config, overrides = resolve_config(app_dir, args.run_config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    problem = _unknown_names(config)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    print(
        f"Corolla: {config.strategy.name} on {config.model.name} / {config.task.name}, "
        f"{args.clients} clients, {config.num_server_rounds} rounds -> {overrides['output-dir']}",
        flush=True,
    )
    result = launch(
        app_dir, overrides, num_supernodes=args.clients, cpus_per_client=args.cpus_per_client, connection=args.connection
    )
    if not result.ok:
        print(f"Corolla: run {result.run_id} did not complete: status {result.status}", file=sys.stderr)
        return 1
    print(f"Corolla: run {result.run_id} {result.status}")
    return 0


def _unknown_names(config: RunConfig) -> str:
    """Registered names are only known at run time: check them here, before Flower starts."""
    from client.tasks import task_names
    from strategies import strategy_names

    problems = []
    if config.strategy.name not in strategy_names():
        problems.append(f"`strategy.name` = {config.strategy.name!r} is not registered; choose one of {', '.join(strategy_names())}")
    if config.task.name not in task_names():
        problems.append(f"`task.name` = {config.task.name!r} is not registered; choose one of {', '.join(task_names())}")
    return "\n".join(problems)


def _config(args: argparse.Namespace) -> int:
    from simulations.launch import find_app_dir, resolve_config

    if args.run_config:
        try:
            config, _ = resolve_config(find_app_dir(Path(args.app) if args.app else None), args.run_config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        print("valid:", config.to_flat())
        return 0
    for key, value in RunConfig().to_flat().items():
        print(f"{key:26s} {value!r:14s} {_describe(key)}")
    return 0


def _describe(key: str) -> str:
    model = RunConfig
    field = None
    for part in key.split("."):
        field = model.model_fields[part.replace("-", "_")]
        if hasattr(field.default, "model_fields"):
            model = type(field.default)
    return (field.description or "") if field else ""


def _strategies(_: argparse.Namespace) -> int:
    from strategies import strategy_names

    print("\n".join(strategy_names()))
    return 0


def _tasks(_: argparse.Namespace) -> int:
    from client.tasks import task_names

    print("\n".join(task_names()))
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "run": (_run, "run a federated simulation (flwr run on Flower's Ray engine)"),
    "config": (_config, "list run-config keys, or validate --run-config overrides"),
    "strategies": (_strategies, "list aggregation strategies"),
    "tasks": (_tasks, "list client tasks"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="corolla", description="Federated fine-tuning of LLMs on Flower.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text)
        if name in ("run", "config"):
            cmd.add_argument("--app", help="the Flower app directory (default: this checkout)")
            cmd.add_argument(
                "--run-config", "-c", action="append", default=[],
                help="overrides, e.g. 'num-server-rounds=5 adapter.rank=16' (repeatable)",
            )
        if name == "run":
            cmd.add_argument("--clients", type=int, default=10, help="simulated SuperNodes (default 10)")
            cmd.add_argument("--cpus-per-client", type=int, default=1, help="CPUs per ClientApp (integer)")
            cmd.add_argument("--connection", help="a SuperLink connection from ~/.flwr/config.toml (deployment)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``corolla`` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "clients", 1) < 1:
        print("--clients must be >= 1", file=sys.stderr)
        return 2
    return COMMANDS[args.command][0](args)


if __name__ == "__main__":
    sys.exit(main())
