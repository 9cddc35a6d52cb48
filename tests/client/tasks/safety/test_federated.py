"""``safety-arithmetic`` through Flower (FakeGrid + the real ServerApp and ClientApp), tiny-llama.

The reference is a stored basis with a planted rank-4 subspace per adapted module. With
``safety.project = same`` every client sends only the part of its LoRA update inside the top-k
reference directions, so the energy there is 1; with ``orth`` it is 0 (round 1 from B = 0: the
re-factorisation is exact). The metrics must land in ``rounds.jsonl`` and the detail in
``plugins/round-001.json``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from adapters.tiny_llama import build_config, build_tokenizer
from client.app import app as client_app
from client.tasks.safety.reference import save_basis
from client.tasks.safety.subspace import Svd
from server.app import run
from server.run_folder import read_rounds
from contract import parse_run_config
from tests.server.conftest import TINY_RUN
from tests.strategies.fake_grid import FakeGrid


def planted_basis(path):
    config = build_config(build_tokenizer())
    rng = np.random.default_rng(0)
    head = config.hidden_size // config.num_attention_heads
    shapes = {"q_proj": (config.hidden_size, config.hidden_size),
              "v_proj": (config.num_key_value_heads * head, config.hidden_size)}
    reference = {}
    for layer in range(config.num_hidden_layers):
        for proj, (m, n) in shapes.items():
            u = np.linalg.qr(rng.standard_normal((m, 4)))[0]
            vh = np.linalg.qr(rng.standard_normal((n, 4)))[0].T
            reference[f"model.layers.{layer}.self_attn.{proj}"] = Svd(u, np.array([4.0, 3.0, 2.0, 1.0]), vh)
    return save_basis(path, reference)


@pytest.fixture(scope="module")
def basis(tmp_path_factory):
    return planted_basis(tmp_path_factory.mktemp("ref") / "basis.safetensors")


def federate(tmp_path, basis, project):
    values = {**TINY_RUN, "task.name": "safety-arithmetic", "num-server-rounds": 1, "train.local-steps": 2,
              "train.batch-size": 8, "eval.max-examples": 8, "output-dir": str(tmp_path), "run-name": project,
              "safety.reference-path": str(basis), "safety.project": project, "safety.project-rho": 0.01,
              "safety.rhos": "0.01,0.25", "safety.etas": "0.5,0.9"}
    folder = run(FakeGrid(client_app, 3, run_config=values), parse_run_config(values)).path
    return folder, read_rounds(folder / "rounds.jsonl")[-1]


@pytest.mark.parametrize(("project", "energy"), [("same", 1.0), ("orth", 0.0)])
def test_projected_updates_land_in_rounds_and_detail(tmp_path, basis, project, energy):
    folder, row = federate(tmp_path, basis, project)
    assert row["safety_energy_rho_0.01"] == pytest.approx(energy, abs=1e-4)
    assert row["safety_project_refactor_loss"] == pytest.approx(0.0, abs=1e-8)
    keys = ("safety_energy_rho_0.25", "safety_cos_to_ref", "safety_mso_eta_0.9", "safety_mso_baseline_eta_0.9",
            "safety_principal_cos_mean", "safety_inter_mso_eta_0.9_mean", "safety_inter_mso_eta_0.9_min",
            "eval_safety_act_mso_eta_0.9", "eval_safety_act_mso_baseline_eta_0.9")
    for key in keys:
        assert np.isfinite(row[key]), key
    for key in keys[2:]:
        assert -1e-9 <= row[key] <= 1 + 1e-9, key
    assert row["safety_energy_rho_0.25"] >= row["safety_energy_rho_0.01"] - 1e-9 or project == "orth"
    detail = json.loads((folder / "plugins" / "round-001.json").read_text())
    assert len(detail["clients"]) == 3
    modules = next(iter(detail["clients"].values()))["modules"]
    assert len(modules) == 8 and all("principal_cos" in m for m in modules.values())
    assert len(detail["inter_client_mso"]["0.9"]["matrix"]) == 3
