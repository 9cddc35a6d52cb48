"""Memorisation metrics on hand-made pairs, and LCS / edit distance against brute force."""

from __future__ import annotations

import itertools
import random

import pytest

from client.tasks.tokenswap.metrics import (
    edit_distance,
    lcs_length,
    mean_metrics,
    pair_metrics,
    reduction_factor,
)


def test_hand_made_pairs():
    ref = [1, 2, 3, 4, 5]
    assert pair_metrics(ref, ref) == {"exact_match": 1.0, "match_prefix": 5.0, "rougeL": 1.0,
                                      "levenshtein": 0.0, "frac_em": 1.0}
    m = pair_metrics([1, 2, 9, 4, 5], ref)  # one substitution
    assert (m["exact_match"], m["match_prefix"], m["frac_em"], m["levenshtein"]) == (0.0, 2.0, 0.8, 0.2)
    assert m["rougeL"] == pytest.approx(0.8)  # LCS 4 of 5 on both sides
    shifted = pair_metrics([0, 1, 2, 3, 4], ref)  # an insertion: positions all wrong, content kept
    assert shifted["frac_em"] == 0.0 and shifted["match_prefix"] == 0.0
    assert shifted["rougeL"] == pytest.approx(0.8) and shifted["levenshtein"] == pytest.approx(0.4)
    assert pair_metrics([], ref)["rougeL"] == 0.0 and pair_metrics([], ref)["levenshtein"] == 1.0


def _lcs_brute(a, b):
    for k in range(min(len(a), len(b)), 0, -1):
        subs = set(itertools.combinations(a, k))
        if any(s in subs for s in itertools.combinations(b, k)):
            return k
    return 0


def _edit_brute(a, b):
    if not a or not b:
        return len(a) + len(b)
    return min(_edit_brute(a[1:], b) + 1, _edit_brute(a, b[1:]) + 1, _edit_brute(a[1:], b[1:]) + (a[0] != b[0]))


def test_lcs_and_edit_distance_against_brute_force():
    rng = random.Random(0)
    for _ in range(60):
        a = tuple(rng.randint(0, 3) for _ in range(rng.randint(0, 6)))
        b = tuple(rng.randint(0, 3) for _ in range(rng.randint(0, 6)))
        assert lcs_length(a, b) == _lcs_brute(a, b)
        assert edit_distance(a, b) == _edit_brute(a, b) == edit_distance(b, a)


def test_mean_and_reduction():
    means = mean_metrics([[1, 2], [3, 3]], [[1, 2], [3, 4]])
    assert means["exact_match"] == 0.5 and means["frac_em"] == 0.75
    assert reduction_factor(0.9, 0.0, 20) == pytest.approx(18.0)
    assert reduction_factor(0.5, 0.25, 20) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        mean_metrics([[1]], [])
