"""The ServerApp end to end on an in-process grid: learning happens, the run folder is complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from peft import PeftModel

from adapters.lora import AdapterSpec, build_adapted_model
from adapters.models import build_base_model
from adapters.payload import extract
from client.app import app as client_app
from server.app import run
from server.run_folder import read_rounds
from contract import parse_run_config
from tests.server.conftest import TINY_RUN
from tests.strategies.fake_grid import FakeGrid


def test_rounds_jsonl_has_a_row_per_round_with_the_promised_fields(tiny_run: tuple[FakeGrid, Path]) -> None:
    _, path = tiny_run
    rows = read_rounds(path / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    for row in rows[1:]:
        for key in ("clients", "bytes_up", "bytes_down", "train_loss", "eval_exact_match", "eval_loss", "dev_rel_mean"):
            assert key in row, key
        assert row["clients"] == 3 and row["dropped"] == 0
        assert row["bytes_up"] > 0 and row["bytes_down"] > 0
    assert rows[0]["bytes_up"] == rows[0]["bytes_down"] == 0
    assert rows[2]["bytes_down_total"] == rows[1]["bytes_down"] + rows[2]["bytes_down"]


def test_training_lowers_the_loss(tiny_run: tuple[FakeGrid, Path]) -> None:
    _, path = tiny_run
    rows = read_rounds(path / "rounds.jsonl")
    assert rows[2]["train_loss"] < rows[1]["train_loss"]
    assert rows[2]["eval_loss"] < rows[0]["eval_loss"]


def test_config_json_is_the_resolved_config(tiny_run: tuple[FakeGrid, Path]) -> None:
    _, path = tiny_run
    config = json.loads((path / "config.json").read_text())
    assert config["model.name"] == "tiny-llama" and config["adapter.rank"] == 4
    assert config["train.weight-decay"] == 0.0  # defaults filled in
    assert parse_run_config(config).to_flat() == config


def test_final_adapter_loads_with_peft_and_equals_the_last_global_arrays(tiny_run: tuple[FakeGrid, Path]) -> None:
    grid, path = tiny_run
    base = build_base_model("tiny-llama", kind="causal-lm")
    loaded = PeftModel.from_pretrained(base.model, path / "adapter")
    exported = extract(loaded)
    # the final global model is what the server sent in the last round's evaluation = the mean of
    # round-2 replies; compare against the replies' weighted mean directly
    replies = [reply for instruction, reply in grid.log if int(instruction.content["config"]["server-round"]) == 2]
    weights = np.array([r.content["metrics"]["num-examples"] for r in replies], dtype=np.float64)
    weights /= weights.sum()
    for key, value in exported.items():
        expected = sum(w * r.content["arrays"][key].numpy().astype(np.float64) for w, r in zip(weights, replies, strict=True))
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)
    summary = json.loads((path / "summary.json").read_text())
    assert summary["bytes_up"] > 0 and "eval_exact_match" in summary["final"]


def test_a_malformed_reply_is_dropped_counted_and_the_round_completes(tmp_path: Path) -> None:
    values = {**TINY_RUN, "num-server-rounds": 1, "output-dir": str(tmp_path), "train.local-steps": 2}

    def sabotage(message, context):  # node 0 returns NaNs, the others behave
        reply = client_app(message, context)
        if context.node_config["partition-id"] == 0 and reply.has_content():
            arrays = reply.content["arrays"]
            key = next(iter(arrays.keys()))
            bad = arrays[key].numpy().copy()
            bad[...] = np.nan
            from flwr.app import Array

            arrays[key] = Array(bad)
        return reply

    folder = run(FakeGrid(sabotage, 3, run_config=values), parse_run_config(values))
    row = read_rounds(folder.path / "rounds.jsonl")[1]
    assert (row["clients"], row["dropped"]) == (2, 1)
    assert np.isfinite(row["eval_loss"])


@pytest.mark.parametrize("bad", [{"adapter.rank": 0}, {"strategy.name": "nope"}])
def test_bad_config_fails_before_anything_runs(tmp_path: Path, bad: dict) -> None:
    values = {**TINY_RUN, "output-dir": str(tmp_path), **bad}
    with pytest.raises(ValueError, match="adapter.rank|strategy.name"):
        run(FakeGrid(client_app, 1, run_config=values), parse_run_config(values))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("strategy", "rate"), [("fedex", 0.005), ("fedit", 0.02)])
def test_train_lr_auto_sends_the_strategys_rate_and_clients_train_at_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str, rate: float
) -> None:
    # docs/algorithms.md §17: `train.lr = "auto"` is FedEx-LoRA's 0.005, the default 0.02 elsewhere
    import client.app as client_module
    from contract import LEARNING_RATE

    values = {**TINY_RUN, "strategy.name": strategy, "train.lr": "auto", "num-server-rounds": 1,
              "train.local-steps": 1, "eval.max-examples": 8, "output-dir": str(tmp_path)}
    sent: list[object] = []
    used: list[float] = []
    real_train = client_module.local_train

    def recording(message, context):
        if message.metadata.message_type == "train":
            sent.append(message.content["config"].get(LEARNING_RATE))
        return client_app(message, context)

    monkeypatch.setattr(client_module, "local_train", lambda *a, **k: used.append(k["lr"]) or real_train(*a, **k))
    run(FakeGrid(recording, 2, run_config=values), parse_run_config(values))
    assert sent == [rate, rate] and used == [rate, rate]
