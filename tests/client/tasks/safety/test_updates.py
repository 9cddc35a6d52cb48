"""Factored updates per adapter kind against dense products; the projection intervention; merging."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adapters.kind_registry import get_adapter_kind
from client.tasks.safety.analysis import analyse_update, inter_client_mso, merge_client_reports
from client.tasks.safety.reference import load_basis, save_basis
from client.tasks.safety.report import SafetyReport
from client.tasks.safety.subspace import Factored, energy_in, svd_dense, svd_factored
from client.tasks.safety.updates import projected_payload, update_factors

M, N, R, S = 24, 20, 3, 0.5
MOD = "base_model.model.layer.q"


def arr(rng, *shape):
    return rng.standard_normal(shape)


def kinds(rng):
    """(layout entry, before, after, frozen, dense update) for each adapter kind."""
    a, b, rr = f"{MOD}.lora_A.weight", f"{MOD}.lora_B.weight", f"{MOD}.lora_R.weight"
    b0, a0, b1, a1 = arr(rng, M, R), arr(rng, R, N), arr(rng, M, R), arr(rng, R, N)
    yield "lora", {"a_key": a, "b_key": b}, {a: a0, b: b0}, {a: a1, b: b1}, {}, S * (b1 @ a1 - b0 @ a0)
    yield "ffa", {"b_key": b}, {b: b0}, {b: b1}, {a: a0}, S * (b1 - b0) @ a0
    r0, r1 = arr(rng, R, R), arr(rng, R, R)
    yield "lora-sb", {"r_key": rr}, {rr: r0}, {rr: r1}, {a: a0, b: b0}, S * b0 @ (r1 - r0) @ a0
    a2, b2 = f"{MOD}.lora_A2.weight", f"{MOD}.lora_B2.weight"
    p0 = {a: a0, b: b0, a2: arr(rng, 2, N), b2: arr(rng, M, 2)}
    p1 = {a: a1, b: b1, a2: arr(rng, 2, N), b2: arr(rng, M, 2)}
    dense = S * ((p1[b] @ p1[a]) * (p1[b2] @ p1[a2]) - (p0[b] @ p0[a]) * (p0[b2] @ p0[a2]))
    yield "abba", {"a_key": a, "b_key": b, "a2_key": a2, "b2_key": b2}, p0, p1, {}, dense


@pytest.mark.parametrize("index", range(4))
def test_factors_match_dense_updates(index):
    name, entry, before, after, frozen, dense = list(kinds(np.random.default_rng(index)))[index]
    factors = update_factors({MOD: {**entry, "scale": S}}, before, after, frozen, get_adapter_kind(name))
    np.testing.assert_allclose(factors[MOD].dense(), dense, atol=1e-10, err_msg=name)


def test_projection_is_exact_where_promised():
    rng = np.random.default_rng(5)
    basis = np.linalg.qr(arr(rng, M, 4))[0]
    p = basis @ basis.T
    # FFA: exact for any mode
    ffa, lora = get_adapter_kind("ffa"), get_adapter_kind("lora")
    _, entry, before, after, frozen, dense = list(kinds(rng))[1]
    layout = {MOD: {**entry, "scale": S}}
    for mode, expected in (("same", p @ dense), ("orth", dense - p @ dense), ("opp", -p @ dense)):
        payload, lost = projected_payload(layout, before, after, frozen, {MOD: basis}, mode, ffa)
        got = update_factors(layout, before, payload, frozen, ffa)[MOD].dense()
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert lost == 0.0
    # LoRA from B0 = 0 (round 1): the rank-r re-factorisation is exact
    _, entry, before, after, frozen, _ = list(kinds(rng))[0]
    before = {k: (np.zeros_like(v) if "lora_B" in k else v) for k, v in before.items()}
    layout = {MOD: {**entry, "scale": S}}
    dense = update_factors(layout, before, after, frozen, lora)[MOD].dense()
    payload, lost = projected_payload(layout, before, after, frozen, {MOD: basis}, "same", lora)
    np.testing.assert_allclose(update_factors(layout, before, payload, frozen, lora)[MOD].dense(), p @ dense, atol=1e-5)
    assert lost < 1e-12 and payload[entry["b_key"]].shape == (M, R)
    # ... and from B0 != 0 it is a rank-r truncation whose loss is reported
    _, entry, before, after, frozen, _ = list(kinds(rng))[0]
    assert projected_payload({MOD: {**entry, "scale": S}}, before, after, frozen, {MOD: basis}, "same", lora)[1] > 0


def test_analysis_planted_and_merge(tmp_path):
    rng = np.random.default_rng(7)
    q0 = np.linalg.qr(arr(rng, M, M))[0]
    ref = {"layer.q": svd_dense(q0[:, :3] @ np.diag([3.0, 2.0, 1.0]) @ np.linalg.qr(arr(rng, N, 3))[0].T)}
    ref = load_basis(save_basis(tmp_path / "ref.safetensors", ref))  # through the file format
    inside = {MOD: Factored(q0[:, :3] @ arr(rng, 3, 2), arr(rng, 2, N))}
    outside = {MOD: Factored(q0[:, 3:] @ arr(rng, M - 3, 2), arr(rng, 2, N))}
    reports = []
    for node, update in enumerate((inside, inside, outside)):
        rep = analyse_update(update, ref, rhos=(0.15,), etas=(0.9, 1.0), report_rank=4)
        reports.append((node, 10, rep))
    m_in, m_out = reports[0][2]["metrics"], reports[2][2]["metrics"]
    assert m_in["energy_rho_0.15"] == pytest.approx(1.0, abs=1e-6) and m_out["energy_rho_0.15"] == pytest.approx(0.0, abs=1e-6)
    assert m_in["enrichment_rho_0.15"] == pytest.approx(M / 3, rel=1e-6)  # k = round(0.15·20) = 3
    assert m_in["mso_eta_1"] == pytest.approx(1.0, abs=1e-6) and m_out["mso_eta_1"] == pytest.approx(0.0, abs=1e-6)
    assert m_in["mso_baseline_eta_1"] == pytest.approx(3 / M)
    matrix = inter_client_mso([r[2]["bases"] for r in reports], 1.0)
    assert matrix[0, 2] == pytest.approx(0.0, abs=1e-6) and matrix[0, 1] == pytest.approx(1.0)  # the same update twice
    metrics, detail = merge_client_reports(reports, etas=(1.0,))
    assert metrics["safety_energy_rho_0.15"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["safety_inter_mso_eta_1_min"] == pytest.approx(0.0, abs=1e-6)
    assert set(detail["clients"]) == {"0", "1", "2"} and "layer.q" in detail["clients"]["0"]["modules"]
    svd = svd_factored(inside[MOD])
    assert energy_in(ref["layer.q"].U, svd) == pytest.approx(svd.energy)


def test_a_zero_update_reports_only_defined_metrics_as_strict_json(tmp_path):
    # a client whose update is zero (e.g. no step changed the adapter): every energy ratio is 0/0
    rng = np.random.default_rng(3)
    ref = {"layer.q": svd_dense(arr(rng, M, 3) @ arr(rng, 3, N))}
    zero = {MOD: Factored(np.zeros((M, 2)), arr(rng, 2, N))}
    rep = analyse_update(zero, ref, rhos=(0.15,), etas=(0.9,), report_rank=4)
    assert "energy_rho_0.15" not in rep["metrics"] and "cos_to_ref" not in rep["metrics"]
    assert "energy_rho_0.15" not in rep["modules"]["layer.q"] and rep["modules"]["layer.q"]["energy"] == 0.0
    json.dumps(rep, allow_nan=False)  # what the client's report record requires
    SafetyReport.model_validate(rep)  # what the server checks before merging
    nonzero = analyse_update({MOD: Factored(arr(rng, M, 2), arr(rng, 2, N))}, ref, rhos=(0.15,), etas=(0.9,), report_rank=4)
    metrics, _ = merge_client_reports([(0, 10, rep), (1, 30, nonzero)], etas=(0.9,))
    assert metrics["safety_cos_to_ref"] == pytest.approx(nonzero["metrics"]["cos_to_ref"])  # the zero client does not dilute it
