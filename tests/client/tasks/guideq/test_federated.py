"""GUIDEQ through Flower: real ServerApp (``server.app.run``) + real ClientApp on an in-process FakeGrid.

Checks the wiring only: clients' keyword reports are merged on the server, the merged lexicon is
broadcast to every client with the next round's messages, and the guided-question metrics land in
``rounds.jsonl`` (central evaluation on the server, which holds the lexicon via apply_broadcast).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.app import app as client_app
from server.app import run
from server.run_folder import read_rounds
from contract import parse_run_config
from contract import BROADCAST, decode_json_record
from tests.strategies.fake_grid import FakeGrid

RUN = {
    "strategy.name": "fedit",
    "model.name": "minilm-l6",
    "task.name": "guideq",
    "task.max-length": 64,
    "num-server-rounds": 2,
    "train.local-steps": 4,
    "train.lr": 0.005,
    "train.batch-size": 8,
    "adapter.rank": 4,
    "data.partitioner": "iid",
    "eval.max-examples": 16,
    "guideq.num-train": 64,
    "guideq.num-test": 16,
    "guideq.explain-examples": 6,
    "run-name": "guideq",
}


@pytest.fixture(scope="module")
def federated(tmp_path_factory: pytest.TempPathFactory):
    values = {**RUN, "output-dir": str(tmp_path_factory.mktemp("runs"))}
    grid = FakeGrid(client_app, 2, run_config=values)
    folder = run(grid, parse_run_config(values))
    return grid, Path(folder.path)


def test_guided_metrics_and_report_merges_land_in_rounds_jsonl(federated) -> None:
    _, path = federated
    rows = read_rounds(path / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    for row in rows:
        for key in ("eval_f1_full", "eval_f1_partial", "eval_f1_guided", "eval_f1_noKW", "eval_delta_f1",
                    "eval_top3_recall"):
            assert key in row, (key, sorted(row))
    for row in rows[1:]:
        assert row["guideq_reports"] == 2.0
        assert row["guideq_explained"] >= 0
    assert sorted(p.name for p in (path / "plugins").glob("round-*.json"))[:2] == ["round-001.json", "round-002.json"]


def test_the_merged_lexicon_is_broadcast_to_every_client_in_the_next_round(federated) -> None:
    grid, path = federated
    detail = json.loads((path / "plugins" / "round-001.json").read_text())
    round2 = [ins for ins, _ in grid.log if int(ins.content["config"]["server-round"]) == 2]
    assert round2
    states = [decode_json_record(ins.content, BROADCAST) for ins in round2]
    assert all(state is not None and state["round"] == 1 and "lexicon" in state for state in states)
    assert len({json.dumps(s["lexicon"], sort_keys=True) for s in states}) == 1
    round1 = [ins for ins, _ in grid.log if int(ins.content["config"]["server-round"]) == 1]
    assert all(decode_json_record(ins.content, BROADCAST) is None for ins in round1)
    assert detail  # the server wrote the merged (untruncated) lexicon
