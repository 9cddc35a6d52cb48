"""Where the frozen base runs and in what precision: device, dtype, quantization (``docs/precision.md §1-2``).

The base model is built, cast and placed on its device here, *before* PEFT wraps it and long before
Opacus wraps the PEFT model for a DP round: moving a model after Opacus has hooked it leaves the
hooks' buffers behind (pytorch/opacus#820), so nothing in Corolla moves a model after this point.

Whatever the base's dtype or quantization, everything that trains (LoRA factors, LoRA-SB's R, ABBA's
four factors, the task head) is float32: :func:`train_in_float32` casts it after PEFT wrapped the
model, and makes the float32 head accept the base's low-precision activations. PEFT's LoRA layers
already cast their input to the factors' dtype and their output back to the base's
(``peft.tuners.lora.Linear.forward``), so the factors' products are float32 (no autocast region is
needed, and Opacus's per-example hooks see float32 activations and gradients).

Quantized bases go through bitsandbytes (transformers' ``BitsAndBytesConfig``): ``nf4`` is QLoRA's
4-bit NormalFloat with double quantization and bf16 compute (Dettmers et al., arXiv 2305.14314 §3),
``int8`` is LLM.int8() (arXiv 2208.07339). :func:`quantization_problem` says, before anything is
built, why a quantized base cannot run here (no bitsandbytes, or no backend for the device).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

Dtype = Literal["float32", "bfloat16", "float16"]
Quantization = Literal["none", "nf4", "int8"]

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HEAD_MODULES = ("classifier", "score")  # task heads PEFT trains as modules_to_save (adapters.lora)


class DeviceUnavailable(RuntimeError):
    """``model.device`` names a device this machine or torch build does not have."""


@dataclass(frozen=True)
class BasePrecision:
    """The ``model.device``, ``model.dtype`` and ``model.quantization`` of a run."""

    device: str = "cpu"
    dtype: Dtype = "float32"
    quantization: Quantization = "none"

    @classmethod
    def from_config(cls, model: Any) -> BasePrecision:
        """From the run config's ``model.*`` section (anything with those attributes)."""
        return cls(device=model.device, dtype=model.dtype, quantization=model.quantization)

    @property
    def torch_dtype(self) -> torch.dtype:
        """The base weights' torch dtype (a quantized base keeps its non-linear parts in it)."""
        return _DTYPES[self.dtype]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda``/``cuda:N`` checked to exist.

    Raises
    ------
    DeviceUnavailable
        CUDA asked for where torch has none, or a GPU index beyond ``torch.cuda.device_count()``.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"`model.device` = {name!r}, but torch {torch.__version__} sees no CUDA GPU here; "
                "use `model.device = auto` (CUDA when present, else CPU) or `cpu`"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceUnavailable(f"`model.device` = {name!r}, but only {count} GPU(s) are visible (cuda:0..cuda:{count - 1})")
    return device


def quantization_problem(quantization: str, device: torch.device) -> str | None:
    """Why a ``quantization`` base cannot run on ``device`` here, or ``None`` when it can.

    Checks that bitsandbytes is installed, loads, and quantizes (and dequantizes) a small tensor on
    ``device``: bitsandbytes >= 0.46 has a CPU backend for nf4 and int8; older releases are CUDA-only.
    """
    if quantization == "none":
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        return (
            f"`model.quantization` = {quantization!r} needs bitsandbytes, which is not installed; "
            "`pip install -e \".[quant]\"` (or set `model.quantization = none`)"
        )
    try:
        import bitsandbytes.functional as bnb_functional

        probe = torch.linspace(-1.0, 1.0, 128, device=device).reshape(2, 64)
        if quantization == "nf4":
            packed, state = bnb_functional.quantize_4bit(probe.to(torch.bfloat16), quant_type="nf4", compress_statistics=True)
            back = bnb_functional.dequantize_4bit(packed, state).float()
        else:
            quantized, scales, _ = bnb_functional.int8_vectorwise_quant(probe.to(torch.float16))
            back = quantized.float() * scales.float()[:, None] / 127.0
        # within the format's resolution: NF4's widest gap (0.72 -> 1.0) halves to 0.14; int8 steps 1/127
        if not torch.allclose(back, probe, atol=0.15 if quantization == "nf4" else 0.01):
            return f"bitsandbytes' {quantization} round trip on {device} is wrong (max error {float((back - probe).abs().max()):.3g})"
    except Exception as exc:  # noqa: BLE001 - any failure means: this backend cannot run it
        return (
            f"`model.quantization` = {quantization!r}: bitsandbytes cannot quantize on {device} here "
            f"({type(exc).__name__}: {str(exc)[:200]}); use a CUDA GPU or `model.quantization = none`"
        )
    return None


def bnb_config(precision: BasePrecision) -> Any:
    """transformers' ``BitsAndBytesConfig`` for ``precision.quantization`` (``nf4`` or ``int8``).

    nf4 follows QLoRA (arXiv 2305.14314 §3): NormalFloat4, double quantization of the scales, bf16
    compute. The task heads stay unquantized (they train).
    """
    from transformers import BitsAndBytesConfig

    if precision.quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=[*HEAD_MODULES, "lm_head"],
        )
    if precision.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=[*HEAD_MODULES, "lm_head"])
    raise ValueError(f"no bitsandbytes config for quantization {precision.quantization!r}")


def place(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Cast an unquantized base to ``dtype`` and move it to ``device``: the one place a model moves."""
    return model.to(device=device, dtype=dtype)


def _cast_inputs_to_weight(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    weight = getattr(module, "weight", None)
    if weight is None:
        return args
    return tuple(a.to(weight.dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def train_in_float32(peft_model: nn.Module) -> None:
    """Make every trainable tensor and every adapter factor (frozen ones too) float32.

    Adapter factors are recognised by PEFT's ``lora_`` prefix (LoRA A/B, LoRA-SB's R, ABBA's second
    pair); the head is what PEFT trains beside them (``modules_to_save``). A float32 head on a bf16
    base gets a pre-hook that casts its inputs to float32, so the logits and their gradients are float32.
    """
    for name, param in peft_model.named_parameters():
        if (param.requires_grad or ".lora_" in name) and param.dtype != torch.float32 and param.is_floating_point():
            param.data = param.data.to(torch.float32)
    for name, module in peft_model.named_modules():
        if name.rsplit(".", 1)[-1] in HEAD_MODULES or ".modules_to_save." in f".{name}.":
            if any(p.requires_grad for p in module.parameters(recurse=False)):
                module.register_forward_pre_hook(_cast_inputs_to_weight)


def set_gradient_checkpointing(model: Any, enabled: bool) -> None:
    """Turn activation recomputation on or off for the next local round (``train.gradient-checkpointing``).

    Non-reentrant checkpointing, so the frozen base needs no ``enable_input_require_grads``.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(inner, "supports_gradient_checkpointing", False):
        if enabled:
            raise ValueError(f"`train.gradient-checkpointing = true`: {type(inner).__name__} does not support it; set it false")
        return
    if enabled and not inner.is_gradient_checkpointing:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif not enabled and inner.is_gradient_checkpointing:
        inner.gradient_checkpointing_disable()
