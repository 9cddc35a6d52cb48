"""A client's adapter update as a factored matrix per module, and the projection intervention.

Per adapted module (``layout`` entry; ``B: (m, r)``, ``A: (r, n)``, ``s`` the scale), with 0 the
received global payload and 1 the locally trained one:

=========== ============================== =====================================================
kind        update Δ = W_1 - W_0             factors (left, right)
=========== ============================== =====================================================
lora        s(B1 A1 - B0 A0)               ([sB1, -sB0], [A1; A0])                    rank <= 2r
ffa         s(B1 - B0) A                   (s(B1 - B0), A)           A frozen
lora-sb     s B (R1 - R0) A                (s B (R1 - R0), A)        B, A frozen
abba        s((B1A1)⊙(B2A2)) difference    row-wise Khatri-Rao factors, rank <= 2 r1 r2
=========== ============================== =====================================================

The projection ``P`` (``same``/``orth``/``opp`` of :func:`~client.tasks.safety.subspace.project_left`)
acts on the output side, so for FFA-LoRA it is exact on B. For LoRA the target adapter
``B0A0 + PΔ/s`` has rank up to 3r and is **re-factorised by a truncated SVD back to rank r** (exact
when B0A0 = 0, i.e. in round 1; otherwise the discarded energy is reported). For LoRA-SB only R
travels: ``R' = R0 + B⁺ P B (R1 - R0)``, the least-squares fit, which also projects onto span(B).
ABBA updates are analysed but not projected.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from client.tasks.safety.subspace import Factored, ProjectMode, project_left, svd_factored


def _khatri_rao_rows(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Row-wise Khatri-Rao: ``(m, r1 r2)`` with ``[i, p·r2 + q] = b1[i, p]·b2[i, q]``."""
    return (b1[:, :, None] * b2[:, None, :]).reshape(b1.shape[0], -1)


def update_factors(layout: dict[str, dict[str, Any]], before: dict[str, np.ndarray], after: dict[str, np.ndarray],
                   frozen: dict[str, np.ndarray]) -> dict[str, Factored]:
    """``module -> Factored`` update (module docstring); ``frozen`` holds the non-travelling factors."""
    out: dict[str, Factored] = {}
    f64 = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    for module, entry in layout.items():
        s = float(entry["scale"])
        if "a2_key" in entry:  # ABBA: s·(B1A1)⊙(B2A2) = s·KR(B1, B2)·KR(A1ᵀ, A2ᵀ)ᵀ
            def kr(p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
                b1, a1, b2, a2 = (f64(p[entry[k]]) for k in ("b_key", "a_key", "b2_key", "a2_key"))
                return _khatri_rao_rows(b1, b2), _khatri_rao_rows(a1.T, a2.T).T
            (l1, r1), (l0, r0) = kr(after), kr(before)
            out[module] = Factored(np.c_[s * l1, -s * l0], np.r_[r1, r0])
        elif "r_key" in entry:
            b, a = f64(frozen[f"{module}.lora_B.weight"]), f64(frozen[f"{module}.lora_A.weight"])
            out[module] = Factored(s * b @ (f64(after[entry["r_key"]]) - f64(before[entry["r_key"]])), a)
        elif "a_key" in entry:
            b1, a1, b0, a0 = (f64(p[entry[k]]) for p in (after, before) for k in ("b_key", "a_key"))
            out[module] = Factored(np.c_[s * b1, -s * b0], np.r_[a1, a0])
        else:
            a = f64(frozen[f"{module}.lora_A.weight"])
            out[module] = Factored(s * (f64(after[entry["b_key"]]) - f64(before[entry["b_key"]])), a)
    return out


def projected_payload(layout: dict[str, dict[str, Any]], before: dict[str, np.ndarray], after: dict[str, np.ndarray],
                      frozen: dict[str, np.ndarray], bases: dict[str, np.ndarray],
                      mode: ProjectMode) -> tuple[dict[str, np.ndarray], float]:
    """The payload whose update is ``P Δ`` per module (module docstring), and the share of the target
    energy the rank-r re-factorisation / least-squares fit could not represent (0 when exact)."""
    payload = {k: v.copy() for k, v in after.items()}
    lost = total = 0.0
    for module, entry in layout.items():
        basis = bases[module]  # L: (m, k)
        if "a2_key" in entry:
            raise ValueError("`safety.project` does not support ABBA adapters; set `safety.project = \"none\"`")
        if "r_key" in entry:
            b = np.asarray(frozen[f"{module}.lora_B.weight"], dtype=np.float64)  # B: (m, r)
            r0, r1 = (np.asarray(p[entry["r_key"]], dtype=np.float64) for p in (before, after))
            target = project_left(basis, b @ (r1 - r0), mode)  # (m, r): P B ΔR
            step = np.linalg.lstsq(b, target, rcond=None)[0]
            payload[entry["r_key"]] = (r0 + step).astype(np.float32)
            lost += float(np.sum((b @ step - target) ** 2))
            total += float(np.sum(target**2))
        elif "a_key" in entry:
            b1, a1, b0, a0 = (np.asarray(p[entry[k]], dtype=np.float64) for p in (after, before) for k in ("b_key", "a_key"))
            r = b1.shape[1]
            # B0A0 + P(B1A1 - B0A0) as factors [B0, PB1, -PB0] @ [A0; A1; A0]: rank <= 3r
            svd = svd_factored(Factored(np.c_[b0, project_left(basis, b1, mode), -project_left(basis, b0, mode)],
                                        np.r_[a0, a1, a0]))
            k = min(r, svd.s.size)
            root = np.sqrt(svd.s[:k])
            new_b, new_a = np.zeros_like(b1), np.zeros_like(a1)
            new_b[:, :k], new_a[:k] = svd.U[:, :k] * root, root[:, None] * svd.Vh[:k]
            payload[entry["b_key"]], payload[entry["a_key"]] = new_b.astype(np.float32), new_a.astype(np.float32)
            lost += float(np.sum(svd.s[k:] ** 2))
            total += float(np.sum(svd.s**2))
        else:
            b0, b1 = (np.asarray(p[entry["b_key"]], dtype=np.float64) for p in (before, after))
            payload[entry["b_key"]] = (b0 + project_left(basis, b1 - b0, mode)).astype(np.float32)
    return payload, (lost / total if total > 0 else 0.0)
