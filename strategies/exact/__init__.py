"""Exact federated-LoRA aggregation maths on plain numpy arrays (no Flower records, no torch).

One concept per module: :mod:`.fedex` (FedEx-LoRA residual and its factored forms),
:mod:`.transport` (dense vs factored delta, ``fan_in_fan_out`` orientation), :mod:`.residual_log`
(versioned cumulative base deltas), :mod:`.fedsb` (Fed-SB latent averaging, mixed ranks),
:mod:`.ffa` (FFA-LoRA, frozen-``A`` check), :mod:`.flora` (FLoRA stacking) and :mod:`.comm`
(parameters per client per round, ``algorithms.md`` §5). Notation: ``algorithms.md`` §0.2.
"""

from .comm import ALL_7, CommCost, comm_params, hf_module_shapes
from .fedex import (
    FedExAggregate,
    factor_means,
    fedex_aggregate,
    fedex_residual,
    mean_product,
    residual_factors,
    residual_transport,
)
from .fedsb import fedsb_aggregate, fedsb_delta, leading_block, pad_leading_block
from .ffa import FrozenFactorMismatch, check_frozen_a, ffa_aggregate
from .flora import flora_delta, flora_stack
from .residual_log import CumulativeDelta, ResidualLog
from .transport import ResidualTransport, fold_into_base, to_stored

__all__ = [
    "ALL_7",
    "CommCost",
    "CumulativeDelta",
    "FedExAggregate",
    "FrozenFactorMismatch",
    "ResidualLog",
    "ResidualTransport",
    "check_frozen_a",
    "comm_params",
    "factor_means",
    "fedex_aggregate",
    "fedex_residual",
    "fedsb_aggregate",
    "fedsb_delta",
    "ffa_aggregate",
    "flora_delta",
    "flora_stack",
    "fold_into_base",
    "hf_module_shapes",
    "leading_block",
    "mean_product",
    "pad_leading_block",
    "residual_factors",
    "residual_transport",
    "to_stored",
]
