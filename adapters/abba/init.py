"""ABBA's SVD-mixed initialisation (ABBA, arXiv 2505.14238; ``docs/algorithms.md §10.2``).

1. Rank-``r1`` truncated SVD of ``W0: (m, n)`` in fp32 (float64 stays float64), ``W0 ≈ U Σ Vᵀ``:
   the reference's randomised ``svd_lowrank`` (``q = r1``, ``niter = 10``) or an exact LAPACK SVD.
2. ``B1 = U Σ^{1/2}``, ``A1 = Σ^{1/2} Vᵀ``: ``B1 A1`` is the best rank-``r1`` approximation of
   ``W0``; ``W0`` itself is not modified (unlike PiSSA).
3. ``A2 ~ U(−√(6/n), √(6/n))``: Kaiming-uniform with torch's defaults (``a = 0``, ``fan_in = n``,
   gain √2, bound ``gain·√(3/n)``), of shape ``(r2, n)`` (the reference wrongly uses ``r1``,
   ``docs/algorithms.md §10.1``). ``B2 = 0``, so ``ΔW = 0`` at initialisation.

Randomness (A2, the randomised SVD) comes from the caller's ``torch.Generator``; the global RNG is
untouched.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch

from adapters.lora_sb.init import _randomized_svd

SVD_NITER = 10  # the reference's svd_lowrank(niter=10), docs/algorithms.md §10.2 step 1


class ABBAFactors(NamedTuple):
    """One module's ABBA factors: ``B1: (m, r1)``, ``A1: (r1, n)``, ``B2: (m, r2)``, ``A2: (r2, n)``."""

    B1: torch.Tensor
    A1: torch.Tensor
    B2: torch.Tensor
    A2: torch.Tensor


def kaiming_uniform_bound(fan_in: int) -> float:
    """``√(6 / fan_in)``: torch's ``kaiming_uniform_`` bound with ``a = 0`` (``docs/algorithms.md §10.2`` step 3)."""
    return math.sqrt(6.0 / fan_in)


def init_factors(
    weight: torch.Tensor,
    rank1: int,
    rank2: int,
    *,
    generator: torch.Generator,
    svd: Literal["exact", "randomized"] = "randomized",
    niter: int = SVD_NITER,
) -> ABBAFactors:
    """ABBA's initial factors for ``W0 = weight: (m, n)`` (always the ``(out, in)`` orientation).

    Returns the factors in the SVD's dtype (float32, or float64 for a float64 weight); the caller
    casts them to the adapter's dtype.
    """
    if svd not in ("exact", "randomized"):
        raise ValueError(f"svd = {svd!r} must be 'exact' or 'randomized'")
    m, n = weight.shape
    if not (1 <= rank1 <= min(m, n) and rank2 >= 1):
        raise ValueError(f"ABBA ranks r1 = {rank1}, r2 = {rank2} need 1 <= r1 <= min(m, n) = {min(m, n)}, r2 >= 1")
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32  # SVD in fp32 (docs/algorithms.md §10.2)
    w0 = weight.detach().to(device="cpu", dtype=dtype)
    if svd == "exact":
        u, s, vh = torch.linalg.svd(w0, full_matrices=False)
    else:
        u, s, vh = _randomized_svd(w0, rank1, niter=niter, generator=generator)
    u, s, vh = u[:, :rank1], s[:rank1], vh[:rank1, :]  # U: (m, r1), Σ: (r1,), Vᵀ: (r1, n)
    root = s.clamp_min(0).sqrt()
    b1 = u * root  # B1 = U Σ^{1/2}: (m, r1)
    a1 = root[:, None] * vh  # A1 = Σ^{1/2} Vᵀ: (r1, n)
    bound = kaiming_uniform_bound(n)
    a2 = (torch.rand(rank2, n, generator=generator, dtype=dtype) * 2 - 1) * bound  # A2: (r2, n)
    b2 = torch.zeros(m, rank2, dtype=dtype)  # B2: (m, r2)
    return ABBAFactors(B1=b1, A1=a1, B2=b2, A2=a2)
