"""Sections registered by extensions, and the run-config class assembled from them.

An extension (a task plugin, a strategy) defines its keys as a :class:`~.section.Section` next to
its code and calls :func:`register_section` at import time::

    class GuideqConfig(Section):
        turns: int = Field(1, ge=1, description="question/answer turns per text")

    register_section("guideq", GuideqConfig, owner="client.tasks.guideq")

From then on ``guideq.turns`` is a run-config key: :func:`run_config_model` builds the
:class:`~.run_config.RunConfig` subclass holding every registered section (rebuilt when another
registers), so parsing, ``allowed_keys()`` and ``corolla config`` pick it up with no edit here.
The key also needs its line in ``pyproject.toml``: Flower rejects overrides of unlisted keys.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, TypeVar

import annotated_types
from pydantic import Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from .run_config import RunConfig
from .section import STRICT, Section, kebab

SectionT = TypeVar("SectionT", bound=type[Section])

_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_SCALARS = (bool, int, float, str)  # what a Flower run-config value can be
_STRICT_OPTIONS: dict[str, object] = {  # what no section may loosen
    "strict": STRICT.get("strict"), "allow_inf_nan": STRICT.get("allow_inf_nan"), "extra": STRICT.get("extra"),
}


@dataclass(frozen=True)
class SectionInfo:
    """One registered section: its key head, its model, and the extension that registered it."""

    name: str
    model: type[Section]
    owner: str

    @property
    def field_name(self) -> str:
        """The attribute name on the assembled run config (``my-task`` -> ``my_task``)."""
        return self.name.replace("-", "_")

    @property
    def summary(self) -> str:
        """The first line of the model's docstring."""
        return (self.model.__doc__ or "").strip().splitlines()[0] if self.model.__doc__ else ""


_SECTIONS: dict[str, SectionInfo] = {}
_LOCK = threading.Lock()
_ASSEMBLED: tuple[tuple[str, ...], type[RunConfig]] | None = None


def core_section_names() -> tuple[str, ...]:
    """The heads of the platform's own sections (``strategy``, ``model``, ... ``faults``)."""
    return tuple(
        kebab(name) for name, field in RunConfig.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section)
    )


def register_section(name: str, model: SectionT, *, owner: str) -> SectionT:
    """Make ``model``'s fields the run-config keys ``<name>.<field>``; returns ``model``.

    Registering the same model under the same name again is a no-op.

    Raises
    ------
    TypeError
        ``model`` is not a :class:`Section` subclass, a field has no default, no description, a
        number without an upper bound or a default Flower's run config cannot hold, the model
        loosens :class:`Section`'s strictness, or ``owner`` is empty.
    ValueError
        ``name`` is not kebab-case, is a core section or top-level key, or is taken by another model
        (or ``model`` is already registered under another name).
    """
    global _ASSEMBLED
    if not isinstance(owner, str) or not owner:
        raise TypeError(f"register_section({name!r}, ...): `owner` must name the registering extension, e.g. its module")
    _check_model(name, model, owner)
    _check_name(name, owner)
    with _LOCK:
        existing = _SECTIONS.get(name)
        if existing is not None:
            if existing.model is model:
                return model
            raise ValueError(
                f"config section `{name}` is already registered by {existing.owner} "
                f"({_qualname(existing.model)}); {owner} must pick another name for {_qualname(model)}"
            )
        for info in _SECTIONS.values():
            if info.model is model:
                raise ValueError(
                    f"{_qualname(model)} is already registered as config section `{info.name}` by {info.owner}; "
                    f"one model is one section, so {owner} cannot register it again as `{name}`"
                )
        _SECTIONS[name] = SectionInfo(name, model, owner)
        _ASSEMBLED = None
    return model


def registered_sections() -> tuple[SectionInfo, ...]:
    """The sections extensions registered in this process, sorted by name."""
    with _LOCK:
        return tuple(_SECTIONS[name] for name in sorted(_SECTIONS))


def run_config_model() -> type[RunConfig]:
    """The :class:`RunConfig` subclass holding the core and every section registered so far.

    Built once and cached; a later registration makes the next call build a new class (configs
    parsed before keep their class, without the new section).
    """
    global _ASSEMBLED
    with _LOCK:
        names = tuple(sorted(_SECTIONS))
        if _ASSEMBLED is not None and _ASSEMBLED[0] == names:
            return _ASSEMBLED[1]
        if not names:
            assembled: type[RunConfig] = RunConfig
        else:
            fields: dict[str, Any] = {}  # create_model's field definitions: (annotation, FieldInfo)
            for name in names:
                info = _SECTIONS[name]
                fields[info.field_name] = (info.model, Field(info.model(), description=info.summary))
            assembled = create_model(
                "RunConfig", __base__=RunConfig, __module__=RunConfig.__module__, **fields
            )
        _ASSEMBLED = (names, assembled)
        return assembled


def _check_model(name: str, model: object, owner: str) -> None:
    if not (isinstance(model, type) and issubclass(model, Section)) or model is RunConfig:
        raise TypeError(
            f"register_section({name!r}, ...) from {owner}: the model must be a contract.config.Section "
            f"subclass, got {model!r}"
        )
    missing = [kebab(field) for field, info in model.model_fields.items() if info.is_required()]
    if missing:
        raise TypeError(
            f"config section `{name}` ({_qualname(model)}, from {owner}): every key needs a default "
            f"(pyproject.toml lists each with it); add one to {', '.join(missing)}"
        )
    undocumented = [kebab(field) for field, info in model.model_fields.items() if not info.description]
    if undocumented:
        raise TypeError(
            f"config section `{name}` ({_qualname(model)}, from {owner}): every key needs a "
            f"Field(description=...) (`corolla config` and the error messages show it); add one to {', '.join(undocumented)}"
        )
    try:
        defaults = model().model_dump(by_alias=True)
    except ValidationError as exc:
        raise TypeError(f"config section `{name}` ({_qualname(model)}, from {owner}): its defaults are invalid: {exc}") from None
    wrong = [f"{key} ({type(value).__name__})" for key, value in defaults.items() if not isinstance(value, _SCALARS)]
    if wrong:
        raise TypeError(
            f"config section `{name}` ({_qualname(model)}, from {owner}): Flower run-config values are bool, int, "
            f"float or str; these keys are not: {', '.join(wrong)}"
        )
    loosened = [f"{option}={model.model_config.get(option)!r}" for option, value in _STRICT_OPTIONS.items()
                if model.model_config.get(option) != value]
    if loosened:
        raise TypeError(
            f"config section `{name}` ({_qualname(model)}, from {owner}): a section is strict and finite like every "
            f"other (docs/operations.md §1); drop the model_config override {', '.join(loosened)}"
        )
    unbounded = [kebab(field) for field, info in model.model_fields.items() if _numeric(info) and not _has_upper_bound(info)]
    if unbounded:
        raise TypeError(
            f"config section `{name}` ({_qualname(model)}, from {owner}): every number needs an upper bound "
            f"(docs/operations.md §1), e.g. Field(..., le=1_000_000); add one to {', '.join(unbounded)}"
        )


def _numeric(info: FieldInfo) -> bool:
    return info.annotation in (int, float)  # bool is its own annotation; Literal and str are not numbers


def _has_upper_bound(info: FieldInfo) -> bool:
    return any(isinstance(rule, annotated_types.Le | annotated_types.Lt) for rule in info.metadata)


def _check_name(name: object, owner: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"config section name {name!r} (from {owner}) must be kebab-case: lowercase letters and digits, "
            "words joined by single `-`, starting with a letter, e.g. `my-task`"
        )
    if name in core_section_names():
        raise ValueError(
            f"config section `{name}` (from {owner}) is a core section of the run config "
            f"({', '.join(core_section_names())}); pick another name"
        )
    field = name.replace("-", "_")
    if field in RunConfig.model_fields or hasattr(RunConfig, field):
        raise ValueError(
            f"config section `{name}` (from {owner}) would shadow the top-level key or RunConfig attribute "
            f"`{field}`; pick another name"
        )


def _qualname(model: type) -> str:
    return f"{model.__module__}.{model.__qualname__}"
