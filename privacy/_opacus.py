"""Opacus, imported once without its logging side effect; every ``privacy`` module imports it from here.

``import opacus`` runs ``logging.basicConfig`` (``opacus/utils/module_utils.py``), which adds a
stderr handler to the *root* logger when it has none; Flower's ``flwr`` logger propagates to the
root, so every Flower log line then prints twice. The root logger's handlers and
level are snapshotted before the import and restored right after it.
"""

from __future__ import annotations

import logging

_root = logging.getLogger()
_handlers_before = list(_root.handlers)
_level_before = _root.level
try:
    from opacus import GradSampleModule, PrivacyEngine
    from opacus.accountants import IAccountant, create_accountant
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.optimizers import DPOptimizer
finally:
    for _handler in list(_root.handlers):
        if _handler not in _handlers_before:
            _root.removeHandler(_handler)
    _root.setLevel(_level_before)

__all__ = [
    "DPOptimizer",
    "GradSampleModule",
    "IAccountant",
    "PrivacyEngine",
    "create_accountant",
    "get_noise_multiplier",
]
