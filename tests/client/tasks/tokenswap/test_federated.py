"""``memorization`` through Flower (FakeGrid + the real ServerApp and ClientApp) on a word-level Llama.

Checks the plumbing the task promises: each client's extraction metrics from its own shard (plain
and TokenSwap) land in ``rounds.jsonl`` as ``fed_eval_mem_*``, and central evaluation reports the
plain and swapped perplexity; at round 0 the adapter is zero, so the auxiliary ``base`` model *is* the
main model and the swap is the identity (swapped loss = plain loss).
"""

from __future__ import annotations

import math

import pytest

from client.app import app as client_app
from client.tasks.tokenswap.wordlm import save_word_model
from server.app import run
from server.run_folder import read_rounds
from contract import parse_run_config
from tests.strategies.fake_grid import FakeGrid


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    model_dir = save_word_model(tmp_path_factory.mktemp("wordlm") / "model")
    values = {"strategy.name": "fedit", "model.name": str(model_dir), "task.name": "memorization",
              "task.max-length": 40, "num-server-rounds": 2, "train.local-steps": 4, "train.lr": 0.01,
              "train.batch-size": 16, "adapter.rank": 4, "data.partitioner": "iid", "fraction-evaluate": 1.0,
              "eval.max-examples": 16, "tokenswap.eval-pairs": 6, "tokenswap.canaries": 6, "tokenswap.controls": 2,
              "tokenswap.num-background": 120, "tokenswap.num-test": 16, "tokenswap.canary-repeats": 4,
              "output-dir": str(tmp_path_factory.mktemp("runs")), "run-name": "mem"}
    folder = run(FakeGrid(client_app, 2, run_config=values), parse_run_config(values)).path
    return read_rounds(folder / "rounds.jsonl")


def test_metrics_reach_rounds_jsonl(rounds):
    first, last = rounds[0], rounds[-1]
    assert first["eval_swap_loss"] == pytest.approx(first["eval_loss"], rel=1e-5)
    assert last["eval_swap_perplexity"] == pytest.approx(math.exp(last["eval_swap_loss"]), rel=1e-6)
    for name in ("exact_match", "match_prefix", "rougeL", "levenshtein", "frac_em"):
        for side in ("plain", "swap"):
            value = last[f"fed_eval_mem_{side}_{name}"]
            assert math.isfinite(value) and value >= 0, (side, name)
    assert 0 <= last["fed_eval_mem_plain_rougeL"] <= 1 and 1 <= last["fed_eval_mem_pairs"] <= 6  # a client may miss a canary
    assert last["fed_eval_mem_reduction_x"] >= 0
