"""The ABBA layer: ``W = W0 + s·(B1 A1) ⊙ (B2 A2)`` with all four factors trainable.

ABBA (arXiv 2505.14238; ``docs/algorithms.md §10.1``). ``B1: (m, r1)`` is ``lora_B``, ``A1: (r1, n)`` is
``lora_A`` (so ``r = r1`` to PEFT), ``B2: (m, r2)`` is ``lora_B2`` and ``A2: (r2, n)`` is ``lora_A2``.
The forward pass is ``y = W0 x + b + s·B*(A*·dropout(x))`` through the Khatri–Rao factors of ``docs/algorithms.md §10.1``,
never an ``m × n`` matrix.

* Scale: each pair gets ``s_k = √α_k`` in the reference, so ``s = √(α1·α2)``; with one
  ``adapter.alpha`` for both, ``s = alpha`` (``docs/algorithms.md §10.1``; the published formula is not known). PEFT's scale is
  ``lora_alpha / r``, so :func:`configure_abba` sets ``lora_alpha = s·r1``.
* Dropout: the reference accepts it but never applies it (``docs/algorithms.md §10.1``); here ``adapter.dropout`` is applied
  to the adapter branch's input, as for LoRA (0 reproduces the reference).
* Initialisation (``docs/algorithms.md §10.2``, :mod:`adapters.abba.init`): ``B1 A1`` = the rank-r1 SVD of ``W0``,
  ``A2`` Kaiming-uniform, ``B2 = 0``, drawn from a local generator seeded with ``ABBAOptions.seed``
  (None: ``torch.initial_seed()``, which ``wrap_with_lora`` sets from ``init_seed``) plus a CRC of the
  module name; the global RNG is only read, never advanced.

Hooks into PEFT as LoRA-SB does (``adapters.lora_sb.layer``): :class:`ABBALinear` is PEFT's
``lora.Linear`` with the single variant :class:`ABBAVariant`, registered through
``LoraConfig._register_custom_module`` for ``nn.Linear`` and GPT-2 ``Conv1D``; state-dict keys are
``<module>.lora_{A,B,A2,B2}.weight``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Literal

import torch
from peft import LoraConfig
from peft.tuners.lora.layer import LoraLayer, LoraVariant
from peft.utils.other import transpose
from torch import nn
from transformers.pytorch_utils import Conv1D

from adapters.abba.init import init_factors
from adapters.abba.khatri_rao import abba_delta_x, dense_delta
from adapters.custom_lora import CustomLoraLinear, DeltaWeightVariant, custom_layer, factor_weight

A2_LAYER, B2_LAYER = "lora_A2", "lora_B2"


@dataclass(frozen=True)
class ABBAOptions:
    """What a PEFT ``LoraConfig`` cannot say about ABBA (kept on the config as ``_abba``)."""

    rank2: int
    svd: Literal["exact", "randomized"] = "randomized"
    seed: int | None = None  # None: torch.initial_seed() at build time


def _options(config: LoraConfig) -> ABBAOptions:
    options = getattr(config, "_abba", None)
    if not isinstance(options, ABBAOptions):
        raise ValueError("ABBA layers need a config prepared by adapters.abba.configure_abba")
    return options


class ABBAVariant(DeltaWeightVariant):
    """PEFT LoRA variant ``ΔW = s·(B1 A1) ⊙ (B2 A2)`` (``docs/algorithms.md §10.1``)."""

    @staticmethod
    def init(module: LoraLayer, adapter_name: str, **kwargs: Any) -> None:
        """Add ``lora_A2``/``lora_B2`` and install the ``docs/algorithms.md §10.2`` initialisation into all four factors."""
        layer = custom_layer(module, ABBALinear)
        options = _options(kwargs["config"])
        if not hasattr(layer, A2_LAYER):
            layer.lora_A2 = nn.ModuleDict({})
            layer.lora_B2 = nn.ModuleDict({})
            layer.adapter_layer_names = (*layer.adapter_layer_names, A2_LAYER, B2_LAYER)
        weight_a = factor_weight(layer.lora_A, adapter_name)  # A1: (r1, n)
        weight_b = factor_weight(layer.lora_B, adapter_name)  # B1: (m, r1)
        n, m = weight_a.shape[1], weight_b.shape[0]
        like = {"device": weight_a.device, "dtype": weight_a.dtype}
        layer.lora_A2[adapter_name] = nn.Linear(n, options.rank2, bias=False, **like)
        layer.lora_B2[adapter_name] = nn.Linear(options.rank2, m, bias=False, **like)
        base = options.seed if options.seed is not None else torch.initial_seed()
        seed = (base + zlib.crc32(str(kwargs.get("target_name", "")).encode())) % 2**63
        w0 = transpose(layer.get_base_layer().get_parameter("weight"), layer.fan_in_fan_out)  # W0: (m, n)
        factors = init_factors(
            w0, layer.r[adapter_name], options.rank2, generator=torch.Generator().manual_seed(seed), svd=options.svd
        )
        targets = (
            weight_b,
            weight_a,
            factor_weight(layer.lora_B2, adapter_name),
            factor_weight(layer.lora_A2, adapter_name),
        )
        with torch.no_grad():
            for target, value in zip(targets, factors, strict=True):
                target.copy_(value.to(target.dtype))

    @staticmethod
    def forward(
        module: LoraLayer, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        """``result + s·B*(A*·dropout(x))``; ``x``: (..., n), result: (..., m)."""
        layer = custom_layer(module, ABBALinear)
        b1 = factor_weight(layer.lora_B, active_adapter)  # B1: (m, r1)
        a1 = factor_weight(layer.lora_A, active_adapter)  # A1: (r1, n)
        b2 = factor_weight(layer.lora_B2, active_adapter)  # B2: (m, r2)
        a2 = factor_weight(layer.lora_A2, active_adapter)  # A2: (r2, n)
        x = layer.lora_dropout[active_adapter](x).to(a1.dtype)
        return result + abba_delta_x(x, b1, a1, b2, a2, layer.scaling[active_adapter])


class ABBALinear(CustomLoraLinear):
    """PEFT ``lora.Linear`` whose adapters are ABBA; for ``nn.Linear`` and GPT-2 ``Conv1D``.

    ``Conv1D`` stores its weight ``(n, m)``: ``fan_in_fan_out`` is set for it, so the SVD reads
    ``W0ᵀ`` and merging transposes ``ΔW`` (``docs/algorithms.md §1``).
    """

    lora_A2: nn.ModuleDict  # adapter -> A2: (r2, n), added by ABBAVariant.init
    lora_B2: nn.ModuleDict  # adapter -> B2: (m, r2)

    @property
    def lora_variants(self) -> dict[tuple[str, ...], type[LoraVariant] | None]:
        """Only ABBA; any other variant flag (``use_dora``, ...) is rejected by PEFT."""
        return {(): ABBAVariant}

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """Dense ``s·(B1 A1) ⊙ (B2 A2)`` in the stored orientation, computed in fp32 (at least)."""
        b1, a1, b2, a2 = (
            factor_weight(self.lora_B, adapter),
            factor_weight(self.lora_A, adapter),
            factor_weight(self.lora_B2, adapter),
            factor_weight(self.lora_A2, adapter),
        )
        dtype = b1.dtype
        work = torch.float64 if dtype == torch.float64 else torch.float32
        delta = dense_delta(b1.to(work), a1.to(work), b2.to(work), a2.to(work), self.scaling[adapter])  # ΔW: (m, n)
        return transpose(delta, self.fan_in_fan_out).to(dtype)

    def __repr__(self) -> str:
        return "abba." + nn.Module.__repr__(self)


CUSTOM_MODULES: dict[type[nn.Module], type[nn.Module]] = {nn.Linear: ABBALinear, Conv1D: ABBALinear}


def configure_abba(
    config: LoraConfig,
    *,
    rank2: int,
    scale: float | None = None,
    svd: Literal["exact", "randomized"] = "randomized",
    seed: int | None = None,
) -> LoraConfig:
    """Turn a PEFT ``LoraConfig`` (``r = r1``) into an ABBA one, in place (and return it).

    ``scale`` is ``s`` (None: ``√(α1·α2) = lora_alpha``, ``docs/algorithms.md §10.1``); PEFT then sees ``lora_alpha = s·r1``.
    """
    if config.use_dora or config.use_rslora or config.rank_pattern or config.alpha_pattern or config.lora_bias:
        raise ValueError(
            "ABBA (`adapter.name = abba`) uses fixed ranks and scale: unset use_dora, use_rslora, "
            "rank_pattern, alpha_pattern and lora_bias"
        )
    if rank2 < 1:
        raise ValueError(f"ABBA rank r2 = {rank2} must be >= 1")
    s = float(config.lora_alpha if scale is None else scale)
    # PEFT annotates lora_alpha as int, but computes its scale as lora_alpha / r: s·r1 is rarely whole
    config.lora_alpha = s * config.r  # type: ignore[assignment]  # see above
    config.init_lora_weights = False  # the variant installs docs/algorithms.md §10.2 itself
    # ABBA's options ride on the PEFT config object (read back by _options); LoraConfig has no field for them
    config._abba = ABBAOptions(rank2=rank2, svd=svd, seed=seed)  # type: ignore[attr-defined]  # see above
    config._register_custom_module(CUSTOM_MODULES)
    return config
