"""The TokenSwap distribution swap, a pure batched function (arXiv 2502.05159; ``docs/tasks.md §4``).

Given the main model's next-token distribution ``p_main`` and the auxiliary model's ``p_aux``, the
probabilities of the grammar tokens G are taken from the auxiliary model:

- ``mass-preserving`` (default; what the authors' library does): for ``t`` in G,
  ``p(t) = p_aux(t) * S_M / S_a`` with ``S_M = sum_G p_main`` and ``S_a = sum_G p_aux``; off G,
  ``p(t) = p_main(t)``. The main model decides *how much* mass goes to grammar words, the auxiliary
  model *which* one; the result already sums to 1 (renormalising only removes rounding).
- ``naive`` (the abstract read literally): ``p(t) = p_aux(t)`` on G, then renormalise the whole
  vector, which also rescales every non-G probability by ``1 / (1 - S_M + S_a)``.
"""

from __future__ import annotations

from typing import Literal

import torch

SwapMode = Literal["mass-preserving", "naive"]
MODES: tuple[str, ...] = ("mass-preserving", "naive")


def swap_distribution(
    p_main: torch.Tensor,
    p_aux: torch.Tensor,
    g_main: torch.Tensor,
    g_aux: torch.Tensor,
    mode: SwapMode = "mass-preserving",
) -> torch.Tensor:
    """The swapped next-token distribution, shape ``p_main.shape``.

    Parameters
    ----------
    p_main : Tensor ``(..., V_main)``
        Main-model probabilities (rows sum to 1).
    p_aux : Tensor ``(..., V_aux)``
        Auxiliary-model probabilities over its own vocabulary (same leading shape).
    g_main, g_aux : LongTensor ``(G,)``
        Aligned ids of the grammar words in each vocabulary (``words.aligned_token_sets``).
    mode : {"mass-preserving", "naive"}
        The combination rule (module docstring).

    If the auxiliary model puts no mass on G (``S_a == 0``) the main model's G probabilities are kept.
    """
    if mode not in MODES:
        raise ValueError(f"`tokenswap.mode` = {mode!r}: use one of {list(MODES)}")
    if g_main.shape != g_aux.shape or g_main.ndim != 1:
        raise ValueError(f"g_main {tuple(g_main.shape)} and g_aux {tuple(g_aux.shape)} must be equal 1-D id vectors")
    if p_main.shape[:-1] != p_aux.shape[:-1]:
        raise ValueError(f"leading shapes differ: p_main {tuple(p_main.shape)}, p_aux {tuple(p_aux.shape)}")
    if g_main.numel() == 0:
        return p_main.clone()
    g_main = g_main.to(p_main.device)
    q = p_aux[..., g_aux.to(p_aux.device)].to(p_main.dtype)  # (..., G)
    s_aux = q.sum(dim=-1, keepdim=True)  # (..., 1)
    out = p_main.clone()
    if mode == "mass-preserving":
        s_main = p_main[..., g_main].sum(dim=-1, keepdim=True)
        # S_a == 0: nothing to redistribute by, keep the main model's own G probabilities
        swapped = torch.where(s_aux > 0, q * s_main / s_aux.clamp_min(torch.finfo(q.dtype).tiny), p_main[..., g_main])
        out[..., g_main] = swapped
    else:
        out[..., g_main] = q
    return out / out.sum(dim=-1, keepdim=True)
