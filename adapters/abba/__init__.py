"""ABBA (arXiv 2505.14238): ``W = W0 + s·(B1 A1) ⊙ (B2 A2)`` with all four factors trainable.

The ``abba`` adapter kind (``adapters.abba.kind``); registered on import.
"""

from adapters.abba.export import merged_model, merged_state_dict, save_merged
from adapters.abba.init import ABBAFactors, init_factors, kaiming_uniform_bound
from adapters.abba.kind import Abba
from adapters.abba.khatri_rao import abba_delta_x, column_khatri_rao, dense_delta, row_khatri_rao
from adapters.abba.layer import ABBALinear, ABBAOptions, ABBAVariant, configure_abba

__all__ = [
    "Abba",
    "ABBAFactors",
    "ABBALinear",
    "ABBAOptions",
    "ABBAVariant",
    "abba_delta_x",
    "column_khatri_rao",
    "configure_abba",
    "dense_delta",
    "init_factors",
    "kaiming_uniform_bound",
    "merged_model",
    "merged_state_dict",
    "row_khatri_rao",
    "save_merged",
]
