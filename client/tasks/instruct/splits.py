"""The training pool and the held-out test split, as ``datasets`` tables the platform partitions.

Per source name: when the source has a ``test`` part of its own (a ``test`` file, an HF ``test``
split) that is its test split and everything else its pool; otherwise ``instruct.test-fraction``
of its rows (at least one, leaving at least one) are held out, chosen by a ``random.Random``
seeded from ``(seed, source name)``. The test split is then shuffled with the run seed, so that a
cap (``eval.max-examples``, ``instruct.generate-examples``) still sees every source.

Columns: ``turns`` (the prompt turns as JSON ``[[role, content], ...]``), ``response``,
``source``, ``entry`` (the source scorer's JSON, or ``""``) and ``label`` (a ``ClassLabel`` over the
partition labels, see :mod:`client.tasks.instruct.formats`), which ``data.partitioner = dirichlet``
splits by: with reasoning-gym, clients then hold different skills.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from client.tasks.instruct.formats import Example

FEATURES_BASE = {"turns": Value("string"), "response": Value("string"), "source": Value("string"),
                 "entry": Value("string")}


def split_examples(parts: list[tuple[str | None, list[Example]]], *, seed: int,
                   test_fraction: float) -> tuple[list[Example], list[Example]]:
    """``(pool, test)`` from ``(split, examples)`` pairs (module docstring).

    Raises
    ------
    ValueError
        A source with fewer than two rows and no test split of its own, or no training rows.
    """
    by_source: dict[str, dict[str, list[Example]]] = defaultdict(lambda: {"train": [], "test": []})
    own_test: set[str] = set()
    order: list[str] = []
    for split, examples in parts:
        for example in examples:
            if example.source not in by_source:
                order.append(example.source)
            by_source[example.source]["test" if split == "test" else "train"].append(example)
            if split == "test":
                own_test.add(example.source)
    pool: list[Example] = []
    test: list[Example] = []
    for name in order:
        rows = by_source[name]
        if name in own_test:
            pool += rows["train"]
            test += rows["test"]
            continue
        n = len(rows["train"])
        if n < 2:
            raise ValueError(f"source {name!r} has {n} row(s): a held-out split needs at least 2 "
                             "(or give it a `test` file of its own)")
        k = min(n - 1, max(1, round(test_fraction * n)))
        held = set(random.Random(f"corolla-instruct-holdout:{seed}:{name}").sample(range(n), k))
        pool += [e for i, e in enumerate(rows["train"]) if i not in held]
        test += [e for i, e in enumerate(rows["train"]) if i in held]
    if not pool:
        raise ValueError("`instruct.source` gave no training rows (only a `test` split)")
    random.Random(f"corolla-instruct-test-order:{seed}").shuffle(test)
    return pool, test


def _columns(examples: list[Example]) -> dict[str, list[Any]]:
    return {
        "turns": [json.dumps([list(t) for t in e.turns]) for e in examples],
        "response": [e.response for e in examples],
        "source": [e.source for e in examples],
        "entry": [e.entry for e in examples],
        "label": [e.label for e in examples],
    }


def to_datasets(pool: list[Example], test: list[Example]) -> DatasetDict:
    """``{"train": pool, "test": test}`` with the module's columns."""
    labels = sorted({e.label for e in pool} | {e.label for e in test})
    features = Features({**FEATURES_BASE, "label": ClassLabel(names=labels)})
    return DatasetDict({"train": Dataset.from_dict(_columns(pool), features=features),
                        "test": Dataset.from_dict(_columns(test), features=features)})


def row_turns(row: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The prompt turns of a dataset row."""
    return tuple((str(role), str(content)) for role, content in json.loads(row["turns"]))
