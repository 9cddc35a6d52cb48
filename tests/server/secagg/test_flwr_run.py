"""SecAgg+ end to end through `flwr run` -> managed SuperLink -> Ray simulation (slow).

Every SecAgg stage is a real Flower message to a ClientApp running in a Ray worker, so the node's
secrets must survive between stages in ``Context.state``, and every record must survive Flower's
serialisation.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from client.faults import draw_fault
from contract import parse_run_config
from contract import secagg as wire
from server.run_folder import read_rounds
from tests.simulations.test_flwr_run import _run, flower_env  # noqa: F401  (the shared isolated Flower home)

pytestmark = pytest.mark.slow


def test_fedsb_with_secagg_and_a_client_failing_after_masking(flower_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    # a failing client raises in its train handler, i.e. in the collect stage: after it shared its keys
    config = parse_run_config({"faults.fail-fraction": 0.49})  # seed 42: one of the four fails in each round
    failing = {rnd: sum(draw_fault(config, server_round=rnd, partition_id=p) == "fail" for p in range(4)) for rnd in (1, 2)}
    assert all(count >= 1 for count in failing.values())
    result, folder = _run(
        flower_env, tmp_path, 4,
        ['strategy.name="fedsb" model.name="tiny-llama" task.name="arithmetic" num-server-rounds=2 train.lr=0.01 '
         'train.local-steps=4 adapter.rank=4 eval.max-examples=32 secagg.enabled=true secagg.threshold=2 '
         'faults.fail-fraction=0.49'],
    )
    assert result.ok, result.output[-3000:]
    rows = read_rounds(folder / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert [(r["clients"], r["dropped"]) for r in rows[1:]] == [(4 - failing[rnd], failing[rnd]) for rnd in (1, 2)]
    with (folder / "ledger.csv").open() as handle:
        phases = {(row["phase"], row["direction"]) for row in csv.DictReader(handle)}
    for stage in wire.STAGES:
        assert (wire.PHASES[stage], "up") in phases
    assert ("train", "up") not in phases
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((folder / "summary.json").read_text())["dropped"] == {
        "total": sum(r["dropped"] for r in rows[1:]), "by_reason": {"secagg-collect": sum(failing.values())},
    }


def test_fedex_with_secagg_fails_cleanly(flower_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    result, folder = _run(flower_env, tmp_path, 2, ['strategy.name="fedex" model.name="tiny-llama" secagg.enabled=true'])
    assert not result.ok and "failed" in result.status
    assert not folder.exists()
