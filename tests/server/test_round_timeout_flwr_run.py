"""`round-timeout` through the real Ray engine (slow): a sleeping DP client is timed out, its ε still counts.

Two clients on two Ray workers; partition 0 sleeps `faults.slow-seconds` (longer than `round-timeout`)
before training in both rounds. The server stops waiting, aggregates the other client alone and
records the sleeper in `timed_out`; the sleeper never reports ε, so the server's ledger charges it the
ε of two full rounds, computed with the clients' own accountant (docs/privacy.md §10). A sleeping
client holds its Ray worker for the whole sleep.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.faults import draw_fault
from contract import parse_run_config
from server.run_folder import read_rounds
from tests.simulations.test_flwr_run import _run, flower_env  # noqa: F401  (the shared isolated Flower home)

pytestmark = pytest.mark.slow

SEED, TIMEOUT, SLEEP = 2, 90, 100


def test_a_slow_client_is_timed_out_the_run_completes_and_its_epsilon_still_counts(
    flower_env: dict[str, str], tmp_path: Path  # noqa: F811
) -> None:
    faults = parse_run_config({"faults.slow-fraction": 0.5, "seed": SEED})
    draws = [[draw_fault(faults, server_round=r, partition_id=p) for p in range(2)] for r in (1, 2)]
    assert draws == [["slow", None], ["slow", None]], "the seed must make partition 0 (only) sleep in both rounds"
    result, folder = _run(
        flower_env, tmp_path, 2,
        [f'strategy.name="fedit" model.name="tiny-llama" task.name="arithmetic" num-server-rounds=2 '
         f'train.local-steps=2 train.batch-size=8 adapter.rank=4 eval.max-examples=16 data.partitioner="iid" '
         f'seed={SEED} faults.slow-fraction=0.5 faults.slow-seconds={SLEEP} round-timeout={TIMEOUT} '
         f'privacy.enabled=true privacy.noise-multiplier=0.8'],
    )
    assert result.ok, result.output[-3000:]
    rows = read_rounds(folder / "rounds.jsonl")
    assert [(r["clients"], r["dropped"], r["timed_out"], r["epsilon_bounded_nodes"]) for r in rows[1:]] == [(1, 0, 1, 1)] * 2
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["timed_out"] == 2
    nodes = summary["privacy"]["nodes"]
    (sleeper,) = [n for n in nodes if n["unreported"]]
    (other,) = [n for n in nodes if not n["unreported"]]
    assert (sleeper["reported"], sleeper["rounds"], sleeper["unreported"], sleeper["partition"]) == (0.0, 2, 2, None)
    assert (other["rounds"], other["partition"]) == (2, 1)
    # IID shards of equal size: the sleeper spent what the other reported; the server's bound says so
    assert sleeper["charged"] == pytest.approx(other["reported"], rel=1e-9)
    assert summary["privacy"]["epsilon"] == rows[2]["epsilon"] == max(sleeper["charged"], other["reported"])
    assert rows[1]["epsilon"] < rows[2]["epsilon"]
