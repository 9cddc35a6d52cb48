"""A client's adapter update as a factored matrix per module, and the projection intervention.

Per adapted module (``layout`` entry; ``B: (m, r)``, ``A: (r, n)``, ``s`` the scale), with 0 the
received global payload and 1 the locally trained one, the adapter kind gives the update
``Δ = W_1 - W_0`` as factors (``AdapterKind.factored_update``):

=========== ============================== =====================================================
kind        update Δ = W_1 - W_0             factors (left, right)
=========== ============================== =====================================================
lora        s(B1 A1 - B0 A0)               ([sB1, -sB0], [A1; A0])                    rank <= 2r
ffa         s(B1 - B0) A                   (s(B1 - B0), A)           A frozen
lora-sb     s B (R1 - R0) A                (s B (R1 - R0), A)        B, A frozen
abba        s((B1A1)⊙(B2A2)) difference    row-wise Khatri-Rao factors, rank <= 2 r1 r2
=========== ============================== =====================================================

The projection ``P`` (``same``/``orth``/``opp`` of :func:`~client.tasks.safety.subspace.project_left`)
acts on the output side; the kind re-expresses ``P Δ`` in its payload (``AdapterKind.left_projected``).
For FFA-LoRA it is exact on B. For LoRA the target adapter ``B0A0 + PΔ/s`` has rank up to 3r and is
**re-factorised by a truncated SVD back to rank r** (exact when B0A0 = 0, i.e. in round 1; otherwise
the discarded energy is reported). For LoRA-SB only R travels: ``R' = R0 + B⁺ P B (R1 - R0)``, the
least-squares fit, which also projects onto span(B). ABBA updates are analysed but not projected.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from adapters.adapter_kind import AdapterKind
from client.tasks.safety.subspace import Factored, ProjectMode, project_left


def update_factors(layout: dict[str, dict[str, Any]], before: dict[str, np.ndarray], after: dict[str, np.ndarray],
                   frozen: dict[str, np.ndarray], kind: AdapterKind) -> dict[str, Factored]:
    """``module -> Factored`` update of a ``kind`` adapter (module docstring); ``frozen`` holds the
    non-travelling factors."""
    return {module: Factored(*kind.factored_update(module, entry, before, after, frozen))
            for module, entry in layout.items()}


def projected_payload(layout: dict[str, dict[str, Any]], before: dict[str, np.ndarray], after: dict[str, np.ndarray],
                      frozen: dict[str, np.ndarray], bases: dict[str, np.ndarray],
                      mode: ProjectMode, kind: AdapterKind) -> tuple[dict[str, np.ndarray], float]:
    """The payload whose update is ``P Δ`` per module (module docstring), and the share of the target
    energy the rank-r re-factorisation / least-squares fit could not represent (0 when exact)."""
    payload = {k: v.copy() for k, v in after.items()}
    lost = total = 0.0
    for module, entry in layout.items():
        basis = bases[module]  # L: (m, k)
        projected = kind.left_projected(module, entry, before, after, frozen, partial(project_left, basis, mode=mode))
        if projected is None:
            raise ValueError(f"`safety.project` does not support {kind.name} adapters (its kind cannot re-express "
                             "a projected update); set `safety.project = \"none\"`")
        payload.update(projected.arrays)
        lost += projected.lost
        total += projected.total
    return payload, (lost / total if total > 0 else 0.0)
