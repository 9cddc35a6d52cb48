"""``instruct`` through the real Flower path: ``flwr run`` -> managed SuperLink -> Ray simulation,
tiny-llama on a local JSONL (slow: tens of seconds)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from server.run_folder import read_rounds
from simulations.launch import find_app_dir, launch, resolve_config, toml_overrides

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def flower_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("flwr-home")
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
           "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port())}
    yield env
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("FLWR_HOME") == str(home):
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def test_instruct_on_tiny_llama_from_a_jsonl_through_flwr_run(flower_env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "completion": str(a + b)}) + "\n"
                            for a in range(10) for b in range(6)))
    out = tmp_path / "runs"
    values = {"strategy.name": "fedit", "model.name": "tiny-llama", "task.name": "instruct", "task.max-length": 64,
              "num-server-rounds": 2, "train.local-steps": 6, "train.lr": 0.01, "train.batch-size": 8,
              "adapter.rank": 4, "data.partitioner": "iid", "instruct.source": str(data), "instruct.max-new-tokens": 3,
              "instruct.generate-examples": 6, "output-dir": str(out), "run-name": "e2e"}
    app = find_app_dir()
    _, flat = resolve_config(app, [toml_overrides(values)])
    result = launch(app, flat, num_supernodes=3, env=flower_env, echo=False)
    assert result.ok, result.output[-3000:]
    rows = read_rounds(out / "e2e" / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(r["clients"] == 3 for r in rows[1:])
    assert rows[2]["eval_loss"] < rows[0]["eval_loss"]
    assert {"eval_score", "eval_perplexity", "eval_score/sums"} <= set(rows[2])
    assert (out / "e2e" / "samples" / "round-002.jsonl").is_file()
    assert (out / "e2e" / "adapter" / "adapter_model.safetensors").is_file()
