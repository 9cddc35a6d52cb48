"""Server-side aggregation strategies (flwr + numpy only; no torch, no peft).

Importing the package registers every built-in strategy with :mod:`strategies.registry`. One
module per Flower strategy (:mod:`.fedit`, :mod:`.fedex`, :mod:`.flora`, :mod:`.ffa`,
:mod:`.fedsb`, :mod:`.fedsa`, :mod:`.rolora`, :mod:`.fedsvd`, :mod:`.hetlora`, :mod:`.flexlora`); what the server needs from each is :class:`~strategies.protocol.CorollaStrategy`;
the maths they run on numpy arrays is :mod:`strategies.maths`.
"""

from .fedex import FedExLoRA
from .fedit import FedIT
from .fedsa import FedSALoRA
from .fedsb import FedSB
from .fedsvd import FedSVD
from .ffa import FFALoRA
from .flexlora import FlexLoRA
from .flora import FLoRA
from .hetlora import HetLoRA
from .rolora import RoLoRA
from .layout import Layout, LoraPair, layout_from_config, layout_to_config
from .protocol import CorollaStrategy, DroppedReply, StrategyState
from .registry import (
    StrategyInfo,
    build_strategy,
    check_strategy_config,
    register_strategy,
    registered_strategies,
    resolve_adapter_kind,
    strategy_class,
    strategy_info,
    strategy_names,
)

__all__ = [
    "CorollaStrategy",
    "DroppedReply",
    "FFALoRA",
    "FLoRA",
    "FlexLoRA",
    "HetLoRA",
    "FedExLoRA",
    "FedIT",
    "FedSALoRA",
    "FedSB",
    "FedSVD",
    "Layout",
    "LoraPair",
    "RoLoRA",
    "StrategyInfo",
    "StrategyState",
    "build_strategy",
    "check_strategy_config",
    "layout_from_config",
    "layout_to_config",
    "register_strategy",
    "registered_strategies",
    "resolve_adapter_kind",
    "strategy_class",
    "strategy_info",
    "strategy_names",
]
