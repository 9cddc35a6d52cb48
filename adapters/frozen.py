"""Frozen adapter factors: distributed once, verified by hash, never part of the per-round payload.

FFA-LoRA freezes A (arXiv 2403.12313 §3) and LoRA-SB / Fed-SB freeze A and B (arXiv 2411.19557 §3,
arXiv 2502.15436 §3; ``docs/algorithms.md §9.3``). Every client MUST hold bit-identical frozen factors, or
aggregating B (FFA) or R (Fed-SB) is no longer exact (``docs/algorithms.md §9.3``). The server sends
:func:`frozen_factors` once; clients install them with :func:`load_frozen_factors` and compare
:func:`factors_hash` with the server's.

Keys are PEFT's state-dict keys (``...q_proj.lora_A.weight``), values float32 ``(r, n)`` for A and
``(m, r)`` for B, like the payload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from adapters.payload import PayloadError, frozen_state
from adapters.peft_model import unwrap


def frozen_factors(model: Any) -> dict[str, np.ndarray]:
    """The frozen adapter weights as ``{key: float32 ndarray}`` in sorted key order (copies).

    Empty for plain LoRA; ``lora_A`` keys for FFA-LoRA; ``lora_A`` and ``lora_B`` keys for LoRA-SB.
    """
    state = frozen_state(model)
    return {key: state[key].detach().cpu().numpy().astype(np.float32, copy=True) for key in sorted(state)}


def hash_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over keys, shapes, dtypes and bytes, in sorted key order (hex digest)."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        digest.update(key.encode() + b"\0")
        digest.update(repr(tuple(value.shape)).encode() + b"\0")
        digest.update(value.dtype.str.encode() + b"\0")
        digest.update(value.tobytes())
    return digest.hexdigest()


def factors_hash(model: Any) -> str:
    """:func:`hash_arrays` of :func:`frozen_factors` (what clients compare with the server's)."""
    return hash_arrays(frozen_factors(model))


def leading_factors(arrays: Mapping[str, np.ndarray], rank: int) -> dict[str, np.ndarray]:
    """The rank-``rank`` leading block of LoRA-SB frozen factors, for a rank-heterogeneous client.

    ``B[:, :rank]`` for ``lora_B`` keys and ``A[:rank, :]`` for ``lora_A`` keys (Fed-SB rank
    heterogeneity, ``docs/algorithms.md §9.4``: B's columns and A's rows are sorted by descending singular
    value, as ``init_from_gradients`` returns them). A client built with ``adapter.rank = rank`` loads
    the result with :func:`load_frozen_factors`; its hash is ``hash_arrays`` of the result.
    """
    out = {}
    for key in sorted(arrays):
        value = arrays[key]
        if ".lora_B." in key:
            out[key] = np.ascontiguousarray(value[:, :rank])  # B: (m, r) -> (m, rank)
        elif ".lora_A." in key:
            out[key] = np.ascontiguousarray(value[:rank, :])  # A: (r, n) -> (rank, n)
        else:
            raise ValueError(f"{key} is neither a lora_A nor a lora_B factor")
        if min(out[key].shape) < rank:
            raise ValueError(f"{key} has rank {min(value.shape)} < the requested {rank}")
    return out


def load_frozen_factors(model: Any, arrays: Mapping[str, np.ndarray], *, expected_hash: str | None = None) -> None:
    """Copy server-sent frozen factors into the model, bit for bit (float32).

    Parameters
    ----------
    model : PeftModel or GradSampleModule
        The adapted model.
    arrays : Mapping[str, numpy.ndarray]
        Exactly the keys of :func:`frozen_factors` with the same shapes.
    expected_hash : str, optional
        The server's :func:`factors_hash`; checked against the arrays before anything is copied.
    """
    if expected_hash is not None and hash_arrays(arrays) != expected_hash:
        raise PayloadError(
            "frozen adapter factors do not match the server's hash; they were corrupted or come from a "
            "different initialisation: request them again from the server"
        )
    peft_model = unwrap(model)
    current = frozen_state(peft_model)
    missing, extra = sorted(set(current) - set(arrays)), sorted(set(arrays) - set(current))
    if missing or extra:
        raise PayloadError(
            f"frozen adapter factors do not fit the model: missing {missing[:5]}, unexpected {extra[:5]}; "
            "server and client must use the same `model.name` and `adapter.*`"
        )
    tensors = {}
    for key, value in arrays.items():
        if tuple(value.shape) != tuple(current[key].shape):
            raise PayloadError(
                f"frozen factor `{key}` has shape {tuple(value.shape)}, the model expects "
                f"{tuple(current[key].shape)}; check `adapter.rank` on both sides"
            )
        tensors[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    # PEFT loads a head (modules_to_save) only from a complete state: complete it with the model's own
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}
    state.update(tensors)
    set_peft_model_state_dict(peft_model, state)
