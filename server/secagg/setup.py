"""Turning SecAgg on for a run: refuse what it cannot protect, wrap the strategy, summarise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from contract import NUM_EXAMPLES, PARTITION_ID, RunConfig
from contract.secagg import MASKED_METRICS, PUBLIC_METRICS, SecAggConfig
from server.epsilon_ledger import EpsilonLedger
from server.metering import ByteLedger
from server.secagg.driver import SecAggDriver
from server.secagg.strategy import ROUND_DROPPED, SecAggStrategy
from strategies.protocol import CorollaStrategy
from strategies.registry import registered_strategies, strategy_info

if TYPE_CHECKING:
    from client.tasks.base import Task


def check_secagg(config: RunConfig, task: Task) -> None:
    """Refuse ``secagg.enabled`` where the server would need individual client data.

    Raises
    ------
    ValueError
        For a strategy that is not linear (FedEx-LoRA, FLoRA: they need each client's own
        factors), or a task whose plugin reports are per-client data; the message names the fix.
    """
    if not config.section(SecAggConfig).enabled:
        return
    name = config.strategy.name
    if not strategy_info(name).linear:
        linear = ", ".join(f"`{i.name}`" for i in registered_strategies() if i.linear)
        raise ValueError(
            f"`secagg.enabled = true` with `strategy.name = {name}`: its aggregate is not a weighted sum of what "
            f"clients send (it needs each client's own update, which secure aggregation hides). Use a linear "
            f"strategy ({linear}) or set `secagg.enabled = false`."
        )
    for hook in ("client_report", "merge_reports"):
        if task.implements(hook):
            raise ValueError(
                f"`secagg.enabled = true` with `task.name = {config.task.name}`: the task's plugin reports "
                f"(`{hook}`) are per-client data that secure aggregation cannot sum. Set `secagg.enabled = false`."
            )


def secure_strategy(
    strategy: CorollaStrategy, config: RunConfig, *, task: Task, ledger: ByteLedger, epsilon: EpsilonLedger | None = None
) -> CorollaStrategy:
    """``strategy`` itself, or (``secagg.enabled``) wrapped so it aggregates only SecAgg+ sums (and books
    ε in a DP run's ``epsilon`` ledger)."""
    check_secagg(config, task)
    section = config.section(SecAggConfig)
    if not section.enabled:
        return strategy
    driver = SecAggDriver(section, ledger, weighted=config.strategy.weighted, timeout=config.round_timeout or 3600.0)
    return SecAggStrategy(strategy, driver, epsilon=epsilon)


def secagg_summary(config: RunConfig, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``secagg`` block of ``summary.json`` (empty when SecAgg is off): its parameters, the
    per-entry error bound of the aggregate, what was masked, sent in plaintext or not sent, and how
    many rounds could not be decoded."""
    section = config.section(SecAggConfig)
    if not section.enabled:
        return {}
    return {
        "secagg": {
            **section.model_dump(by_alias=True, exclude={"enabled"}),
            "mean_error_bound": 2 * section.clip_range / (2**section.quantization_bits - 1),
            "masked": ["update (payload - global)", NUM_EXAMPLES, *MASKED_METRICS],
            "plaintext": list(PUBLIC_METRICS),
            "not_sent": [PARTITION_ID, "plugin reports"],
            "rounds_dropped": sum(int(row.get(ROUND_DROPPED, 0)) for row in rows),
        }
    }
