"""Extensions from other packages: modules named by ``corolla.extensions`` entry points.

A package that adds a strategy, an adapter kind or a task declares the module that registers it::

    [project.entry-points."corolla.extensions"]
    median = "my_package.median_strategy"

The ServerApp, the ClientApp and the ``corolla`` CLI call :func:`load_installed_extensions` at start-up,
so the extension is registered in every process of a simulation or a deployment (docs/extending.md §1).
The contract imports nothing of Corolla's: the modules are imported by name.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import threading

GROUP = "corolla.extensions"

_LOADED: dict[str, str] = {}
_LOCK = threading.Lock()


class ExtensionError(ImportError):
    """An installed extension that cannot be imported; the message names the package, module and error."""


def load_installed_extensions() -> dict[str, str]:
    """Import every ``corolla.extensions`` entry point's module once; returns ``{name: module}`` loaded.

    Raises
    ------
    ExtensionError
        If an entry point's module fails to import (the process stops at start, never mid-round).
    """
    with _LOCK:
        for point in importlib.metadata.entry_points(group=GROUP):
            if point.name in _LOADED:
                continue
            package = point.dist.name if point.dist is not None else "an installed package"
            try:
                importlib.import_module(point.module)
            except Exception as exc:
                raise ExtensionError(
                    f"Corolla extension {point.name!r} ({point.value}) from {package} failed to import: "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall that package, or remove its "
                    f"`{GROUP}` entry point."
                ) from exc
            _LOADED[point.name] = point.module
        return dict(_LOADED)
