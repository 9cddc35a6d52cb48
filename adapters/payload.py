"""The adapter payload: exactly the tensors that travel between server and clients.

The payload is the trainable state of a PEFT model (LoRA A and B of every adapted module, plus a
trained head), named with PEFT's own state-dict keys (``...query.lora_A.weight``), as float32 numpy
arrays in sorted key order, so every process agrees on the layout. ``layout()`` describes it as
plain data (module -> which keys are A and B, the scale, the orientation) for strategies, which
never import torch.

An Opacus ``GradSampleModule`` wrapper is unwrapped here and nowhere else.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer

Payload = dict[str, np.ndarray]


class PayloadError(ValueError):
    """A payload that does not fit the model (missing or extra keys, wrong shapes or dtypes)."""


def unwrap(model: Any) -> PeftModel:
    """The PEFT model inside an Opacus ``GradSampleModule`` (or the model itself)."""
    inner = getattr(model, "_module", model)
    if not isinstance(inner, PeftModel):
        raise TypeError(f"expected a PEFT model, got {type(inner).__name__}")
    return inner


def extract(model: Any) -> Payload:
    """The trainable adapter state as ``{key: float32 ndarray}`` in sorted key order (copies)."""
    state = get_peft_model_state_dict(unwrap(model))
    return {key: state[key].detach().cpu().numpy().astype(np.float32, copy=True) for key in sorted(state)}


def payload_spec(model: Any) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{key: (shape, dtype)}`` of the payload this model expects."""
    return {key: (value.shape, value.dtype) for key, value in extract(model).items()}


def load(model: Any, payload: Payload) -> None:
    """Copy ``payload`` into the model's adapter, bit for bit. Keys and shapes must match exactly."""
    peft_model = unwrap(model)
    current = get_peft_model_state_dict(peft_model)
    missing = sorted(set(current) - set(payload))
    extra = sorted(set(payload) - set(current))
    if missing or extra:
        raise PayloadError(
            f"adapter payload does not fit the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}; server and client must use the same "
            "`model.name`, `adapter.*` and `task.name`"
        )
    tensors = {}
    for key, value in payload.items():
        if tuple(value.shape) != tuple(current[key].shape):
            raise PayloadError(
                f"adapter payload `{key}` has shape {tuple(value.shape)}, the model expects "
                f"{tuple(current[key].shape)}; check `adapter.rank` on both sides"
            )
        tensors[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    result = set_peft_model_state_dict(peft_model, tensors)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k or "modules_to_save" in k]
    if unexpected:  # pragma: no cover - guarded by the key check above
        raise PayloadError(f"PEFT did not accept payload keys {unexpected[:5]}")


def layout(model: Any) -> dict[str, dict[str, Any]]:
    """Per adapted module: its payload keys for A and B, the LoRA scale and the orientation.

    Returns plain data, ``{module: {"a_key", "b_key", "scale", "fan_in_fan_out"}}``; ``B: (m, r)``,
    ``A: (r, n)``. ``fan_in_fan_out`` marks GPT-2 ``Conv1D`` layers whose weight is stored ``(n, m)``.
    """
    peft_model = unwrap(model)
    keys = set(get_peft_model_state_dict(peft_model))
    result: dict[str, dict[str, Any]] = {}
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
            continue
        a_key, b_key = f"{name}.lora_A.weight", f"{name}.lora_B.weight"
        if a_key not in keys or b_key not in keys:
            raise PayloadError(f"LoRA module {name} has no payload keys {a_key}/{b_key}")
        result[name] = {
            "a_key": a_key,
            "b_key": b_key,
            "scale": float(module.scaling["default"]),
            "fan_in_fan_out": bool(getattr(module, "fan_in_fan_out", False)),
        }
    return dict(sorted(result.items()))
