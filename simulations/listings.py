"""What ``corolla strategies``, ``corolla tasks`` and ``corolla adapters`` print: one table per
registry, built only from what each extension declared when it registered.

A :class:`Listing` is plain data (tests read its rows); :func:`render` prints it with rich.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from contract.config import Section, registered_sections

NONE = "-"


@dataclass(frozen=True)
class Listing:
    """A table: its title, column headers and rows of text cells."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def row(self, name: str) -> dict[str, str]:
        """The row whose first cell is ``name``, keyed by column header."""
        for row in self.rows:
            if row[0] == name:
                return dict(zip(self.columns, row, strict=True))
        raise KeyError(f"{self.title}: no row {name!r}; rows: {', '.join(r[0] for r in self.rows)}")


def strategies_listing() -> Listing:
    """Every registered strategy: what it does, whether it is exact, its adapter kinds, its keys."""
    from strategies.registry import registered_strategies

    rows = tuple(
        (info.name, _plain(info.summary), "yes" if info.exact else "no", ", ".join(info.adapter_kinds),
         f"{info.learning_rate:g}", _section_keys(info.section))
        for info in registered_strategies()
    )
    columns = ("strategy", "description", "exact", "adapter kinds (auto: first)", "train.lr auto", "config section")
    return Listing("Aggregation strategies (strategy.name)", columns, rows)


def tasks_listing() -> Listing:
    """Every registered client task: what it does, its model head, its main metric, its keys."""
    from client.tasks.registry import registered_tasks

    rows = tuple(
        (info.name, _plain(info.summary), info.model_kind, info.main_metric, f"{info.section}.*" if info.section else NONE)
        for info in registered_tasks()
    )
    return Listing("Client tasks (task.name)", ("task", "description", "model kind", "main metric", "config section"), rows)


def adapters_listing() -> Listing:
    """Every registered adapter kind: what it is, what trains and what is frozen, which strategies take it."""
    from adapters.kind_registry import registered_kinds, resolve_adapter_kind
    from strategies.registry import registered_strategies

    strategies = registered_strategies()

    def takes(kinds: tuple[str, ...], kind: str) -> bool:  # a declared kind, or one of the same layout form
        try:
            resolve_adapter_kind(kind, kinds)
        except ValueError:
            return False
        return True

    def takers(kind: str) -> str:
        names = [f"{s.name} (auto)" if s.adapter_kinds[0] == kind else s.name for s in strategies if takes(s.adapter_kinds, kind)]
        return ", ".join(names) or NONE

    rows = tuple(
        (kind.name, _plain(kind.summary), kind.paper, kind.trains, ", ".join(kind.frozen_layers) or NONE, takers(kind.name))
        for kind in registered_kinds()
    )
    columns = ("adapter kind", "description", "paper", "trains", "frozen (sent once)", "strategies")
    return Listing("Adapter kinds (adapter.name)", columns, rows)


def render(listing: Listing) -> None:
    """Print ``listing`` as a rich table on stdout (full width when stdout is not a terminal)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=listing.title, title_justify="left", header_style="bold")
    for index, column in enumerate(listing.columns):
        table.add_column(column, no_wrap=index == 0, overflow="fold")
    for row in listing.rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: a `[` in a summary is not rich markup
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 240).print(table)


def _section_keys(model: type[Section] | None) -> str:
    if model is None:
        return NONE
    name = next((info.name for info in registered_sections() if info.model is model), None)
    return f"{name}.*" if name else f"{model.__qualname__} (not registered)"


def _plain(text: str) -> str:
    return text.replace("``", "`")
