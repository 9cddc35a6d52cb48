"""Name -> :class:`~client.tasks.base.Task` class registry (what ``task.name`` in a config selects).

Built-in tasks register themselves when ``client.tasks`` is imported; a plugin registers its own
class with the :func:`register_task` decorator. Registering a second, different class under a name
already taken is an error (re-applying the decorator to the very same class is a no-op).
:func:`registered_tasks` describes each (``corolla tasks`` prints them).
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

from client.tasks.base import ModelKind, Task
from contract.config import registered_sections

TaskT = TypeVar("TaskT", bound=type[Task])

_REGISTRY: dict[str, type[Task]] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class TaskInfo:
    """What ``corolla tasks`` shows of one registered task."""

    name: str
    summary: str
    model_kind: ModelKind
    main_metric: str
    section: str | None  # the head of its config keys (``guideq`` for ``guideq.*``), or None
    cls: type[Task]


def register_task(cls: TaskT) -> TaskT:
    """Class decorator: register ``cls`` under ``cls.name``.

    Raises
    ------
    TypeError
        If ``cls`` is not a concrete :class:`Task` subclass with a non-empty string ``name``.
    ValueError
        If another class is already registered under the same name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"register_task expects a Task subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} must define a non-empty class attribute `name`")
    if getattr(cls, "model_kind", None) not in get_args(ModelKind):
        raise TypeError(f"{cls.__qualname__}.model_kind must be one of {', '.join(map(repr, get_args(ModelKind)))}")
    if inspect.isabstract(cls):
        raise TypeError(f"{cls.__qualname__} is abstract: {sorted(cls.__abstractmethods__)}")
    if cls.config_section is not None and _section_name(cls) is None:
        raise TypeError(
            f"{cls.__qualname__}.config_section = {cls.config_section.__qualname__} is not a registered config "
            "section; call contract.config.register_section(<name>, <model>, owner=...) in the task's config module"
        )
    with _LOCK:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"task name {name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}; pick another `name` for "
                f"{cls.__module__}.{cls.__qualname__}"
            )
        _REGISTRY[name] = cls
    return cls


def registered_tasks() -> tuple[TaskInfo, ...]:
    """Every registered task, described (summary: ``summary`` or the docstring's first paragraph), by name."""
    with _LOCK:
        classes = [_REGISTRY[name] for name in sorted(_REGISTRY)]
    return tuple(
        TaskInfo(cls.name, _summary(cls), cls.model_kind, cls.main_metric, _section_name(cls), cls) for cls in classes
    )


def _summary(cls: type[Task]) -> str:
    if cls.summary:
        return cls.summary
    doc = inspect.getdoc(cls) if vars(cls).get("__doc__") else ""
    return " ".join((doc or "").split("\n\n")[0].split())  # the first paragraph, on one line


def _section_name(cls: type[Task]) -> str | None:
    if cls.config_section is None:
        return None
    return next((info.name for info in registered_sections() if info.model is cls.config_section), None)


def task_names() -> tuple[str, ...]:
    """Registered task names, sorted."""
    with _LOCK:
        return tuple(sorted(_REGISTRY))


def get_task_class(name: str) -> type[Task]:
    """The class registered under ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not registered; the message lists the registered names.
    """
    with _LOCK:
        cls = _REGISTRY.get(name)
    if cls is None:
        registered = ", ".join(task_names()) or "(none)"
        raise ValueError(f"unknown task.name {name!r}; registered tasks: {registered}")
    return cls


def build_task(name: str, *, seed: int, max_length: int, **kwargs: Any) -> Task:
    """Instantiate the task registered under ``name``.

    Parameters
    ----------
    name : str
        Registry name (``task.name`` in the run config).
    seed : int
        Data-generation seed passed to the task.
    max_length : int
        Token budget per example.
    **kwargs
        Task-specific constructor arguments (e.g. ``num_train``).

    Raises
    ------
    ValueError
        Unknown ``name`` (the message lists the registered names).
    """
    return get_task_class(name)(seed=seed, max_length=max_length, **kwargs)
