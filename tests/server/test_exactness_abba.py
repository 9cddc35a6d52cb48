"""Exact federated ABBA through the ServerApp (``docs/algorithms.md §10.3``): the merged global model equals
the weighted mean of the clients' effective weights; FedIT's naive factor average does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adapters.lora import AdapterSpec, build_adapted_model
from adapters.payload import layout
from client.app import app as client_app
from client.base_sync import STATE_DELTA
from server.app import run
from contract import parse_run_config
from strategies.maths.hadamard import AbbaFactors, abba_update
from tests.server.test_exactness import MODULES, merged_weights, pristine, round_replies, weights_of
from tests.strategies.fake_grid import FakeGrid

RUN = {
    "model.name": "tiny-llama",
    "task.name": "arithmetic",
    "adapter.name": "abba",
    "adapter.rank": 4,
    "adapter.alpha": 2.0,
    "train.local-steps": 3,
    "train.lr": 0.02,
    "eval.max-examples": 16,
    "run-name": "abba",
}


def scales() -> dict[str, float]:
    model, _ = build_adapted_model("tiny-llama", AdapterSpec(rank=4, alpha=2.0, method="abba"), kind="causal-lm",
                                   num_labels=None, init_seed=42)
    return {m: entry["scale"] for m, entry in layout(model).items()}


def client_updates(replies: list, module: str, scale: float) -> list[np.ndarray]:
    out = []
    for _, reply in replies:
        arrays = {k: v.numpy().astype(np.float64) for k, v in reply.content["arrays"].items()}
        f = AbbaFactors(*(arrays[f"{module}.{name}.weight"] for name in ("lora_B", "lora_A", "lora_B2", "lora_A2")))
        out.append(abba_update(f, scale))  # s·(B1A1)⊙(B2A2): (m, n)
    return out


def mean_update(grid: FakeGrid, rnd: int, module: str, scale: float) -> np.ndarray:
    """Σ p_i s·(B1ᵢA1ᵢ)⊙(B2ᵢA2ᵢ) over round ``rnd``'s replies: (m, n)."""
    replies = round_replies(grid, rnd)
    return sum(p * u for p, u in zip(weights_of(replies), client_updates(replies, module, scale), strict=True))


@pytest.fixture(scope="module")
def w0() -> dict[str, np.ndarray]:
    return pristine()


def test_fedex_abba_global_model_is_the_mean_of_client_models_over_two_rounds(tmp_path: Path, w0: dict[str, np.ndarray]) -> None:
    values = {**RUN, "strategy.name": "fedex", "num-server-rounds": 2, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 3, run_config=values)
    run(grid, parse_run_config(values))
    s = scales()
    merged = merged_weights(tmp_path / "abba")
    for m in MODULES:
        d1, d2 = mean_update(grid, 1, m, s[m]), mean_update(grid, 2, m, s[m])  # each round's exact mean update
        assert np.abs(d2).max() > 0
        # node 100's base D1 (the round-1 residual) turns round 1's factor means into the mean update
        held = {k: v.numpy() for k, v in grid.contexts[100].state[STATE_DELTA].items()}[m].astype(np.float64)
        replies = round_replies(grid, 2)
        instruction = replies[0][0].content["arrays"]
        start = AbbaFactors(*(instruction[f"{m}.{n}.weight"].numpy().astype(np.float64)
                              for n in ("lora_B", "lora_A", "lora_B2", "lora_A2")))
        np.testing.assert_allclose(held + abba_update(start, s[m]), d1, rtol=0, atol=1e-5 * np.abs(d1).max())
        # round 2's clients trained on W0 + D1, so the exact global model is W0 + D1 + their mean update
        np.testing.assert_allclose(merged[m], w0[m] + held + d2, rtol=0, atol=1e-4 * max(np.abs(d2).max(), 1e-3))


def test_fedit_abba_naive_average_misses_the_mean_update(tmp_path: Path, w0: dict[str, np.ndarray]) -> None:
    values = {**RUN, "strategy.name": "fedit", "num-server-rounds": 1, "output-dir": str(tmp_path)}
    grid = FakeGrid(client_app, 3, run_config=values)
    run(grid, parse_run_config(values))
    s = scales()
    merged = merged_weights(tmp_path / "abba")
    gaps = []
    for m in MODULES:
        ideal = mean_update(grid, 1, m, s[m])
        gaps.append(np.abs(merged[m] - w0[m] - ideal).max() / np.abs(ideal).max())
    assert max(gaps) > 1e-2  # docs/algorithms.md §10.3: averaging the four factors is not exact
