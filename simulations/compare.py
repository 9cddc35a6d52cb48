"""``corolla compare``: several strategies on the same task, model, data split and seed, then the report.

Each strategy is one real simulation through ``flwr run`` (``simulations.launch``), one after the
other, with identical overrides apart from ``strategy.name`` (and ``adapter.name = auto``, so each
gets the adapter it aggregates exactly). Run folders go to ``<out>/runs/<strategy>``; the report
(``simulations.report``) to ``<out>``. A live progress bar counts rounds over all strategies (one
plain line per round when the output is not a terminal).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from simulations.launch import find_app_dir, launch, resolve_config, toml_overrides
from simulations.report import load_run, markdown_table, write_report
from simulations.report.runs import headline

ROUND_LINE = re.compile(r"^\s*(\d+)/(\d+)\s+\d+\s+\d+\s")  # the ServerApp's per-round table line


class CompareError(RuntimeError):
    """A strategy's simulation did not complete (the message names it and its final status)."""


@dataclass(frozen=True)
class Comparison:
    """What ``corolla compare`` produced."""

    index: Path
    runs: list[Path]
    table: str
    wall_s: float


def compare(
    strategies: Sequence[str],
    overrides: Mapping[str, Any],
    *,
    out: Path,
    clients: int,
    app_dir: Path | None = None,
    target: float | None = None,
    env: Mapping[str, str] | None = None,
) -> Comparison:
    """Run every strategy with ``overrides`` and render the report into ``out``.

    Raises
    ------
    ConfigError
        If the overrides are invalid for any strategy (checked for all before anything runs).
    CompareError
        If a simulation did not complete; earlier runs and their folders are kept.
    """
    app = app_dir or find_app_dir()
    out = out.expanduser().resolve()
    plans = []
    for strategy in strategies:  # validate every cell first: a typo fails in seconds, not after a run
        values = {**overrides, "strategy.name": strategy, "output-dir": str(out / "runs"), "run-name": strategy}
        config, flat = resolve_config(app, [toml_overrides(values)])
        if (out / "runs" / strategy).exists():
            raise CompareError(f"{out / 'runs' / strategy} exists already; pass a new --out folder")
        plans.append((strategy, config.num_server_rounds, flat))
    started = time.perf_counter()
    folders = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        overall = progress.add_task("all strategies (rounds)", total=sum(rounds for _, rounds, _ in plans))
        for strategy, rounds, flat in plans:
            current = progress.add_task(f"{strategy:>6}", total=rounds)

            def on_line(line: str, current: TaskID = current, strategy: str = strategy) -> None:
                match = ROUND_LINE.match(line)
                if match and int(match.group(1)) > 0:
                    progress.advance(current)
                    progress.advance(overall)
                    if not progress.console.is_terminal:  # logs and pipes: one plain line per round
                        progress.console.print(f"{strategy}: round {match.group(1)}/{match.group(2)} done", highlight=False)

            result = launch(app, flat, num_supernodes=clients, env=env, echo=False, on_line=on_line)
            if not result.ok:
                raise CompareError(
                    f"strategy {strategy!r}: run {result.run_id} ended {result.status}; its output ends:\n"
                    + result.output[-2000:]
                )
            folders.append(out / "runs" / strategy)
    runs = [load_run(folder) for folder in folders]
    index = write_report(runs, out, target=target)
    rows, _ = headline(runs, target)
    return Comparison(index, folders, markdown_table(rows, runs[0].main_metric), time.perf_counter() - started)
