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
from peft.tuners.tuners_utils import BaseTunerLayer

from adapters.kind_registry import kind_of_layer
from adapters.peft_model import ADAPTER, adapted_layers, unwrap

Payload = dict[str, np.ndarray]
__all__ = ["Payload", "PayloadError", "extract", "frozen_state", "layout", "load", "payload_spec", "shipped_state", "unwrap"]


class PayloadError(ValueError):
    """A payload that does not fit the model (missing or extra keys, wrong shapes or dtypes)."""


def _frozen_prefixes(peft_model: PeftModel) -> tuple[str, ...]:
    """``"<module>.<layer>."`` for every adapter layer PEFT declares frozen (``frozen_peft_weight_names``)."""
    prefixes = []
    for name, module in peft_model.named_modules():
        if isinstance(module, BaseTunerLayer):
            for layer_name in module.frozen_peft_weight_names.get(ADAPTER, ()):
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
    """Per adapted module: its payload keys, the LoRA scale and the orientation.

    Returns plain data, ``{module: {<field>: key, ..., "scale", "fan_in_fan_out", "form"}}`` with the
    fields of the module's adapter kind (``AdapterKind.layout_keys``): ``a_key``/``b_key`` for LoRA
    (``B: (m, r)``, ``A: (r, n)``), ``b_key`` alone for FFA-LoRA (A is frozen), ``r_key`` alone for
    LoRA-SB (``R: (r, r)``; A and B are frozen), and ABBA adds ``a2_key``/``b2_key`` (its second pair;
    ``scale`` is ABBA's ``s``). ``fan_in_fan_out`` marks GPT-2 ``Conv1D`` layers whose weight is
    stored ``(n, m)``; ``form`` is the kind's ``layout_form``, the maths strategies apply to those keys
    (``"pair"``, ``"hadamard-pairs"``, ...). Only keys the payload carries appear.
    """
    peft_model = unwrap(model)
    config = peft_model.peft_config[ADAPTER]
    keys = set(shipped_state(peft_model))
    result: dict[str, dict[str, Any]] = {}
    for name, module in adapted_layers(peft_model).items():
        kind = kind_of_layer(config, module)
        entry = {field: f"{name}.{layer}.weight" for field, layer in kind.layout_keys.items()}
        absent = sorted(key for key in entry.values() if key not in keys)
        if absent:
            raise PayloadError(f"LoRA module {name} ({kind.name}) has no payload keys {absent}")
        result[name] = {
            **entry,
            "scale": float(module.scaling[ADAPTER]),
            "fan_in_fan_out": bool(getattr(module, "fan_in_fan_out", False)),
            "form": kind.layout_form,
        }
    return result
