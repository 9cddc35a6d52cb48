"""Named registry of server strategies (``strategy.name`` in the run config).

A strategy module registers its class with everything the platform needs from it::

    @register_strategy(StrategyInfo(
        name="median", summary="coordinate-wise median of the payload", exact=False,
        adapter_kinds=("lora",), comm=factor_average_comm,
    ))
    class Median(FedIT): ...

``register_strategy`` checks the class against :class:`~strategies.protocol.CorollaStrategy` and
refuses it, naming what is missing; it registers the strategy's config section, if any, with
:func:`contract.config.register_section`. ``corolla strategies`` prints
:func:`registered_strategies`; the ServerApp builds with :func:`build_strategy` and validates the
run config with :func:`check_strategy_config`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from contract.config import DEFAULT_LEARNING_RATE, ConfigError, RunConfig, Section, register_section
from contract.reply_schema import MetricSpec

from .comm_cost import CommFormula
from .protocol import CorollaStrategy, protocol_problems

S = TypeVar("S", bound=type)

AUTO = "auto"  # `adapter.name = auto`: the strategy's first adapter kind
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class StrategyInfo:
    """What a strategy declares about itself when it registers.

    Attributes
    ----------
    name : str
        ``strategy.name``, lowercase kebab-case (``"fedex"``).
    summary : str
        One line for ``corolla strategies``.
    exact : bool
        Whether the global model equals the mean of the clients' models after every round.
    adapter_kinds : tuple[str, ...]
        The adapter kinds (``adapter.name``) it can aggregate; the first is what ``auto`` picks.
    comm : CommFormula
        Parameters one client uploads and downloads per round and once per run
        (:mod:`strategies.comm_cost`; ``corolla comm`` tabulates it).
    section : type[Section] | None (default: None)
        The strategy's own config keys, registered as the section ``<name>.*``; the strategy's
        constructor then receives the parsed values as ``section=`` (see :func:`build_strategy`).
    docs : str (default: "")
        Where the algorithm is explained (a ``docs/`` page and section, or a paper).
    linear : bool (default: False)
        Whether the new global arrays are a weighted sum of what the clients send (plus what the
        server already holds), so secure aggregation can hand the strategy only the sum
        (``secagg.enabled``; ``server.secagg``). False for strategies that need each client's own
        factors (FedEx-LoRA's residual, FLoRA's stacking).
    mixed_ranks : bool (default: False)
        Whether clients may train different ranks (``adapter.ranks``; ``docs/algorithms.md §18``). The
        strategy's constructor then receives ``client_ranks=`` (:class:`~strategies.client_ranks.ClientRanks`).
    fixed_rank_reason : str (default: "")
        Why the strategy needs one rank for all, said when ``adapter.ranks`` mixes ranks (e.g. Fed-SB's
        R is r×r).
    reply_metrics : tuple[MetricSpec, ...] (default: ())
        Metrics this strategy makes clients send beyond the core ones (``contract.reply_schema``);
        the server drops a reply carrying an undeclared metric (``docs/trust.md §1``).
    config_problems : Callable[[RunConfig], list[str]] | None (default: None)
        The strategy's own checks of a run config that names it (combinations its section cannot see
        alone, e.g. a key that needs ``privacy.enabled = false``), one line per problem.
    learning_rate : float (default: ``contract.config.DEFAULT_LEARNING_RATE``, 0.02)
        The local AdamW rate ``train.lr = "auto"`` means under this strategy (the server sends the
        resolved rate in every train message, ``contract.LEARNING_RATE``); cite the evidence in ``docs``.
    rank_census : Callable[[RunConfig], bool] | None (default: None)
        Whether a run needs the per-node rank census even with one rank for all (``adapter.ranks`` empty):
        its nodes' ranks may come to differ (HetLoRA's self-pruning). The constructor then receives
        ``client_ranks=`` as with ``mixed_ranks``.
    """

    name: str
    summary: str
    exact: bool
    adapter_kinds: tuple[str, ...]
    comm: CommFormula
    section: type[Section] | None = None
    docs: str = ""
    linear: bool = False
    mixed_ranks: bool = False
    fixed_rank_reason: str = ""
    reply_metrics: tuple[MetricSpec, ...] = ()
    config_problems: Callable[[RunConfig], list[str]] | None = None
    rank_census: Callable[[RunConfig], bool] | None = None
    learning_rate: float = DEFAULT_LEARNING_RATE

    def __post_init__(self) -> None:
        """Reject declarations the platform cannot use, naming the field and the fix."""
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"StrategyInfo.name {self.name!r} must be lowercase kebab-case, e.g. 'fedex-lora'")
        where = f"StrategyInfo({self.name!r})"
        if not isinstance(self.summary, str) or not self.summary.strip() or "\n" in self.summary:
            raise ValueError(f"{where}.summary must be one non-empty line, got {self.summary!r}")
        if not isinstance(self.exact, bool):
            raise TypeError(f"{where}.exact must be a bool, got {self.exact!r}")
        kinds = self.adapter_kinds
        if not isinstance(kinds, tuple) or not kinds or not all(isinstance(k, str) and _NAME.match(k) for k in kinds):
            raise ValueError(f"{where}.adapter_kinds must be a non-empty tuple of kebab-case kind names, got {kinds!r}")
        if AUTO in kinds or len(set(kinds)) != len(kinds):
            raise ValueError(f"{where}.adapter_kinds must list distinct real kinds (not {AUTO!r}), got {kinds!r}")
        if not callable(self.comm):
            raise TypeError(f"{where}.comm must be a communication formula (inputs, **options) -> CommCost")
        if not isinstance(self.linear, bool):
            raise TypeError(f"{where}.linear must be a bool, got {self.linear!r}")
        if not isinstance(self.reply_metrics, tuple) or not all(isinstance(m, MetricSpec) for m in self.reply_metrics):
            raise TypeError(f"{where}.reply_metrics must be a tuple of contract.reply_schema.MetricSpec, got {self.reply_metrics!r}")
        if self.section is not None and not (isinstance(self.section, type) and issubclass(self.section, Section)):
            raise TypeError(f"{where}.section must be a contract.config.Section subclass, got {self.section!r}")
        for hook in ("config_problems", "rank_census"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                raise TypeError(f"{where}.{hook} must be a function of the run config, got {getattr(self, hook)!r}")
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= 10:
            raise ValueError(f"{where}.learning_rate must be a number in (0, 10] (train.lr's range), got {lr!r}")
        if self.rank_census is not None and not self.mixed_ranks:
            raise ValueError(f"{where}.rank_census needs mixed_ranks=True: its nodes' ranks may come to differ")

    @property
    def auto_kind(self) -> str:
        """The adapter kind ``adapter.name = auto`` resolves to."""
        return self.adapter_kinds[0]


@dataclass(frozen=True)
class _Entry:
    info: StrategyInfo
    cls: type[CorollaStrategy]


_REGISTRY: dict[str, _Entry] = {}


def register_strategy(info: StrategyInfo) -> Callable[[S], S]:
    """Class decorator registering a strategy class under ``info.name``.

    Raises
    ------
    TypeError
        If ``info`` is not a :class:`StrategyInfo`, or the class is not a Flower ``Strategy`` or
        lacks a member of :class:`~strategies.protocol.CorollaStrategy` (the message lists each).
    ValueError
        If the name is already registered (or its config section is taken).
    """
    if not isinstance(info, StrategyInfo):
        raise TypeError(f"@register_strategy needs a StrategyInfo(name=..., summary=..., ...), got {info!r}")

    def decorator(cls: S) -> S:
        problems = protocol_problems(cls)
        if problems:
            raise TypeError(
                f"@register_strategy({info.name!r}): {getattr(cls, '__qualname__', cls)!r} is not a Corolla "
                "strategy:\n  - " + "\n  - ".join(problems)
                + "\nInherit strategies.fedit.FedIT (or implement strategies.protocol.CorollaStrategy)."
            )
        if info.name in _REGISTRY:
            other = _REGISTRY[info.name].cls
            raise ValueError(
                f"strategy name {info.name!r} is already registered to "
                f"{other.__module__}.{other.__qualname__}; pick another name for "
                f"{cls.__module__}.{cls.__qualname__}"
            )
        if info.section is not None:
            register_section(info.name, info.section, owner=cls.__module__)
        _REGISTRY[info.name] = _Entry(info, cls)  # a CorollaStrategy by protocol_problems
        return cls

    return decorator


def registered_strategies() -> tuple[StrategyInfo, ...]:
    """Every registered strategy's :class:`StrategyInfo`, sorted by name."""
    return tuple(_REGISTRY[name].info for name in sorted(_REGISTRY))


def strategy_names() -> list[str]:
    """Registered strategy names, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(repr(n) for n in strategy_names()) or "(none)"
        raise ValueError(
            f"unknown strategy {name!r} in `strategy.name`; registered strategies: {known}. "
            f"Set `strategy.name` to one of them."
        ) from None


def strategy_info(name: str) -> StrategyInfo:
    """The :class:`StrategyInfo` registered under ``name`` (ValueError listing the names if unknown)."""
    return _entry(name).info


def strategy_class(name: str) -> type[CorollaStrategy]:
    """Return the class registered under ``name``.

    Raises
    ------
    ValueError
        For an unknown name, listing the registered ones.
    """
    return _entry(name).cls


def learning_rate(config: RunConfig) -> float:
    """The clients' AdamW rate for this run: ``train.lr``, or the strategy's own rate for ``auto``."""
    return config.train.learning_rate(strategy_info(config.strategy.name).learning_rate)


def build_strategy(name: str, *, config: RunConfig | None = None, **params: Any) -> CorollaStrategy:
    """Instantiate the strategy registered under ``name`` with keyword ``params``.

    When the strategy declares a config section and ``config`` is given, its parsed values are
    passed as ``section=config.section(info.section)`` (unless ``params`` already holds one).

    Raises
    ------
    ValueError
        For an unknown name (see :func:`strategy_class`).
    TypeError
        If ``params`` do not fit the strategy's constructor; the message names the strategy.
    """
    entry = _entry(name)
    if entry.info.section is not None and config is not None and "section" not in params:
        params["section"] = config.section(entry.info.section)
    try:
        return entry.cls(**params)
    except TypeError as exc:
        raise TypeError(f"cannot build strategy {name!r} ({entry.cls.__qualname__}): {exc}") from exc


def resolve_adapter_kind(strategy_name: str, adapter_name: str) -> str:
    """The adapter kind a run of ``strategy_name`` uses when ``adapter.name = adapter_name``.

    ``auto`` gives the strategy's first kind; a kind it lists is returned as is.

    Raises
    ------
    ValueError
        For an unknown strategy, or a kind the strategy cannot aggregate (naming the allowed kinds
        and the fix).
    """
    info = strategy_info(strategy_name)
    if adapter_name == AUTO:
        return info.auto_kind
    if adapter_name not in info.adapter_kinds:
        raise ValueError(
            f"`strategy.name` = {strategy_name!r} needs `adapter.name` in {list(info.adapter_kinds)} "
            f"(got {adapter_name!r}); set `adapter.name=\"{info.auto_kind}\"` or `{AUTO}`"
        )
    return adapter_name


def strategy_config_problems(config: RunConfig) -> list[str]:
    """Every problem of ``config`` that only the registered strategies can see, one line each."""
    try:
        resolve_adapter_kind(config.strategy.name, config.adapter.name)
    except ValueError as exc:
        return [str(exc)]
    info = strategy_info(config.strategy.name)
    return (
        mixed_rank_problems(config, resolve_adapter_kind(config.strategy.name, config.adapter.name))
        + other_section_problems(config)
        + (info.config_problems(config) if info.config_problems is not None else [])
    )


def other_section_problems(config: RunConfig) -> list[str]:
    """Keys of another strategy's section set away from their defaults: they would do nothing, so they are refused."""
    problems = []
    for info in registered_strategies():
        if info.section is None or info.name == config.strategy.name:
            continue
        try:
            values = config.section(info.section).model_dump(by_alias=True)
        except LookupError:  # registered after this config was parsed: it cannot hold the keys
            continue
        defaults = info.section().model_dump(by_alias=True)
        changed = [f"{info.name}.{key} = {value!r}" for key, value in values.items() if value != defaults[key]]
        if changed:
            problems.append(
                f"{', '.join(changed)}: the `{info.name}.*` keys apply only to `strategy.name` = {info.name!r}, but the run uses "
                f"{config.strategy.name!r}; remove them or set strategy.name = {info.name!r}"
            )
    return problems


def needs_rank_census(config: RunConfig) -> bool:
    """Whether the run keeps a per-node rank census: ``adapter.ranks`` mixes ranks, or the strategy's
    ``rank_census`` says its nodes' ranks may come to differ (``docs/algorithms.md §18``, ``§19``)."""
    if config.adapter.mixed_ranks():
        return True
    census = strategy_info(config.strategy.name).rank_census
    return census is not None and census(config)


MIXED_RANK_KIND = "lora"
"""The adapter kind per-client ranks work with: plain LoRA (``adapters.rank_resize``)."""


def mixed_rank_problems(config: RunConfig, adapter_kind: str) -> list[str]:
    """Why ``adapter.ranks`` cannot be used with this strategy and adapter kind (empty: it can, or it is unset).

    ``docs/algorithms.md §18``: a strategy must declare ``mixed_ranks``; the adapter must be plain LoRA.
    """
    if not config.adapter.mixed_ranks():
        return []
    info = strategy_info(config.strategy.name)
    if not info.mixed_ranks:
        takers = ", ".join(i.name for i in registered_strategies() if i.mixed_ranks)
        reason = info.fixed_rank_reason or "it averages factors that must have one shape for every client"
        return [
            f"`adapter.ranks` = {config.adapter.ranks!r} mixes ranks, but `strategy.name` = {config.strategy.name!r} "
            f"needs one rank for all clients: {reason}. Clear adapter.ranks, or use one of: {takers}"
        ]
    if adapter_kind != MIXED_RANK_KIND:
        return [
            f"`adapter.ranks` = {config.adapter.ranks!r} needs `adapter.name` = {MIXED_RANK_KIND!r} (or auto), got "
            f"{adapter_kind!r}: only plain LoRA factors can differ in rank between clients"
        ]
    return []


def check_strategy_config(config: RunConfig) -> str:
    """Validate the strategy side of a parsed run config and return the resolved adapter kind.

    The ServerApp and the CLI call it after :func:`contract.config.parse_run_config`.

    Raises
    ------
    ConfigError
        Naming an unregistered ``strategy.name`` or an ``adapter.name`` the strategy cannot take.
    """
    problems = strategy_config_problems(config)
    if problems:
        raise ConfigError("invalid Corolla run config:\n  - " + "\n  - ".join(problems))
    return resolve_adapter_kind(config.strategy.name, config.adapter.name)
