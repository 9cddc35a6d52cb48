"""The strategy as the round loop sees it:
``RoundDriver`` -> ``Metered`` -> ``Audited`` -> ``WireCodec`` -> ``PluginRelay`` -> strategy.

:func:`wrap_strategy` is the one place the chain is assembled (each wrapper also refuses any inner
type but its own, ``server.strategy_wrapper``). The order matters: the driver shifts round numbers
and sorts replies before anything inside sees them; the meter sits outside the relay, so plugin
reports and broadcasts are metered with the payload; the wire codec sits inside the meter (the
ledger counts the wire dtype's bytes) and inside the exactness audit (which so sees what the clients
received and sent, ``docs/precision.md §4-5``). :class:`StrategyChain` hands out every layer
by its type, so nothing reaches a member through another layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.tasks.base import Task
from server.epsilon_ledger import EpsilonLedger
from server.exactness_audit import Audited, ExactnessAudit
from server.metering import ByteLedger, Metered
from server.plugin_relay import PluginRelay
from server.rank_census import RankCensus
from server.round_driver import RoundDriver
from server.wire_codec import WireCodec
from strategies.protocol import CorollaStrategy


@dataclass(frozen=True)
class StrategyChain:
    """The layers; ``driver`` is what ``Strategy.start`` runs."""

    driver: RoundDriver
    meter: Metered
    audit: Audited
    codec: WireCodec
    relay: PluginRelay
    strategy: CorollaStrategy


def wrap_strategy(
    strategy: CorollaStrategy,
    *,
    task: Task,
    folder: Path,
    ledger: ByteLedger,
    round_offset: int,
    broadcast: dict[str, Any] | None,
    epsilon: EpsilonLedger | None = None,
    wire_dtype: str = "float32",
    audit: ExactnessAudit | None = None,
    census: RankCensus | None = None,
) -> StrategyChain:
    """Wrap ``strategy`` for a run: plugin relay (starting from ``broadcast``), wire codec
    (``wire_dtype``), exactness audit (``None``: off), byte meter (into ``ledger``), round driver
    (rounds shifted by ``round_offset``; resends through the strategy's ``resync``; books ε in
    ``epsilon`` for a DP run; asks new nodes their rank with ``census``)."""
    relay = PluginRelay(strategy, task, folder, broadcast=broadcast)
    codec = WireCodec(relay, wire_dtype=wire_dtype)
    audited = Audited(codec, audit)
    meter = Metered(audited, ledger)
    driver = RoundDriver(
        meter, offset=round_offset, epsilon=epsilon, dropped=lambda: strategy.last_dropped,
        # a registered strategy need not subclass CorollaStrategy (strategies.protocol); then nothing is resent
        resync=strategy.resync if isinstance(strategy, CorollaStrategy) else None, census=census,
    )
    return StrategyChain(driver=driver, meter=meter, audit=audited, codec=codec, relay=relay, strategy=strategy)
