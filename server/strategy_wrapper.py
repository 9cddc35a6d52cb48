"""The base of the server's strategy wrappers: a Flower strategy that holds exactly one inner object.

A wrapper delegates the five members Flower's ``Strategy.start`` calls (``configure_train``,
``aggregate_train``, ``configure_evaluate``, ``aggregate_evaluate``, ``summary``) and nothing else:
what a caller needs of an inner layer it reaches through that layer's own typed attribute. Each
wrapper declares the one type it may wrap (``wraps``) and refuses any other, so the order
``RoundDriver`` -> ``Metered`` -> ``Audited`` -> ``WireCodec`` -> ``PluginRelay`` -> strategy holds by construction
(``server.strategy_chain.wrap_strategy`` assembles it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Generic, TypeVar

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

InnerT = TypeVar("InnerT", bound=Strategy)


class StrategyWrapper(Strategy, Generic[InnerT]):
    """Delegate Flower's five strategy members to ``inner``, an instance of ``wraps``."""

    wraps: ClassVar[type[Strategy]]

    def __init__(self, inner: InnerT) -> None:
        if not isinstance(inner, self.wraps):
            raise TypeError(
                f"{type(self).__name__} wraps a {self.wraps.__name__}, got {type(inner).__name__}; the order is "
                "RoundDriver -> Metered -> Audited -> WireCodec -> PluginRelay -> strategy (server.strategy_chain.wrap_strategy builds it)"
            )
        self.inner: InnerT = inner

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Delegate."""
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Delegate."""
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Delegate."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Delegate."""
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        """Delegate."""
        self.inner.summary()
