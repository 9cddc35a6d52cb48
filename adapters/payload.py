"""The adapter payload: exactly the tensors that travel between server and clients.

The payload is the trainable state of a PEFT model (LoRA A and B of every adapted module, plus a
trained head), named with PEFT's own state-dict keys (``...query.lora_A.weight``), as float32 numpy
arrays in sorted key order, so every process agrees on the layout. ``layout()`` describes it as
plain data (module -> which keys are A and B, the scale, the orientation) for strategies, which
never import torch.

Adapter weights that PEFT declares frozen (a layer's ``frozen_peft_weight_names``: A for FFA-LoRA,
A and B for LoRA-SB) never travel: the payload is the PEFT adapter state minus those, and
``frozen_state`` gives them (for a one-time distribution, see ``adapters.frozen``).

Every function takes the plain PEFT model; Opacus's ``GradSampleModule`` never leaves ``privacy/``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer

Payload = dict[str, np.ndarray]


class PayloadError(ValueError):
    """A payload that does not fit the model (missing or extra keys, wrong shapes or dtypes)."""


def unwrap(model: Any) -> PeftModel:
    """``model`` as a PEFT model; anything else (e.g. Opacus's ``GradSampleModule``, which stays inside
    ``privacy/``: pass ``PrivateTraining.model``) is refused."""
    if not isinstance(model, PeftModel):
        raise TypeError(f"expected a PEFT model, got {type(model).__name__}")
    return model


def _frozen_prefixes(peft_model: PeftModel) -> tuple[str, ...]:
    """``"<module>.<layer>."`` for every adapter layer PEFT declares frozen (``frozen_peft_weight_names``)."""
    prefixes = []
    for name, module in peft_model.named_modules():
        if isinstance(module, BaseTunerLayer):
            for layer_name in module.frozen_peft_weight_names.get("default", ()):
                prefixes.append(f"{name}.{layer_name}.")
    return tuple(prefixes)


def shipped_state(model: Any) -> dict[str, torch.Tensor]:
    """The PEFT adapter state that travels: everything but the frozen adapter weights (live tensors)."""
    peft_model = unwrap(model)
    prefixes = _frozen_prefixes(peft_model)
    return {k: v for k, v in get_peft_model_state_dict(peft_model).items() if not k.startswith(prefixes)}


def frozen_state(model: Any) -> dict[str, torch.Tensor]:
    """The frozen adapter weights that never travel with the payload (live tensors; empty for LoRA)."""
    peft_model = unwrap(model)
    prefixes = _frozen_prefixes(peft_model)
    if not prefixes:
        return {}
    return {k: v for k, v in get_peft_model_state_dict(peft_model).items() if k.startswith(prefixes)}


def extract(model: Any) -> Payload:
    """The trainable adapter state as ``{key: float32 ndarray}`` in sorted key order (copies)."""
    state = shipped_state(model)
    return {key: state[key].detach().cpu().numpy().astype(np.float32, copy=True) for key in sorted(state)}


def payload_spec(model: Any) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{key: (shape, dtype)}`` of the payload this model expects."""
    return {key: (value.shape, value.dtype) for key, value in extract(model).items()}


def load(model: Any, payload: Payload) -> None:
    """Copy ``payload`` into the model's adapter, bit for bit. Keys and shapes must match exactly."""
    peft_model = unwrap(model)
    current = shipped_state(peft_model)
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
    Only the keys the payload carries appear: FFA-LoRA modules have ``b_key`` alone (A is frozen) and
    LoRA-SB modules ``r_key`` alone (``R: (r, r)``; A and B are frozen); ABBA modules add ``a2_key``
    and ``b2_key`` (its second pair; ``scale`` is ABBA's ``s``).
    """
    peft_model = unwrap(model)
    keys = set(shipped_state(peft_model))
    result: dict[str, dict[str, Any]] = {}
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
            continue
        entry: dict[str, Any] = {}
        fields = (("a_key", "lora_A"), ("b_key", "lora_B"), ("r_key", "lora_R"), ("a2_key", "lora_A2"), ("b2_key", "lora_B2"))
        for field, layer_name in fields:
            if f"{name}.{layer_name}.weight" in keys:
                entry[field] = f"{name}.{layer_name}.weight"
        if not entry:
            raise PayloadError(f"LoRA module {name} has no payload keys {name}.lora_A/B/R.weight")
        result[name] = {
            **entry,
            "scale": float(module.scaling["default"]),
            "fan_in_fan_out": bool(getattr(module, "fan_in_fan_out", False)),
        }
    return dict(sorted(result.items()))
