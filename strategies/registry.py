"""Named registry of server strategies (``strategy.name`` in the run config)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from flwr.serverapp.strategy import Strategy

S = TypeVar("S", bound=type[Strategy])

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator registering a :class:`flwr.serverapp.strategy.Strategy` under ``name``.

    Names are lowercase kebab-case (``"fedit"``, ``"fedex-lora"``).

    Raises
    ------
    ValueError
        If the name is malformed or already registered.
    TypeError
        If the decorated object is not a Strategy subclass.
    """
    if not _NAME.match(name):
        raise ValueError(f"strategy name {name!r} must be lowercase kebab-case, e.g. 'fedex-lora'")

    def decorator(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"@register_strategy({name!r}) needs a Strategy subclass, got {cls!r}")
        if name in _REGISTRY:
            other = _REGISTRY[name]
            raise ValueError(
                f"strategy name {name!r} is already registered to "
                f"{other.__module__}.{other.__qualname__}; pick another name for "
                f"{cls.__module__}.{cls.__qualname__}"
            )
        _REGISTRY[name] = cls
        return cls

    return decorator


def strategy_names() -> list[str]:
    """Registered strategy names, sorted."""
    return sorted(_REGISTRY)


def strategy_class(name: str) -> type[Strategy]:
    """Return the class registered under ``name``.

    Raises
    ------
    ValueError
        For an unknown name, listing the registered ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(repr(n) for n in strategy_names()) or "(none)"
        raise ValueError(
            f"unknown strategy {name!r} in `strategy.name`; registered strategies: {known}. "
            f"Set `strategy.name` to one of them."
        ) from None


def build_strategy(name: str, **params: Any) -> Strategy:
    """Instantiate the strategy registered under ``name`` with keyword ``params``.

    Raises
    ------
    ValueError
        For an unknown name (see :func:`strategy_class`).
    TypeError
        If ``params`` do not fit the strategy's constructor; the message names the strategy.
    """
    cls = strategy_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise TypeError(f"cannot build strategy {name!r} ({cls.__qualname__}): {exc}") from exc
