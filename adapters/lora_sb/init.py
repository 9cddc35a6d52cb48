"""LoRA-SB initialisation from a gradient estimate (arXiv 2411.19557 §3.2; ``docs/algorithms.md §8.2``).

1. :func:`estimate_gradients` sums ``∂L/∂W`` of every adapted weight over the first ``num_samples``
   examples, each batch's mean loss divided again by its size (``docs/algorithms.md §8.2`` step 1).
2. :func:`sign_update` turns the *summed* gradient into one simulated first Adam step,
   ``ΔŴ = −η_eff · sign(ΣG)`` (``docs/algorithms.md §8.2`` step 2; the sign is taken after summing), with
   ``η_eff`` from :func:`effective_lr`.
3. :func:`init_from_gradients` takes the rank-r truncated SVD ``ΔŴ ≈ U_r Σ_r V_rᵀ`` and returns
   ``B = U_r``, ``R0 = Σ_r / s``, ``A = V_rᵀ`` per module (``docs/algorithms.md §8.2`` steps 4-5), so ``s·B R0 A`` is the best
   rank-r approximation of ``ΔŴ`` and the model starts at ``W0 + [ΔŴ]_r``.
4. :func:`install_factors` writes ``(B, R, A)`` into a LoRA-SB model.

In a federation (Fed-SB, arXiv 2502.15436; ``docs/algorithms.md §9.2``) clients run step 1 and upload
the summed raw gradients; the server sums them, runs steps 2-3 and ships B and A once
(``adapters.frozen``) and R0 as the first payload.

All randomness (the randomised SVD) uses a local ``torch.Generator``; the global RNG is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from adapters.custom_lora import factor_weight
from adapters.lora_sb.layer import LoraSBLinear
from adapters.peft_model import ADAPTER, adapted_layers, unwrap


class SBFactors(NamedTuple):
    """One module's LoRA-SB factors, float32: ``B: (m, r)``, ``R: (r, r)``, ``A: (r, n)``."""

    B: np.ndarray
    R: np.ndarray
    A: np.ndarray


def effective_lr(
    lr: float, *, num_train: int, batch_size: int, epochs: int = 1, warmup_ratio: float | None = None
) -> float:
    """``η_eff`` of the simulated first step (``docs/algorithms.md §8.2`` step 3).

    ``lr / (warmup_ratio · T_est)`` with ``T_est = ceil(num_train / batch_size) · epochs`` counted in
    *estimation-loader* batches, as the reference does (LoRA-SB, Fed-SB non-DP); without a warmup
    ratio ``lr / T_est`` (Fed-SB DP). Example: 1e-4, 50,000, 3, 1, 0.02 gives about 3.0e-7.
    """
    if lr <= 0 or num_train <= 0 or batch_size <= 0 or epochs <= 0:
        raise ValueError("effective_lr needs lr, num_train, batch_size and epochs > 0")
    t_est = math.ceil(num_train / batch_size) * epochs
    return lr / (warmup_ratio * t_est) if warmup_ratio else lr / t_est


def sign_update(grad: np.ndarray | torch.Tensor, *, eta: float) -> torch.Tensor:
    """``ΔŴ = −η · sign(G)`` elementwise, float64 (zero gradients give zero; ``docs/algorithms.md §8.2`` step 2)."""
    if not eta > 0:
        raise ValueError(f"the simulated step size eta = {eta} must be > 0 (see effective_lr)")
    return -eta * torch.sign(torch.as_tensor(np.asarray(grad), dtype=torch.float64))


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        return _batch_len(next(v for v in batch.values() if isinstance(v, torch.Tensor)))
    if isinstance(batch, (tuple, list)):
        return _batch_len(batch[0])
    raise TypeError(f"cannot tell the size of a batch of type {type(batch).__name__}")


def _take(batch: Any, k: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[:k]
    if isinstance(batch, Mapping):
        return {key: _take(v, k) if isinstance(v, torch.Tensor) else v for key, v in batch.items()}
    return type(batch)(_take(v, k) for v in batch)


def estimate_gradients(
    model: Any,
    batches: Iterable[Any],
    loss_fn: Callable[[Any, Any], torch.Tensor],
    *,
    num_samples: int | None = None,
) -> dict[str, np.ndarray]:
    """Summed gradient ``G = Σ_batches ∂(mean loss / batch size)/∂W`` of every adapted base weight.

    Plain autograd on the base weights ``W0`` with every other parameter frozen and the adapters
    disabled (the reference has none attached; ``docs/algorithms.md §8.2`` step 1), in eval mode; requires-grad flags, the
    train/eval mode and ``.grad`` are restored afterwards.

    Parameters
    ----------
    model : PeftModel or GradSampleModule
        A model adapted with PEFT LoRA (any kind); its adapted modules name the result.
    batches : Iterable
        Tensors, mappings of tensors or tuples of tensors, batch-first.
    loss_fn : Callable[[model, batch], torch.Tensor]
        The batch's *mean* loss, called with the (unwrapped) PEFT model (e.g.
        ``lambda m, b: m(**b).loss``).
    num_samples : int, optional
        Stop after this many examples, cutting the last batch to fit (``docs/algorithms.md §8.2`` step 1); None: all batches.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``{module: G}`` with ``G: (m, n)`` in every orientation (``Conv1D`` is transposed back),
        float32 (float64 for a float64 model), sorted by module name.
    """
    peft_model = unwrap(model)
    layers = adapted_layers(peft_model)
    weights = {name: layer.get_base_layer().get_parameter("weight") for name, layer in layers.items()}
    packed = [name for name, w in weights.items() if not w.is_floating_point()]
    if packed:
        raise ValueError(
            f"LoRA-SB's initialisation needs the gradient of the base weights, which a quantized base does not have "
            f"({packed[0]}); for Fed-SB use `model.quantization = none` (e.g. `model.dtype = bfloat16`)"
        )
    flags = {p: p.requires_grad for p in peft_model.parameters()}
    old_grads = {name: w.grad for name, w in weights.items()}
    was_training = peft_model.training
    seen = 0
    try:
        for p in flags:
            p.requires_grad_(False)
        for w in weights.values():
            w.grad = None
            w.requires_grad_(True)
        peft_model.eval()
        with torch.enable_grad(), peft_model.disable_adapter():
            for batch in batches:
                if num_samples is not None and seen >= num_samples:
                    break
                size = _batch_len(batch)
                if num_samples is not None and seen + size > num_samples:
                    size = num_samples - seen
                    batch = _take(batch, size)
                # docs/algorithms.md §8.2 step 1: the batch's mean loss divided again by the batch size; .grad sums over batches
                (loss_fn(peft_model, batch) / size).backward()
                seen += size
        if seen == 0:
            raise ValueError("estimate_gradients saw no examples: `batches` is empty")
        out = {}
        for name, layer in layers.items():
            base_grad = weights[name].grad
            if base_grad is None:
                raise ValueError(f"estimate_gradients: the loss does not reach the base weight of {name}")
            grad = base_grad.detach()
            grad = grad.T if getattr(layer, "fan_in_fan_out", False) else grad  # Conv1D stores (n, m)
            dtype = torch.float64 if grad.dtype == torch.float64 else torch.float32
            out[name] = grad.to(dtype).cpu().numpy().copy()  # G: (m, n)
        return out
    finally:
        for name, w in weights.items():
            w.grad = old_grads[name]
        for p, flag in flags.items():
            p.requires_grad_(flag)
        peft_model.train(was_training)


def _randomized_svd(
    mat: torch.Tensor, q: int, *, niter: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Halko et al. range finder with ``niter`` power iterations, as ``torch.svd_lowrank`` with ``q``
    columns (the reference's ``q = r, niter = 10``, ``docs/algorithms.md §8.2`` step 4) but drawing from ``generator``."""
    omega = torch.randn(mat.shape[1], q, generator=generator, dtype=mat.dtype)  # (n, q)
    basis = torch.linalg.qr(mat @ omega).Q  # (m, q)
    for _ in range(niter):
        basis = torch.linalg.qr(mat.T @ basis).Q  # (n, q)
        basis = torch.linalg.qr(mat @ basis).Q  # (m, q)
    u_small, s, vh = torch.linalg.svd(basis.T @ mat, full_matrices=False)  # (q, n) = U_s S Vh
    return basis @ u_small, s, vh


def init_from_gradients(
    grads: Mapping[str, np.ndarray],
    rank: int,
    *,
    eta: float,
    scale: float = 1.0,
    svd: Literal["exact", "randomized"] = "exact",
    seed: int = 0,
    niter: int = 10,
) -> dict[str, SBFactors]:
    """LoRA-SB factors ``(B, R0, A)`` per module from summed gradients (``docs/algorithms.md §8.2`` steps 2-5).

    Parameters
    ----------
    grads : Mapping[str, numpy.ndarray]
        ``{module: ΣG}``, ``(m, n)`` each: one process's :func:`estimate_gradients`, or the sum of
        the clients' (Fed-SB: sum the raw gradients *then* take the sign, ``docs/algorithms.md §9.2``).
    rank : int
        ``r``; at most ``min(m, n)``.
    eta : float
        ``η_eff`` of the simulated step (:func:`effective_lr`).
    scale : float (default: 1.0)
        The adapter scale ``s``; ``R0 = Σ_r / s`` so that ``s·B R0 A = [ΔŴ]_r`` (``docs/algorithms.md §8.2`` step 5).
    svd : {"exact", "randomized"} (default: "exact")
        ``exact``: full LAPACK SVD, the true best rank-r approximation and no randomness.
        ``randomized``: the reference's randomised SVD (``q = r``, ``niter``) from a local generator
        seeded with ``seed``, for large matrices.
    seed, niter : int
        The randomised SVD's generator seed and power iterations.

    Returns
    -------
    dict[str, SBFactors]
        Sorted by module: ``B: (m, r)`` orthonormal columns, ``R: (r, r)`` diagonal, non-negative
        and non-increasing, ``A: (r, n)`` orthonormal rows; float32. Singular-vector signs are made
        canonical (each column of B has its largest-magnitude entry positive).
    """
    if svd not in ("exact", "randomized"):
        raise ValueError(f"svd = {svd!r} must be 'exact' or 'randomized'")
    if not scale > 0:
        raise ValueError(f"the adapter scale s = {scale} must be > 0")
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, SBFactors] = {}
    for name in sorted(grads):
        delta = sign_update(grads[name], eta=eta)  # ΔŴ: (m, n)
        if delta.ndim != 2 or not 1 <= rank <= min(delta.shape):
            shape = tuple(delta.shape)
            raise ValueError(f"module {name}: rank {rank} must be in [1, min(m, n)] for a gradient of shape {shape}")
        if svd == "exact":
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        else:
            u, s, vh = _randomized_svd(delta, rank, niter=niter, generator=generator)
        u, s, vh = u[:, :rank], s[:rank], vh[:rank, :]  # U_r: (m, r), Σ_r: (r,), V_rᵀ: (r, n)
        signs = torch.sign(u.gather(0, u.abs().argmax(dim=0, keepdim=True))).squeeze(0)
        signs[signs == 0] = 1.0
        u, vh = u * signs, vh * signs[:, None]  # flips pair up: U Σ Vᵀ is unchanged
        out[name] = SBFactors(
            B=u.to(torch.float32).numpy().copy(),
            R=torch.diag(s / scale).to(torch.float32).numpy(),
            A=vh.to(torch.float32).numpy().copy(),
        )
    return out


def _sb_weights(model: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``{module: (B, R, A)}`` parameters of every LoRA-SB module, sorted."""
    return {
        name: (factor_weight(layer.lora_B, ADAPTER), factor_weight(layer.lora_R, ADAPTER),
               factor_weight(layer.lora_A, ADAPTER))
        for name, layer in adapted_layers(model).items()
        if isinstance(layer, LoraSBLinear) and ADAPTER in getattr(layer, "lora_R", {})
    }


def install_factors(model: Any, factors: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Write ``(B, R, A)`` into every LoRA-SB module (copies, in the model's dtype).

    ``factors`` MUST name every adapted module exactly once (``adapted_layers`` names), e.g. the
    output of :func:`init_from_gradients`.
    """
    weights = _sb_weights(model)
    missing, extra = sorted(set(weights) - set(factors)), sorted(set(factors) - set(weights))
    if missing or extra or not weights:
        raise ValueError(f"LoRA-SB factors do not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for name, targets in weights.items():
            for label, target, value in zip("BRA", targets, factors[name], strict=True):
                if tuple(np.shape(value)) != tuple(target.shape):
                    shape = tuple(np.shape(value))
                    raise ValueError(f"module {name}: {label} has shape {shape}, expected {tuple(target.shape)}")
                target.copy_(torch.as_tensor(np.asarray(value)).to(target.dtype))


def read_factors(model: Any) -> dict[str, SBFactors]:
    """The installed ``(B, R, A)`` of every LoRA-SB module, float32 copies, sorted by module."""
    return {
        name: SBFactors(*(w.detach().float().cpu().numpy().copy() for w in weights))
        for name, weights in _sb_weights(model).items()
    }


def initialise_lora_sb(
    model: Any,
    batches: Iterable[Any],
    loss_fn: Callable[[Any, Any], torch.Tensor],
    *,
    eta: float,
    num_samples: int | None = None,
    svd: Literal["exact", "randomized"] = "exact",
    seed: int = 0,
) -> dict[str, SBFactors]:
    """Centralised LoRA-SB set-up: estimate, factorise and install (``docs/algorithms.md §8.2``); returns the factors."""
    rank = {layer.r["default"] for layer in adapted_layers(model).values()}
    scale = {layer.scaling["default"] for layer in adapted_layers(model).values()}
    if len(rank) != 1 or len(scale) != 1:
        raise ValueError(f"LoRA-SB needs one rank and scale across modules, got ranks {rank}, scales {scale}")
    grads = estimate_gradients(model, batches, loss_fn, num_samples=num_samples)
    factors = init_from_gradients(grads, rank.pop(), eta=eta, scale=scale.pop(), svd=svd, seed=seed)
    install_factors(model, factors)
    return factors
