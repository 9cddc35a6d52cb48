"""Fault injection (``faults.*``): the run finishes, the rows count what was dropped, and the exact
strategies stay exact over the clients that did reply.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from peft import PeftModel

from adapters.models import build_base_model
from client.app import app as client_app
from client.faults import draw_fault
from server.app import run
from server.run_folder import read_rounds
from contract import parse_run_config
from tests.server.test_exactness import MODULES, frozen_of, mean_update_and_residual, merged_weights, round_replies
from tests.strategies.fake_grid import FakeGrid

FAULTY = {
    "model.name": "tiny-llama", "task.name": "arithmetic", "adapter.rank": 4, "adapter.alpha": 8.0,
    "train.local-steps": 2, "train.lr": 0.02, "eval.max-examples": 16, "run-name": "faults", "num-server-rounds": 2,
    "faults.fail-fraction": 0.2, "faults.malformed-fraction": 0.1, "data.partitioner": "iid",
}
NODES = 10


def _survivors(grid: FakeGrid, rnd: int) -> list:
    return [(i, r) for i, r in round_replies(grid, rnd) if not r.has_error()
            and all(np.isfinite(a.numpy()).all() for a in r.content["arrays"].values())]


@pytest.fixture(scope="module")
def w0() -> dict[str, np.ndarray]:
    model = build_base_model("tiny-llama", kind="causal-lm").model
    return {m: model.get_submodule(m.removeprefix("base_model.model.")).weight.detach().double().numpy() for m in MODULES}


def test_fault_draws_are_deterministic_and_near_the_fractions() -> None:
    config = parse_run_config(FAULTY)
    draws = [draw_fault(config, server_round=r, partition_id=p) for r in range(1, 51) for p in range(40)]
    assert draws == [draw_fault(config, server_round=r, partition_id=p) for r in range(1, 51) for p in range(40)]
    assert abs(draws.count("fail") / len(draws) - 0.2) < 0.03 and abs(draws.count("malformed") / len(draws) - 0.1) < 0.03
    assert draws.count("slow") == 0


@pytest.mark.parametrize("strategy", ["fedex", "fedsb"])
def test_run_completes_counts_the_dropped_and_stays_exact_over_survivors(strategy: str, tmp_path: Path, w0: dict[str, np.ndarray]) -> None:
    values = {**FAULTY, "strategy.name": strategy, "output-dir": str(tmp_path)}
    config = parse_run_config(values)
    grid = FakeGrid(client_app, NODES, run_config=values)
    run(grid, config)
    rows = read_rounds(tmp_path / "faults" / "rounds.jsonl")
    for rnd in (1, 2):
        faults = [draw_fault(config, server_round=rnd, partition_id=p) for p in range(NODES)]
        expected_dropped = sum(f in ("fail", "malformed") for f in faults)
        assert rows[rnd]["dropped"] == expected_dropped and rows[rnd]["clients"] == NODES - expected_dropped
        assert len(_survivors(grid, rnd)) == NODES - expected_dropped
    assert sum(r["dropped"] for r in rows) >= 2  # the seed really injects faults in this run
    dropped = json.loads((tmp_path / "faults" / "summary.json").read_text())["dropped"]
    assert dropped["total"] == sum(r["dropped"] for r in rows) == sum(dropped["by_reason"].values())
    assert set(dropped["by_reason"]) <= {"error-reply", "array-non-finite"}  # faults.fail / faults.malformed
    # exactness over the survivors of the last round (round 1's fold is in the base both ways)
    if strategy == "fedex":
        merged = merged_weights(tmp_path / "faults")
        for m in MODULES:
            exact2, _ = mean_update_and_residual(_survivors(grid, 2), m)
            _, res1 = mean_update_and_residual(_survivors(grid, 1), m)
            np.testing.assert_allclose(merged[m], w0[m] + res1 + exact2, rtol=0, atol=1e-4 * np.abs(exact2).max())
    else:
        frozen = frozen_of(grid)
        replies = _survivors(grid, 2)
        n = np.array([r.content["metrics"]["num-examples"] for _, r in replies], dtype=np.float64)
        p = n / n.sum()
        merged = PeftModel.from_pretrained(build_base_model("tiny-llama", kind="causal-lm").model, tmp_path / "faults" / "adapter").merge_and_unload()
        for m in MODULES:
            b, a = frozen[f"{m}.lora_B.weight"], frozen[f"{m}.lora_A.weight"]  # (m, r), (r, n)
            mean = sum(pi * b @ r.content["arrays"][f"{m}.lora_R.weight"].numpy().astype(np.float64) @ a for pi, (_, r) in zip(p, replies, strict=True))
            got = merged.get_submodule(m.removeprefix("base_model.model.")).weight.detach().double().numpy()
            np.testing.assert_allclose(got, w0[m] + mean, rtol=0, atol=1e-5 * max(np.abs(mean).max(), 1e-3))


class LossyGrid(FakeGrid):
    """Loses the train reply of partition 0 every round (a client that never answers in time)."""

    def pull_messages(self, message_ids):  # noqa: ANN001, ANN201 - Grid API
        replies = list(super().pull_messages(message_ids))
        return [r for r in replies if not (r.metadata.message_type == "train" and self.contexts[r.metadata.src_node_id].node_config["partition-id"] == 0)]


def test_a_reply_missing_at_the_round_timeout_is_counted_as_timed_out(tmp_path: Path) -> None:
    values = {**FAULTY, "faults.fail-fraction": 0.0, "faults.malformed-fraction": 0.0, "strategy.name": "fedit",
              "output-dir": str(tmp_path), "num-server-rounds": 1, "round-timeout": 2.0}
    run(LossyGrid(client_app, 3, run_config=values), parse_run_config(values))
    row = read_rounds(tmp_path / "faults" / "rounds.jsonl")[1]
    assert row["timed_out"] == 1 and row["clients"] == 2 and row["dropped"] == 0
