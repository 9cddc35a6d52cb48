"""Server-side aggregation strategies (flwr + numpy only; no torch, no peft).

Importing the package registers every built-in strategy with :mod:`strategies.registry`.
"""

from .fedex import FedExLoRA
from .fedsb import FedSB
from .ffa import FFALoRA
from .fedit import FedIT
from .flora import FLoRA
from .layout import Layout, LoraPair, layout_from_config, layout_to_config
from .registry import build_strategy, register_strategy, strategy_names

__all__ = [
    "FedExLoRA",
    "FedSB",
    "FFALoRA",
    "FedIT",
    "FLoRA",
    "Layout",
    "LoraPair",
    "build_strategy",
    "layout_from_config",
    "layout_to_config",
    "register_strategy",
    "strategy_names",
]
