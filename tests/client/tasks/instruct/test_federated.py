"""``instruct`` through Flower in process: the real ServerApp + ClientApp on a FakeGrid, tiny-llama,
a local folder of JSONL files; then the same with DP-SGD."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from client.app import app as client_app
from contract import parse_run_config
from server.app import run
from server.run_folder import read_rounds
from tests.strategies.fake_grid import FakeGrid


def write_folder(root: Path) -> Path:
    """Two sources: copy a word (``echo``) and say its length (``count``), 40 rows each."""
    rng = random.Random(0)
    folder = root / "data"
    folder.mkdir()
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 6))) for _ in range(40)]
    (folder / "echo.jsonl").write_text("".join(
        json.dumps({"instruction": "Repeat the word.", "input": w, "output": w}) + "\n" for w in words))
    (folder / "count.jsonl").write_text("".join(
        json.dumps({"prompt": f"Letters in {w}?", "completion": str(len(w))}) + "\n" for w in words))
    return folder


def base_run(root: Path) -> dict:
    return {
        "strategy.name": "fedit",
        "model.name": "tiny-llama",
        "task.name": "instruct",
        "task.max-length": 96,
        "num-server-rounds": 2,
        "train.local-steps": 4,
        "train.lr": 0.005,
        "train.batch-size": 8,
        "adapter.rank": 4,
        "data.partitioner": "iid",
        "eval.batch-size": 16,
        "instruct.source": str(write_folder(root)),
        "instruct.format": "auto",
        "instruct.max-new-tokens": 3,
        "instruct.generate-examples": 6,
        "instruct.samples": 3,
        "run-name": "instruct",
        "output-dir": str(root / "runs"),
    }


@pytest.fixture(scope="module")
def federated(tmp_path_factory: pytest.TempPathFactory):
    values = base_run(tmp_path_factory.mktemp("instruct"))
    grid = FakeGrid(client_app, 3, run_config=values)
    folder = run(grid, parse_run_config(values))
    return grid, Path(folder.path)


def test_rounds_carry_loss_perplexity_and_generation_scores_per_source(federated) -> None:
    _, path = federated
    rows = read_rounds(path / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    for row in rows:
        for key in ("eval_loss", "eval_perplexity", "eval_score", "eval_exact_match", "eval_rouge_l",
                    "eval_score/echo", "eval_score/count", "eval_dropped", "eval_train_dropped"):
            assert key in row, (key, sorted(row))
        assert math.isclose(row["eval_perplexity"], math.exp(row["eval_loss"]), rel_tol=0.5)  # token- vs row-mean
        assert 0.0 <= row["eval_score"] <= 1.0 and row["eval_dropped"] == 0.0
    assert all(r["clients"] == 3 for r in rows[1:])
    assert rows[2]["train_loss"] < rows[1]["train_loss"]
    assert rows[2]["eval_loss"] < rows[0]["eval_loss"]
    summary = json.loads((path / "summary.json").read_text())
    assert summary["main_metric"] == "score" and "eval_score" in summary["final"]


def test_sample_generations_are_written_per_round(federated) -> None:
    _, path = federated
    files = sorted(p.name for p in (path / "samples").glob("round-*.jsonl"))
    assert files == ["round-000.jsonl", "round-001.jsonl", "round-002.jsonl"]
    samples = [json.loads(line) for line in (path / "samples" / "round-002.jsonl").read_text().splitlines()]
    assert len(samples) == 3
    assert {"source", "prompt", "reference", "generation", "answer", "score"} <= set(samples[0])
    assert {s["source"] for s in samples} <= {"echo", "count"}


def test_lora_adapts_attention_and_mlp_projections(federated) -> None:
    _, path = federated
    config = json.loads((path / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_a_dp_run_on_instruct_spends_finite_epsilon_and_stays_finite(tmp_path: Path) -> None:
    values = {**base_run(tmp_path), "num-server-rounds": 1, "train.local-steps": 2, "privacy.enabled": True,
              "privacy.noise-multiplier": 0.8, "instruct.generate-examples": 2, "eval.max-examples": 4,
              "run-name": "instruct-dp"}
    grid = FakeGrid(client_app, 2, run_config=values)
    folder = run(grid, parse_run_config(values))
    rows = read_rounds(Path(folder.path) / "rounds.jsonl")
    assert rows[1]["clients"] == 2 and rows[1]["dropped"] == 0
    assert 0 < rows[1]["epsilon"] < float("inf")
    assert math.isfinite(rows[1]["train_loss"]) and math.isfinite(rows[1]["eval_loss"])
    replies = [reply for _, reply in grid.log if reply.has_content() and "arrays" in reply.content]
    assert len(replies) == 2
