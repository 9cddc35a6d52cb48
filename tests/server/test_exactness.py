"""Model-level exactness through the real ServerApp/ClientApp path (in-process grid).

FedEx-LoRA and FLoRA: after each round the global model's effective weights equal the weighted
mean of the clients' effective weights, also with partial participation; FedIT differs from that
by exactly the residual ``s·(Σ p_i B_i A_i − B̄ Ā)``.

What moves into the base each round: FedEx-LoRA folds the residual, FLoRA the whole mean update.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from adapters.models import build_base_model
from client.app import app as client_app
from client.base_sync import STATE_DELTA, STATE_META
from server.app import run
from contract import parse_run_config
from tests.strategies.fake_grid import FakeGrid

RUN = {
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "adapter.rank": 4,
    "adapter.alpha": 8.0,
    "train.local-steps": 3,
    "train.lr": 0.02,
    "eval.max-examples": 16,
    "run-name": "exact",
}
MODULES = [f"base_model.model.model.layers.{i}.self_attn.{p}" for i in range(4) for p in ("q_proj", "v_proj")]
SCALE = 8.0 / 4


def pristine() -> dict[str, np.ndarray]:
    model = build_base_model("tiny-llama", kind="causal-lm").model
    return {m: model.get_submodule(m.removeprefix("base_model.model.")).weight.detach().double().numpy() for m in MODULES}


def round_replies(grid: FakeGrid, rnd: int) -> list:
    return [(i, r) for i, r in grid.log if int(i.content["config"]["server-round"]) == rnd]


def weights_of(replies: list) -> np.ndarray:
    n = np.array([r.content["metrics"]["num-examples"] for _, r in replies], dtype=np.float64)
    return n / n.sum()


def factors(reply, module: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = reply.content["arrays"]
    return arrays[f"{module}.lora_A.weight"].numpy().astype(np.float64), arrays[f"{module}.lora_B.weight"].numpy().astype(np.float64)


def mean_update_and_residual(replies: list, module: str) -> tuple[np.ndarray, np.ndarray]:
    p = weights_of(replies)
    pairs = [factors(r, module) for _, r in replies]
    exact = sum(pi * b @ a for pi, (a, b) in zip(p, pairs, strict=True))  # Σ p_i B_i A_i: (m, n)
    a_bar = sum(pi * a for pi, (a, _) in zip(p, pairs, strict=True))  # (r, n)
    b_bar = sum(pi * b for pi, (_, b) in zip(p, pairs, strict=True))  # (m, r)
    return SCALE * exact, SCALE * (exact - b_bar @ a_bar)


def merged_weights(path: Path) -> dict[str, np.ndarray]:
    model = AutoModelForCausalLM.from_pretrained(path / "merged")
    return {m: model.get_submodule(m.removeprefix("base_model.model.")).weight.detach().double().numpy() for m in MODULES}


@pytest.fixture(scope="module")
def w0() -> dict[str, np.ndarray]:
    return pristine()


EXACT = ["fedex", "flora"]


def base_step(strategy: str, replies: list, module: str) -> np.ndarray:
    exact, residual = mean_update_and_residual(replies, module)
    return residual if strategy == "fedex" else exact


@pytest.mark.parametrize("strategy", EXACT)
def test_one_round_global_model_is_the_mean_of_client_models(strategy: str, tmp_path: Path, w0: dict[str, np.ndarray]) -> None:
    values = {**RUN, "strategy.name": strategy, "num-server-rounds": 1, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 3, run_config=values)
    run(grid, parse_run_config(values))
    replies = round_replies(grid, 1)
    merged = merged_weights(tmp_path / "exact")
    worst = 0.0
    for module in MODULES:
        exact, residual = mean_update_and_residual(replies, module)
        assert np.abs(residual).max() > 1e-6  # the clients really disagree: naive averaging would be off
        err = np.abs(merged[module] - (w0[module] + exact)).max()
        worst = max(worst, err / np.abs(exact).max())
    assert worst < 1e-4, worst  # fp32 weights, fp32 wire


@pytest.mark.parametrize("strategy", EXACT)
def test_logits_equal_those_of_the_mean_effective_model(strategy: str, tmp_path: Path, w0: dict[str, np.ndarray]) -> None:
    values = {**RUN, "strategy.name": strategy, "num-server-rounds": 1, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 3, run_config=values)
    run(grid, parse_run_config(values))
    replies = round_replies(grid, 1)
    ideal = build_base_model("tiny-llama", kind="causal-lm").model
    with torch.no_grad():
        for module in MODULES:
            exact, _ = mean_update_and_residual(replies, module)
            ideal.get_submodule(module.removeprefix("base_model.model.")).weight.copy_(torch.from_numpy(w0[module] + exact))
    got = AutoModelForCausalLM.from_pretrained(tmp_path / "exact" / "merged")
    ids = torch.tensor([[5, 40, 77, 120, 9, 33]])
    with torch.no_grad():
        np.testing.assert_allclose(got(input_ids=ids).logits.numpy(), ideal(input_ids=ids).logits.numpy(), rtol=1e-4, atol=1e-5)


def test_fedit_differs_from_the_mean_by_exactly_the_residual(tmp_path: Path, w0: dict[str, np.ndarray]) -> None:
    values = {**RUN, "strategy.name": "fedit", "num-server-rounds": 1, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 3, run_config=values)
    run(grid, parse_run_config(values))
    assert not (tmp_path / "exact" / "merged").exists()  # FedIT never changes the base
    base = build_base_model("tiny-llama", kind="causal-lm").model
    fedit = PeftModel.from_pretrained(base, tmp_path / "exact" / "adapter").merge_and_unload()
    replies = round_replies(grid, 1)
    for module in MODULES:
        exact, residual = mean_update_and_residual(replies, module)
        effective = fedit.get_submodule(module.removeprefix("base_model.model.")).weight.detach().double().numpy()
        np.testing.assert_allclose(effective + residual, w0[module] + exact, rtol=0, atol=1e-5 * np.abs(exact).max())


@pytest.mark.parametrize("rank", [4, 160], ids=["factored-deltas", "dense-deltas"])
@pytest.mark.parametrize("strategy", EXACT)
def test_stays_exact_over_three_rounds_with_half_the_clients(strategy: str, rank: int, tmp_path: Path, w0: dict[str, np.ndarray]) -> None:
    # rank 160, 2 clients a round: the deltas' factors, (K-1)·r = 160 columns of m + n = 512, exceed the dense 256x256
    values = {**RUN, "strategy.name": strategy, "num-server-rounds": 3, "fraction-train": 0.5, "output-dir": str(tmp_path),
              "adapter.rank": rank, "adapter.alpha": SCALE * rank}
    grid = FakeGrid(client_app, 4, run_config=values)
    run(grid, parse_run_config(values))
    # the test's own bookkeeping of the base: D_t = D_{t-1} + s·ΔW_res(round t)
    deltas = [{m: np.zeros_like(w0[m]) for m in MODULES}]
    participants = []
    for rnd in (1, 2, 3):
        replies = round_replies(grid, rnd)
        participants.append({i.metadata.dst_node_id for i, _ in replies})
        deltas.append({m: deltas[-1][m] + base_step(strategy, replies, m) for m in MODULES})
    assert participants[0] != participants[1] or participants[1] != participants[2]  # someone sat out
    forms = {key.rsplit("#", 1)[1] for i, _ in grid.log if "base-delta" in i.content for key in i.content["base-delta"].keys()}
    assert forms == ({"D"} if rank == 160 else {"U", "V"})  # the delta form this case is about
    # every node holds exactly the server's base of the version it last trained on
    for node_id, context in grid.contexts.items():
        version = int(context.state[STATE_META]["base-version"]) if STATE_META in context.state else 0
        last = max((t for t, nodes in enumerate(participants) if node_id in nodes), default=None)
        assert version == (last if last is not None else 0)
        if version:
            held = {k: v.numpy() for k, v in context.state[STATE_DELTA].items()}
            for m in MODULES:
                np.testing.assert_allclose(held[m], deltas[version][m], rtol=0, atol=1e-6)
    # and the final global model is the mean of the last round's client models
    merged = merged_weights(tmp_path / "exact")
    for m in MODULES:
        exact, _ = mean_update_and_residual(round_replies(grid, 3), m)
        np.testing.assert_allclose(merged[m], w0[m] + deltas[2][m] + exact, rtol=0, atol=1e-4 * max(np.abs(exact).max(), 1e-3))


def frozen_of(grid: FakeGrid) -> dict[str, np.ndarray]:
    first = next(i for i, _ in grid.log if "frozen-factors" in i.content)
    return {k: v.numpy().astype(np.float64) for k, v in first.content["frozen-factors"].items()}


@pytest.mark.parametrize("strategy", ["ffa", "fedsb"])
def test_frozen_factor_strategies_global_model_is_the_mean_of_client_models(
    strategy: str, tmp_path: Path, w0: dict[str, np.ndarray]
) -> None:
    values = {**RUN, "strategy.name": strategy, "num-server-rounds": 1, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 3, run_config=values)
    run(grid, parse_run_config(values))
    frozen = frozen_of(grid)
    replies = round_replies(grid, 1)
    p = weights_of(replies)
    scale = SCALE if strategy == "ffa" else 1.0  # LoRA-SB fixes s = 1
    # the exported adapter is a plain PEFT LoRA (Fed-SB: B' = B·R) that any PEFT user can load
    base = build_base_model("tiny-llama", kind="causal-lm").model
    merged = PeftModel.from_pretrained(base, tmp_path / "exact" / "adapter").merge_and_unload()
    for module in MODULES:
        a = frozen[f"{module}.lora_A.weight"]  # (r, n), identical for every client
        if strategy == "ffa":
            client_updates = [scale * r.content["arrays"][f"{module}.lora_B.weight"].numpy().astype(np.float64) @ a for _, r in replies]
        else:
            b = frozen[f"{module}.lora_B.weight"]  # (m, r)
            client_updates = [b @ r.content["arrays"][f"{module}.lora_R.weight"].numpy().astype(np.float64) @ a for _, r in replies]
        mean_update = sum(pi * u for pi, u in zip(p, client_updates, strict=True))
        assert np.abs(client_updates[0] - client_updates[1]).max() > 1e-7  # clients really differ
        got = merged.get_submodule(module.removeprefix("base_model.model.")).weight.detach().double().numpy()
        np.testing.assert_allclose(got, w0[module] + mean_update, rtol=0, atol=1e-5 * max(np.abs(mean_update).max(), 1e-3))


@pytest.mark.parametrize("strategy", ["ffa", "fedsb"])
def test_frozen_factors_are_sent_once_per_node_and_identical(strategy: str, tmp_path: Path) -> None:
    values = {**RUN, "strategy.name": strategy, "num-server-rounds": 2, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 3, run_config=values)
    run(grid, parse_run_config(values))
    sent = [(i.metadata.dst_node_id, int(i.content["config"]["server-round"])) for i, _ in grid.log if "frozen-factors" in i.content]
    assert sorted(sent) == [(node, 1) for node in sorted(grid.contexts)]  # round 1 only, every node once
    hashes = {i.content["config"]["frozen-hash"] for i, _ in grid.log}
    assert len(hashes) == 1  # the same factors all run long
    import json

    rows = [json.loads(line) for line in (tmp_path / "exact" / "rounds.jsonl").read_text().splitlines()]
    assert rows[1]["bytes_setup"] > 0 and rows[2]["bytes_setup"] == 0


def test_fedsb_federated_init_builds_b_and_a_from_the_clients_summed_gradients(tmp_path: Path, w0: dict[str, np.ndarray]) -> None:
    from adapters.lora_sb import effective_lr, init_from_gradients

    values = {**RUN, "strategy.name": "fedsb", "adapter.init": "federated", "adapter.init-examples": 8,
              "num-server-rounds": 1, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 3, run_config=values)
    run(grid, parse_run_config(values))
    uploads = [r for i, r in grid.log if i.metadata.message_type == "train.gradient_estimate"]
    assert len(uploads) == 3
    summed = {}
    for reply in uploads:
        for module, g in reply.content["arrays"].items():
            summed[module] = summed.get(module, 0) + g.numpy().astype(np.float64)
    seen = sum(int(r.content["metrics"]["num-examples"]) for r in uploads)
    expected = init_from_gradients(summed, 4, eta=effective_lr(0.02, num_train=seen, batch_size=16), seed=42)
    frozen = frozen_of(grid)
    for module, factors in expected.items():
        np.testing.assert_array_equal(frozen[f"{module}.lora_B.weight"], factors.B.astype(np.float64))
        np.testing.assert_array_equal(frozen[f"{module}.lora_A.weight"], factors.A.astype(np.float64))
    import json

    row0 = json.loads((tmp_path / "exact" / "rounds.jsonl").read_text().splitlines()[0])
    assert row0["bytes_up"] > 0 and row0["bytes_setup"] == row0["bytes_up"] + row0["bytes_down"]
