"""The reference ("alignment") subspace per adapted module, from one of three sources (``docs/tasks.md §5``).

- ``basis``: a safetensors file with ``<module>.U`` ``(m, K)``, ``<module>.S`` ``(K,)`` and
  ``<module>.Vh`` ``(K, n)``: a thin SVD of ΔA (:func:`save_basis` writes one);
- ``adapter``: a PEFT LoRA folder (``adapter_model.safetensors`` + ``adapter_config.json``), taken as
  ΔA = (alpha/r)·B·A per module (e.g. a "safety LoRA", or a trusted probe client's first update);
- ``checkpoint``: an aligned model folder (``*.safetensors``); ΔA = W_aligned - W_base, with W_base
  the run's own frozen base weight.

Module names are compared without PEFT's ``base_model.model.`` prefix, so a basis written from one
run's layout, a PEFT adapter and a plain checkpoint all match the same modules. Every adapted
module must be covered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors.numpy import load_file, save_file

from client.tasks.safety.subspace import Factored, Svd, svd_dense, svd_factored

if TYPE_CHECKING:
    import torch

Reference = dict[str, Svd]
PEFT_PREFIX = "base_model.model."


def module_key(name: str) -> str:
    """``base_model.model.model.layers.0.self_attn.q_proj`` -> ``model.layers.0.self_attn.q_proj``."""
    return name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name


def save_basis(path: str | Path, reference: Reference) -> Path:
    """Write ``reference`` as a ``basis`` safetensors file; returns the path."""
    tensors: dict[str, np.ndarray] = {}
    for module, svd in reference.items():
        key = module_key(module)
        tensors.update({f"{key}.U": svd.U, f"{key}.S": svd.s, f"{key}.Vh": svd.Vh})
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(path))
    return Path(path)


def load_basis(path: str | Path) -> Reference:
    """Read a ``basis`` file (:func:`save_basis`)."""
    tensors = load_file(str(path))
    modules = sorted({key.rsplit(".", 1)[0] for key in tensors})
    reference: Reference = {}
    for module in modules:
        try:
            u, s, vh = (tensors[f"{module}.{part}"].astype(np.float64) for part in ("U", "S", "Vh"))
        except KeyError as exc:
            raise ValueError(f"`safety.reference-path` {path}: module {module} lacks {exc}; a basis needs .U, .S and .Vh") from exc
        reference[module] = Svd(u, s, vh)
    return reference


def load_adapter(folder: str | Path) -> Reference:
    """ΔA = (lora_alpha / r)·B·A of every module of a PEFT LoRA folder, as a thin SVD (factored path)."""
    folder = Path(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    scale = float(config["lora_alpha"]) / float(config["r"])
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    reference: Reference = {}
    for key, a in tensors.items():
        if key.endswith(".lora_A.weight"):
            module = module_key(key[: -len(".lora_A.weight")])
            b = tensors[key.replace(".lora_A.", ".lora_B.")]  # B: (m, r), A: (r, n)
            reference[module] = svd_factored(Factored(scale * b.astype(np.float64), a.astype(np.float64)))
    if not reference:
        raise ValueError(f"`safety.reference-path` {folder} has no lora_A/lora_B weights")
    return reference


def load_checkpoint_delta(folder: str | Path, base: dict[str, np.ndarray], *, max_rank: int) -> Reference:
    """ΔA = W_aligned - W_base for the modules in ``base`` (``module -> (m, n)`` base weight)."""
    aligned: dict[str, np.ndarray] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        aligned.update(load_file(str(file)))
    reference: Reference = {}
    for module, weight in base.items():
        tensor = aligned.get(f"{module_key(module)}.weight")
        if tensor is None:
            raise ValueError(f"`safety.reference-path` {folder} has no weight for {module_key(module)}")
        if tensor.shape != weight.shape:
            raise ValueError(f"{module_key(module)}: aligned {tensor.shape} vs base {weight.shape}; same architecture?")
        reference[module_key(module)] = svd_dense(tensor.astype(np.float64) - weight, max_rank=max_rank)
    return reference


def load_reference(kind: str, path: str, *, base: dict[str, np.ndarray], max_rank: int) -> Reference:
    """The reference for ``safety.reference-kind``/``-path``, restricted to and covering ``base``'s modules."""
    if not path:
        raise ValueError("the safety-* tasks need `safety.reference-path` (a basis file, a PEFT adapter folder "
                         "or an aligned checkpoint folder; see README `Safety subspaces`)")
    if not Path(path).exists():
        raise ValueError(f"`safety.reference-path` = {path!r} does not exist")
    if kind == "basis":
        reference = load_basis(path)
    elif kind == "adapter":
        reference = load_adapter(path)
    elif kind == "checkpoint":
        reference = load_checkpoint_delta(path, base, max_rank=max_rank)
    else:
        raise ValueError(f"`safety.reference-kind` = {kind!r}: use `basis`, `adapter` or `checkpoint`")
    wanted = {module_key(m): w.shape for m, w in base.items()}
    missing = sorted(set(wanted) - set(reference))
    if missing:
        raise ValueError(f"`safety.reference-path` {path} does not cover adapted modules {missing[:3]}...; "
                         "build it for the same model and `adapter.target-modules`")
    for module, shape in wanted.items():
        svd = reference[module]
        if (svd.U.shape[0], svd.Vh.shape[1]) != shape:
            raise ValueError(f"reference {module} is {(svd.U.shape[0], svd.Vh.shape[1])}, the model's weight is {shape}")
    return {m: reference[m] for m in wanted}


def base_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """``module -> (out, in)`` frozen base weight of every LoRA-adapted module of a PEFT model."""
    from peft.tuners.lora import LoraLayer

    weights = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            weight = module.get_base_layer().get_parameter("weight").detach().cpu().numpy().astype(np.float64)
            weights[name] = weight.T if getattr(module, "fan_in_fan_out", False) else weight
    return weights
