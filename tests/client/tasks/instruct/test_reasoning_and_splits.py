"""reasoning-gym: seeded, the same in another process, own scorers; held-out splits and partitions."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
from pathlib import Path

import pytest

from client.tasks.instruct.formats import FormatOptions, to_examples
from client.tasks.instruct.reasoning import ReasoningGym, generator_seed, score
from client.tasks.instruct.sources import load_source
from client.tasks.instruct.splits import split_examples, to_datasets
from client.tasks.partition import partition_dataset

SOURCE = "reasoning-gym:basic_arithmetic,leg_counting,word_sorting"
ROOT = Path(__file__).resolve().parents[4]

# Another interpreter loads reasoning.py on its own (not the whole client package, ~15 s to import here)
DUMP = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("standalone_reasoning", sys.argv[3])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
rows = module.ReasoningGym.parse(sys.argv[1]).generate(seed=int(sys.argv[2]), num_examples=5)
print(json.dumps([[name, r] for name, r in rows.items()]))
"""
REASONING_PY = ROOT / "client" / "tasks" / "instruct" / "reasoning.py"


def _dump(seed: int) -> list:
    out = subprocess.run([sys.executable, "-c", DUMP, SOURCE, str(seed), str(REASONING_PY)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True,
                         env={"PYTHONHASHSEED": "random", "PATH": ""})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_generation_is_seeded_and_identical_in_another_process() -> None:
    here = [[p.name, [r for _, r in p.records]] for p in load_source(SOURCE, seed=7, num_examples=5, max_rows=0)]
    assert [name for name, _ in here] == ["basic_arithmetic", "leg_counting", "word_sorting"]
    assert all(len(rows) == 5 for _, rows in here)
    assert _dump(7) == here  # another interpreter, another hash salt: the same rows
    other = load_source(SOURCE, seed=8, num_examples=5, max_rows=0)
    assert [r for _, r in other[0].records] != here[0][1]
    assert generator_seed(7, "leg_counting") != generator_seed(7, "word_sorting")


def test_each_row_is_scored_by_its_generators_own_scorer() -> None:
    parts = load_source(SOURCE, seed=0, num_examples=3, max_rows=0)
    for part in parts:
        for _, row in part.records:
            assert score(part.name, row["answer"], row["entry"]) == 1.0
            assert score(part.name, "certainly not " + row["answer"] + "!", row["entry"]) < 1.0
    examples = to_examples(parts[1], FormatOptions())
    assert examples[0].turns == (("user", parts[1].records[0][1]["question"]),)
    assert examples[0].response == parts[1].records[0][1]["answer"] and examples[0].label == "leg_counting"


def test_bad_names_and_a_missing_extra_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="reasoning-gym has no generator 'no_such_skill'"):
        ReasoningGym.parse("reasoning-gym:basic_arithmetic,no_such_skill")
    with pytest.raises(ValueError, match="names no generator"):
        ReasoningGym.parse("reasoning-gym:")
    real_import = builtins.__import__

    def no_reasoning_gym(name, *args, **kwargs):
        if name == "reasoning_gym" or name.startswith("reasoning_gym."):
            raise ImportError("No module named 'reasoning_gym'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_reasoning_gym)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[reasoning\]"'):
        ReasoningGym.parse(SOURCE)


def test_held_out_split_is_seeded_per_source_and_dirichlet_splits_by_skill() -> None:
    parts = load_source(SOURCE, seed=0, num_examples=40, max_rows=0)
    examples = [(p.split, to_examples(p, FormatOptions())) for p in parts]
    pool, test = split_examples(examples, seed=3, test_fraction=0.25)
    again_pool, again_test = split_examples(examples, seed=3, test_fraction=0.25)
    assert (pool, test) == (again_pool, again_test)
    assert len(test) == 30 and len(pool) == 90
    assert {e.source: sum(x.source == e.source for x in test) for e in test} == {
        "basic_arithmetic": 10, "leg_counting": 10, "word_sorting": 10}
    assert not {(e.source, e.response, e.turns) for e in test} & {(e.source, e.response, e.turns) for e in pool}
    _, other_test = split_examples(examples, seed=4, test_fraction=0.25)
    assert other_test != test
    datasets = to_datasets(pool, test)
    assert datasets["train"].features["label"].names == ["basic_arithmetic", "leg_counting", "word_sorting"]
    shards = [partition_dataset(datasets["train"], partitioner="dirichlet", num_partitions=6, partition_id=i,
                                alpha=0.1, seed=0, label_column="label") for i in range(6)]
    assert sum(s.num_rows for s in shards) == 90
    skills_per_client = [len(set(s["source"])) for s in shards]
    assert min(skills_per_client) < 3  # non-IID: some client lacks a skill


def test_a_sources_own_test_split_is_used_as_is() -> None:
    from client.tasks.instruct.formats import Example

    train = [Example(turns=(("user", f"q{i}"),), response=f"a{i}", source="s", label="s") for i in range(5)]
    test = [Example(turns=(("user", "t"),), response="t", source="s", label="s")]
    pool, held = split_examples([("train", train), ("test", test)], seed=0, test_fraction=0.5)
    assert pool == train and held == test
    with pytest.raises(ValueError, match="has 1 row"):
        split_examples([(None, train[:1])], seed=0, test_fraction=0.5)
