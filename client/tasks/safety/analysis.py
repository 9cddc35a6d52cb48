"""Per-client metrics against the reference, and their server-side merge (``docs/tasks.md §5``).

Client side (:func:`analyse_update`), over the adapted modules ("Frobenius over the concatenation"
where the paper sums across tensors):

- ``energy_rho_<ρ>`` = Σ‖L_k L_kᵀ Δ‖² / Σ‖Δ‖², k = min(round(ρ·min(m, n)), reference rank);
- ``enrichment_rho_<ρ>`` = that over its isotropic expectation Σ(k/m)‖Δ‖² / Σ‖Δ‖² (≈ 1: no preference);
- ``cos_to_ref`` = Σ⟨Δ, ΔA⟩ / sqrt(Σ‖Δ‖² Σ‖ΔA‖²);
- ``mso_eta_<η>`` and ``mso_baseline_eta_<η>``: MSO of the η-energy bases of Δ and ΔA, and its random
  baseline max(k1, k2)/m, both averaged over modules;
- ``principal_cos_mean``/``_max``/``_median``: principal cosines between the η_max bases, pooled.

The client also sends its leading left singular vectors (at most ``report_rank`` per module) and
singular values; the server (:func:`merge_client_reports`) computes the inter-client MSO from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from client.tasks.safety.reference import Reference, module_key
from client.tasks.safety.subspace import (
    Factored,
    Svd,
    energy_basis,
    energy_in,
    energy_rank,
    inner,
    mso,
    mso_baseline,
    principal_cosines,
    rho_rank,
    svd_factored,
)

PREFIX = "safety_"


def _tag(value: float) -> str:
    return f"{value:g}"


def ref_basis(svd: Svd, rho: float, shape: tuple[int, int]) -> np.ndarray:
    """The reference top-k directions for ``ρ`` (k capped by the reference's rank)."""
    return svd.U[:, : min(rho_rank(rho, *shape), svd.s.size)]


def analyse_update(updates: dict[str, Factored], reference: Reference, *, rhos: Sequence[float],
                   etas: Sequence[float], report_rank: int) -> dict[str, Any]:
    """``{"metrics": {...}, "modules": {module: {...}}, "bases": {module: {"U", "s"}}}`` (JSON-able)."""
    totals = {"energy": 0.0, "ref_energy": 0.0, "inner": 0.0}
    in_top = {rho: 0.0 for rho in rhos}
    iso = {rho: 0.0 for rho in rhos}
    msos: dict[float, list[float]] = {eta: [] for eta in etas}
    baselines: dict[float, list[float]] = {eta: [] for eta in etas}
    cosines: list[np.ndarray] = []
    modules: dict[str, Any] = {}
    bases: dict[str, Any] = {}
    for module, delta in updates.items():
        ref = reference[module_key(module)]
        svd = svd_factored(delta)
        m, n = delta.shape
        energy = svd.energy
        totals["energy"] += energy
        totals["ref_energy"] += ref.energy
        totals["inner"] += inner(delta, ref.factored())
        detail: dict[str, Any] = {"energy": energy, "rank": int(svd.s.size)}
        for rho in rhos:
            basis = ref_basis(ref, rho, (m, n))
            e = energy_in(basis, svd)
            in_top[rho] += e
            iso[rho] += basis.shape[1] / m * energy
            detail[f"energy_rho_{_tag(rho)}"] = e / energy if energy > 0 else float("nan")
        for eta in etas:
            q, q_ref = energy_basis(svd, eta), energy_basis(ref, eta)
            if q.shape[1] and q_ref.shape[1]:
                msos[eta].append(mso(q, q_ref))
                baselines[eta].append(mso_baseline(q.shape[1], q_ref.shape[1], m))
                detail[f"mso_eta_{_tag(eta)}"] = msos[eta][-1]
        pc = principal_cosines(energy_basis(svd, max(etas)), energy_basis(ref, max(etas)))
        cosines.append(pc)
        detail["principal_cos"] = pc.tolist()
        modules[module_key(module)] = detail
        k = min(report_rank, svd.s.size)
        bases[module_key(module)] = {"U": np.round(svd.U[:, :k], 7).tolist(), "s": svd.s[:k].tolist()}
    metrics: dict[str, float] = {}
    energy = totals["energy"]
    for rho in rhos:
        metrics[f"energy_rho_{_tag(rho)}"] = in_top[rho] / energy if energy > 0 else float("nan")
        metrics[f"enrichment_rho_{_tag(rho)}"] = in_top[rho] / iso[rho] if iso[rho] > 0 else float("nan")
    norms = energy * totals["ref_energy"]
    metrics["cos_to_ref"] = totals["inner"] / float(np.sqrt(norms)) if norms > 0 else float("nan")
    for eta in etas:
        metrics[f"mso_eta_{_tag(eta)}"] = float(np.mean(msos[eta])) if msos[eta] else float("nan")
        metrics[f"mso_baseline_eta_{_tag(eta)}"] = float(np.mean(baselines[eta])) if baselines[eta] else float("nan")
    pooled = np.concatenate(cosines) if cosines else np.zeros(0)
    if pooled.size:
        metrics.update({"principal_cos_mean": float(pooled.mean()), "principal_cos_max": float(pooled.max()),
                        "principal_cos_median": float(np.median(pooled))})
    return {"metrics": _defined(metrics), "modules": {k: _defined(v) for k, v in modules.items()}, "bases": bases}


def _defined(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the undefined ones: a ratio over a zero update (or zero reference) energy is
    NaN, and a report must be strict JSON (``docs/trust.md §5``), so an undefined metric is left out, as
    if not measured; the server's merge averages each metric over the clients that report it."""
    return {k: v for k, v in values.items() if not (isinstance(v, float) and not np.isfinite(v))}


def inter_client_mso(bases: Sequence[dict[str, Any]], eta: float) -> np.ndarray:
    """``(C, C)`` matrix of module-averaged MSO between the clients' η-bases (from their reports)."""
    count = len(bases)
    matrix = np.eye(count)
    for i in range(count):
        for j in range(i + 1, count):
            values = []
            for module, left in bases[i].items():
                right = bases[j].get(module)
                if right is None:
                    continue
                qi = np.asarray(left["U"])[:, : energy_rank(np.asarray(left["s"]), eta)]
                qj = np.asarray(right["U"])[:, : energy_rank(np.asarray(right["s"]), eta)]
                if qi.shape[1] and qj.shape[1]:
                    values.append(min(mso(qi, qj), 1.0))  # the bases travel rounded to 1e-7
            matrix[i, j] = matrix[j, i] = float(np.mean(values)) if values else float("nan")
    return matrix


def merge_client_reports(reports: Sequence[tuple[int, int, dict[str, Any]]], *, etas: Sequence[float]) -> tuple[dict[str, float], dict[str, Any]]:
    """Server side: ``(node, num_examples, report)`` per client -> round metrics (``safety_`` prefixed;
    client metrics are example-weighted means) and the detail for ``plugins/round-<N>.json``."""
    usable = [(node, n, rep) for node, n, rep in reports if rep and "metrics" in rep]
    metrics: dict[str, float] = {}
    detail: dict[str, Any] = {"clients": {}, "inter_client_mso": {}}
    if not usable:
        return metrics, detail
    weights = np.array([max(n, 0) for _, n, _ in usable], dtype=np.float64)
    weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(usable), 1 / len(usable))
    names = sorted({k for _, _, rep in usable for k in rep["metrics"]})
    for name in names:
        values = np.array([rep["metrics"].get(name, np.nan) for _, _, rep in usable], dtype=np.float64)
        finite = np.isfinite(values)
        if finite.any():
            metrics[PREFIX + name] = float(np.sum(values[finite] * weights[finite]) / weights[finite].sum())
    for node, n, rep in usable:
        detail["clients"][str(node)] = {"num_examples": n, "metrics": rep["metrics"], "modules": rep.get("modules", {})}
    if len(usable) > 1:
        for eta in etas:
            matrix = inter_client_mso([rep.get("bases", {}) for _, _, rep in usable], eta)
            off = matrix[~np.eye(len(usable), dtype=bool)]
            off = off[np.isfinite(off)]
            if off.size:
                metrics[f"{PREFIX}inter_mso_eta_{_tag(eta)}_mean"] = float(off.mean())
                metrics[f"{PREFIX}inter_mso_eta_{_tag(eta)}_min"] = float(off.min())
            detail["inter_client_mso"][_tag(eta)] = {"nodes": [node for node, _, _ in usable], "matrix": matrix.tolist()}
    return metrics, detail
