"""What the ServerApp needs from every strategy: :class:`CorollaStrategy`.

A Corolla strategy is a Flower :class:`~flwr.serverapp.strategy.Strategy` (it configures and
aggregates train and evaluate rounds) that also

- says which replies it dropped in the latest round and why (:attr:`~CorollaStrategy.last_dropped`,
  :attr:`~CorollaStrategy.last_dropped_evaluate`), so metering and task plugins never re-judge a
  reply the strategy already judged;
- exports and restores the state a resumed run needs beyond the global arrays
  (:meth:`~CorollaStrategy.export_state`, :meth:`~CorollaStrategy.restore_state`; the checkpoint
  stores arrays with safetensors and the metadata as JSON, never pickle);
- optionally, if it changes the frozen base weights (FedEx-LoRA, FLoRA), returns the cumulative
  base delta every node now holds (:meth:`~CorollaStrategy.base_deltas`; default ``None``: the base
  is the pretrained one);
- optionally, if it gives nodes state they keep across rounds (frozen factors, a base version),
  rebuilds a message for a node that lost it (:meth:`~CorollaStrategy.resync`; default ``None``).

:func:`protocol_problems` checks a class against this list; ``@register_strategy`` calls it at
import and refuses a class that lacks a required member, naming it.
"""

from __future__ import annotations

import inspect
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from flwr.app import Message
from flwr.serverapp.strategy import Strategy


class DroppedReply(NamedTuple):
    """One reply a strategy refused: the sending node, the reason (logged) and the short name of the
    rule it broke (``summary.json`` counts dropped replies by it; ``docs/trust.md §3``)."""

    node_id: int
    reason: str
    code: str = "malformed"


class StrategyState(NamedTuple):
    """What a resumed run needs beyond the global arrays.

    ``arrays``: named numpy arrays (stored with safetensors); ``meta``: JSON-able plain data.
    """

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


class CorollaStrategy(Strategy):
    """A Flower strategy with the members the Corolla ServerApp calls (see the module doc).

    Required, besides Flower's ``configure_train``, ``aggregate_train``, ``configure_evaluate``,
    ``aggregate_evaluate`` and ``summary``: :attr:`last_dropped`, :attr:`last_dropped_evaluate`,
    :meth:`export_state` and :meth:`restore_state`. Optional with a default: :meth:`base_deltas`.
    :class:`~strategies.fedit.FedIT` implements all of them; most strategies subclass it.
    """

    @property
    @abstractmethod
    def last_dropped(self) -> Sequence[DroppedReply]:
        """Train replies dropped in the latest ``aggregate_train``, in reply order."""

    @property
    @abstractmethod
    def last_dropped_evaluate(self) -> Sequence[DroppedReply]:
        """Evaluate replies dropped in the latest ``aggregate_evaluate``, in reply order."""

    @abstractmethod
    def export_state(self) -> StrategyState:
        """The strategy's state after the latest round, for the checkpoint."""

    @abstractmethod
    def restore_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Inverse of :meth:`export_state`, called once before a resumed run's first round."""

    def base_deltas(self) -> dict[str, np.ndarray] | None:
        """The cumulative delta ``D: (m, n)`` per module that every node's frozen base now holds.

        ``None`` (the default) for strategies that never change the base; an empty dict before a
        base-changing strategy's first fold.
        """
        return None

    def resync(self, message: Message) -> Message | None:
        """``message``, as sent this round, rebuilt for a node that replied ``NODE_STATE_MISSING``.

        The node holds none of the state this strategy gave it in earlier rounds (a restarted
        SuperNode: ``docs/privacy.md §11``); the returned message carries all of it, and the strategy
        from now on treats the node as holding only what this message gives it. The round driver
        resends it in the same round. ``None`` (the default): nothing to resend.
        """
        return None


REQUIRED_MEMBERS: tuple[str, ...] = (
    "configure_train",
    "aggregate_train",
    "configure_evaluate",
    "aggregate_evaluate",
    "summary",
    "last_dropped",
    "last_dropped_evaluate",
    "export_state",
    "restore_state",
)
"""Members every registered strategy must define (not abstract)."""

OPTIONAL_MEMBERS: tuple[str, ...] = ("base_deltas",)
"""Members with a default in :class:`CorollaStrategy`; a strategy that does not inherit it must
still define them."""


def protocol_problems(cls: object) -> list[str]:
    """What keeps ``cls`` from being a Corolla strategy, one line each (empty: nothing).

    A member counts as present when the class (or a base) defines it and it is not abstract;
    instance attributes set in ``__init__`` do not count, since the check runs at import without
    building the strategy (declare ``last_dropped`` as a property, as :class:`CorollaStrategy` does).
    """
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        return [f"{cls!r} is not a flwr.serverapp.strategy.Strategy subclass"]
    problems = []
    members = REQUIRED_MEMBERS if issubclass(cls, CorollaStrategy) else REQUIRED_MEMBERS + OPTIONAL_MEMBERS
    for name in members:
        member = inspect.getattr_static(cls, name, None)
        if member is None:
            problems.append(f"missing `{name}`")
        elif getattr(member, "__isabstractmethod__", False):
            problems.append(f"`{name}` is abstract (not implemented)")
        elif not (callable(member) or isinstance(member, property | staticmethod | classmethod)):
            problems.append(f"`{name}` must be a method or a property, got {type(member).__name__}")
    return problems
