"""Verbatim-memorisation metrics on token-id sequences (``docs/tasks.md §4``).

All metrics compare a generated continuation with the true suffix, token by token:

- ``exact_match``: 1 if the whole suffix is reproduced;
- ``match_prefix``: how many leading tokens match before the first error;
- ``rougeL``: ROUGE-L F1 = 2PR/(P+R) from the longest common subsequence (P = LCS/len(generated),
  R = LCS/len(reference)); the ``rouge-score`` package computes the same on token strings;
- ``levenshtein``: edit distance / max(len) in [0, 1] (0 = identical), as ``python-Levenshtein``'s
  normalised distance;
- ``frac_em``: share of reference positions whose generated token is equal at the same index.

The reduction factor is ``EM_plain / max(EM_swap, 1/N)`` (``docs/tasks.md §4``): finite when TokenSwap stops
every extraction, and at most N.
"""

from __future__ import annotations

from collections.abc import Sequence

METRIC_NAMES: tuple[str, ...] = ("exact_match", "match_prefix", "rougeL", "levenshtein", "frac_em")


def match_prefix(generated: Sequence[int], reference: Sequence[int]) -> int:
    """Number of leading positions where the two sequences agree."""
    n = 0
    for g, r in zip(generated, reference):
        if g != r:
            break
        n += 1
    return n


def lcs_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common subsequence (O(len(a)·len(b)) dynamic programme, one row)."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            keep = row[j]
            row[j] = prev_diag + 1 if x == y else max(row[j], row[j - 1])
            prev_diag = keep
    return row[-1]


def rouge_l(generated: Sequence[int], reference: Sequence[int]) -> float:
    """ROUGE-L F1 (0 when either side is empty)."""
    lcs = lcs_length(generated, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(generated), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (unit-cost insert, delete, substitute)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        prev_diag, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            keep = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, prev_diag + (x != y))
            prev_diag = keep
    return row[-1]


def normalized_levenshtein(generated: Sequence[int], reference: Sequence[int]) -> float:
    """Edit distance divided by the longer length (0 for two empty sequences)."""
    longest = max(len(generated), len(reference))
    return edit_distance(generated, reference) / longest if longest else 0.0


def fractional_em(generated: Sequence[int], reference: Sequence[int]) -> float:
    """Share of reference positions reproduced at the same index."""
    if not reference:
        return 1.0 if not generated else 0.0
    return sum(g == r for g, r in zip(generated, reference)) / len(reference)


def pair_metrics(generated: Sequence[int], reference: Sequence[int]) -> dict[str, float]:
    """All :data:`METRIC_NAMES` for one (generated, reference) pair."""
    generated, reference = list(generated), list(reference)
    return {
        "exact_match": float(generated == reference),
        "match_prefix": float(match_prefix(generated, reference)),
        "rougeL": rouge_l(generated, reference),
        "levenshtein": normalized_levenshtein(generated, reference),
        "frac_em": fractional_em(generated, reference),
    }


def mean_metrics(generated: Sequence[Sequence[int]], references: Sequence[Sequence[int]]) -> dict[str, float]:
    """:func:`pair_metrics` averaged over pairs (NaN for no pairs)."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generations for {len(references)} references")
    if not references:
        return {name: float("nan") for name in METRIC_NAMES}
    rows = [pair_metrics(g, r) for g, r in zip(generated, references)]
    return {name: sum(row[name] for row in rows) / len(rows) for name in METRIC_NAMES}


def reduction_factor(em_plain: float, em_swap: float, n: int) -> float:
    """``EM_plain / max(EM_swap, 1/n)`` (``docs/tasks.md §4``)."""
    if n < 1:
        raise ValueError(f"reduction factor needs n >= 1 pairs, got {n}")
    return em_plain / max(em_swap, 1.0 / n)
