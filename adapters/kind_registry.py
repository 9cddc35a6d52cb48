"""The registry of adapter kinds (``adapter.name``): registering one, looking it up, reading it off a model.

A kind registers itself when its module is imported::

    @register_adapter_kind
    class MyKind(AdapterKind):
        name = "my-kind"
        ...

Registration checks the class against :class:`~adapters.adapter_kind.AdapterKind` and fails at import
with a message naming everything that is missing or wrong. The built-in kinds (``lora``, ``ffa``,
``lora-sb``, ``abba``; see ``adapters.kinds``) are loaded on the first lookup.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar

from adapters.adapter_kind import AdapterKind
from adapters.peft_model import ADAPTER, adapted_layers, unwrap

AUTO = "auto"  # `adapter.name = auto`: the strategy's first adapter kind
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_PAPER = re.compile(r"^arXiv \d{4}\.\d{4,5}$")
_DESCRIPTIONS = ("name", "paper", "summary", "trains", "layout_keys", "layout_form")

_REGISTRY: dict[str, AdapterKind] = {}
K = TypeVar("K", bound=type[AdapterKind])


class AdapterKindError(TypeError):
    """An adapter kind class that cannot be registered (missing hooks or descriptions, a taken name)."""


def _problems(cls: type) -> list[str]:
    if not (isinstance(cls, type) and issubclass(cls, AdapterKind)):
        return [f"{cls!r} is not a subclass of adapters.adapter_kind.AdapterKind"]
    problems = []
    hooks = sorted(getattr(cls, "__abstractmethods__", ()))
    if hooks:
        problems.append(f"it does not implement the required hooks {', '.join(hooks)}")
    missing = [attr for attr in _DESCRIPTIONS if not hasattr(cls, attr)]
    if missing:
        problems.append(f"it does not set the class attributes {', '.join(missing)}")
    name = getattr(cls, "name", None)
    if "name" not in missing and not (isinstance(name, str) and _NAME.match(name) and name != AUTO):
        problems.append(f"name = {name!r} must be lower-case words joined by '-' (e.g. 'lora-sb'), not 'auto'")
    paper = getattr(cls, "paper", None)
    if "paper" not in missing and not (isinstance(paper, str) and _PAPER.match(paper)):
        problems.append(f"paper = {paper!r} must be an arXiv id, e.g. 'arXiv 2106.09685'")
    for attr in ("summary", "trains", "layout_form"):
        value = getattr(cls, attr, None)
        if attr not in missing and not (isinstance(value, str) and value.strip() and "\n" not in value):
            problems.append(f"{attr} = {value!r} must be one non-empty line")
    keys = getattr(cls, "layout_keys", None)
    frozen = getattr(cls, "frozen_layers", ())
    if "layout_keys" not in missing:
        if not (isinstance(keys, dict) and keys and all(isinstance(k, str) and k.endswith("_key") for k in keys)):
            problems.append(f"layout_keys = {keys!r} must map at least one '<x>_key' field to a PEFT layer name")
        elif not all(isinstance(layer, str) and layer.startswith("lora_") for layer in keys.values()):
            problems.append(f"layout_keys = {keys!r}: every layer must be a PEFT adapter layer ('lora_...')")
        elif set(keys.values()) & set(frozen):
            problems.append(f"layers {sorted(set(keys.values()) & set(frozen))} are both shipped and frozen")
    if not (isinstance(frozen, tuple) and all(isinstance(f, str) and f.startswith("lora_") for f in frozen)):
        problems.append(f"frozen_layers = {frozen!r} must be a tuple of PEFT adapter layer names ('lora_...')")
    if isinstance(name, str) and name in _REGISTRY and type(_REGISTRY[name]) is not cls:
        problems.append(f"the name {name!r} is already registered by {type(_REGISTRY[name]).__qualname__}")
    return problems


def register_adapter_kind(cls: K) -> K:
    """Class decorator: check ``cls`` and add one instance of it to the registry (see module docstring).

    Raises
    ------
    AdapterKindError
        Naming every problem at once: required hooks not implemented, descriptions missing or malformed,
        the name taken.
    """
    problems = _problems(cls)
    if problems:
        label = getattr(cls, "__qualname__", repr(cls))
        raise AdapterKindError(
            f"adapter kind {label} cannot be registered: " + "; ".join(problems)
            + " (see adapters.adapter_kind.AdapterKind for what a kind must provide)"
        )
    if cls.name not in _REGISTRY:
        _REGISTRY[cls.name] = cls()
    return cls


def _load_builtins() -> None:
    import adapters.kinds  # noqa: F401  (the built-in kinds register themselves on import)


def registered_kinds() -> tuple[AdapterKind, ...]:
    """Every registered kind: the built-ins in their order (``adapters.kinds.BUILTIN_KINDS``), then the rest
    in registration order."""
    _load_builtins()
    from adapters.kinds import BUILTIN_KINDS

    return tuple(sorted(_REGISTRY.values(), key=lambda k: (BUILTIN_KINDS.index(k.name) if k.name in BUILTIN_KINDS
                                                             else len(BUILTIN_KINDS))))


def kind_names() -> tuple[str, ...]:
    """The names of :func:`registered_kinds`."""
    return tuple(kind.name for kind in registered_kinds())


def get_adapter_kind(name: str) -> AdapterKind:
    """The registered kind ``name``; an unknown name gets an error listing the registered ones."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"`adapter.name` = {name!r} is not a registered adapter kind; choose one of "
            f"{', '.join(sorted(_REGISTRY))} or `auto` (see `corolla adapters`)"
        ) from None


def resolve_adapter_kind(name: str, strategy_kinds: Sequence[str] = (), *, strategy: str = "") -> AdapterKind:
    """The kind a run uses: ``adapter.name``, or with ``auto`` the strategy's first kind.

    A named kind must suit the strategy: be one of ``strategy_kinds`` or share the layout form of one
    (the strategy reads nothing else of the adapter). No ``strategy_kinds``: the strategy takes any kind,
    and ``auto`` is plain ``lora``.
    """
    if name == AUTO:
        return get_adapter_kind(strategy_kinds[0] if strategy_kinds else "lora")
    kind = get_adapter_kind(name)
    if not strategy_kinds or kind.name in strategy_kinds:
        return kind
    forms = {get_adapter_kind(k).layout_form for k in strategy_kinds}
    if kind.layout_form not in forms:
        label = f"`strategy.name` = {strategy!r}" if strategy else "the strategy"
        raise ValueError(
            f"{label} needs `adapter.name` in {list(strategy_kinds)} or a kind of the same layout form "
            f"({', '.join(sorted(forms))}); {name!r} has form {kind.layout_form!r}: set "
            f"`adapter.name=\"{strategy_kinds[0]}\"` or `auto`"
        )
    return kind


def kind_of_layer(config: Any, layer: Any) -> AdapterKind:
    """The one registered kind whose ``detect`` accepts this LoRA module (built with ``config``).

    Raises ``ValueError`` when none does or several do (two kinds that cannot be told apart).
    """
    matches = [kind for kind in registered_kinds() if kind.detect(config, layer)]
    if len(matches) != 1:
        what = f"kinds {[k.name for k in matches]} all accept it" if matches else "no registered kind accepts it"
        raise ValueError(
            f"cannot tell the adapter kind of a LoRA module with layers {sorted(layer.adapter_layer_names)}: {what}"
        )
    return matches[0]


def adapter_kind_of(model: Any) -> str:
    """The kind of an adapted model, read from its structure by every kind's ``detect``.

    A model mixing kinds, or with no LoRA module, is rejected.
    """
    peft_model = unwrap(model)
    config = peft_model.peft_config[ADAPTER]
    found = set()
    for layer in adapted_layers(peft_model).values():
        try:
            found.add(kind_of_layer(config, layer).name)
        except ValueError as exc:
            found.add(f"unknown ({exc})")
    if len(found) != 1:
        raise ValueError(f"cannot tell the adapter kind of this model: its LoRA modules are {sorted(found) or 'none'}")
    return found.pop()
