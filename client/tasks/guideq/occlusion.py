"""Occlusion explanations and the per-label keyword lexicon (GUIDEQ, arXiv 2411.05991; ``docs/tasks.md §6``).

For a correctly classified text with label ``y`` and ``p0 = P(y | text)``, the importance of a
word n-gram is ``p0 - P(y | occluded text)``. Two occlusion modes:

- ``span`` (our default): each occurrence of the n-gram is occluded on its own, its words replaced by
  the tokenizer's mask (or unknown) token; the n-gram's importance is the max over its occurrences;
- ``all`` (the upstream GuideQ code): every word of the text that belongs to the n-gram is replaced
  by the literal ``[OCCLUDED]``, all occurrences at once.

Per sample, the top-5 n-grams with importance > 0 are kept (upstream). Per label they aggregate by
``sum`` (GuideQ repo: weights and counts summed) or ``max`` (DRPG repo: max weight, counts summed);
a lexicon is ``{label: {ngram: (weight, count)}}``. Merging lexica applies the same rule, so under
``sum`` (and before any top-N cut) merging two clients' lexica equals the lexicon of their union.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import numpy as np

Predict = Callable[[list[str]], np.ndarray]  # texts -> (N, K) class probabilities
Lexicon = dict[str, dict[str, tuple[float, int]]]  # label -> ngram -> (weight, count)
OcclusionMode = Literal["span", "all"]
Aggregation = Literal["sum", "max"]

OCCLUDED = "[OCCLUDED]"  # upstream's literal replacement string (mode "all")
TOP_PER_SAMPLE = 5  # upstream keeps the top-5 positive n-grams per sample
_STRIP = re.compile(r"^\W+|\W+$")


def normalise(word: str) -> str:
    """Lower-case, leading/trailing punctuation stripped: how n-gram keys are spelled."""
    return _STRIP.sub("", word.lower())


def ngram_spans(words: Sequence[str], max_n: int) -> dict[str, list[tuple[int, int]]]:
    """Every n-gram (1 ≤ n ≤ ``max_n``) of ``words`` by its normalised key -> its ``(start, end)`` spans.

    N-grams containing a word that normalises to nothing (pure punctuation) are skipped.
    """
    keys = [normalise(w) for w in words]
    spans: dict[str, list[tuple[int, int]]] = {}
    for n in range(1, max_n + 1):
        for start in range(len(words) - n + 1):
            parts = keys[start : start + n]
            if all(parts):
                spans.setdefault(" ".join(parts), []).append((start, start + n))
    return spans


def occlude(words: Sequence[str], ngram: str, *, mode: OcclusionMode, mask_token: str,
            span: tuple[int, int] | None = None) -> str:
    """The text with ``ngram`` occluded: ``span`` replaced by ``mask_token`` (one per word), or, in mode
    ``all``, every word belonging to the n-gram replaced by ``[OCCLUDED]``."""
    if mode == "span":
        if span is None:
            raise ValueError("mode 'span' needs the span to occlude")
        start, end = span
        return " ".join([*words[:start], *[mask_token] * (end - start), *words[end:]])
    members = set(ngram.split())
    return " ".join(OCCLUDED if normalise(w) in members else w for w in words)


def importances(predict: Predict, text: str, label: int, ngrams: Iterable[str] | None = None, *,
                max_n: int = 1, mode: OcclusionMode = "span", mask_token: str = "[MASK]") -> dict[str, float]:
    """``p0 - p_occluded`` for each n-gram (all n-grams of ``text`` up to ``max_n`` by default).

    An n-gram that does not occur in ``text`` changes nothing and gets importance exactly 0 (no
    forward pass is spent on an unchanged text).
    """
    words = text.split()
    spans = ngram_spans(words, max(max_n, max((len(g.split()) for g in ngrams or ()), default=1)))
    keys = list(ngrams) if ngrams is not None else list(spans)
    variants: list[tuple[str, str]] = []  # (ngram, occluded text)
    for key in keys:
        if mode == "span":
            variants += [(key, occlude(words, key, mode=mode, mask_token=mask_token, span=s)) for s in spans.get(key, [])]
        else:
            occluded = occlude(words, key, mode=mode, mask_token=mask_token)
            if occluded != " ".join(words):
                variants.append((key, occluded))
    probs = predict([text, *[v for _, v in variants]])[:, label]  # (1 + V,)
    out = dict.fromkeys(keys, 0.0)
    best: dict[str, float] = {}
    for (key, _), p in zip(variants, probs[1:], strict=True):
        best[key] = max(best.get(key, -np.inf), float(probs[0] - p))
    out.update(best)
    return out


def explain(predict: Predict, texts: Sequence[str], labels: Sequence[int], label_names: Sequence[str], *,
            max_n: int = 1, mode: OcclusionMode = "span", mask_token: str = "[MASK]",
            top_k: int = TOP_PER_SAMPLE) -> list[tuple[str, list[tuple[str, float]]]]:
    """Per correctly classified sample: ``(label name, its top-k n-grams with importance > 0)``.

    Misclassified samples contribute nothing (upstream explains only the classifier's hits).
    """
    if not texts:
        return []
    predicted = predict(list(texts)).argmax(axis=1)
    out = []
    for text, y, y_hat in zip(texts, labels, predicted, strict=True):
        if int(y_hat) != int(y):
            continue
        scores = importances(predict, text, int(y), max_n=max_n, mode=mode, mask_token=mask_token)
        positive = sorted(((g, w) for g, w in scores.items() if w > 0), key=lambda gw: (-gw[1], gw[0]))
        out.append((label_names[int(y)], positive[:top_k]))
    return out


def aggregate(explained: Iterable[tuple[str, list[tuple[str, float]]]], *, how: Aggregation = "sum") -> Lexicon:
    """Per label: each n-gram's weight (sum or max over samples) and count (samples it was kept in)."""
    lexicon: Lexicon = {}
    for label, grams in explained:
        entry = lexicon.setdefault(label, {})
        for gram, weight in grams:
            w0, c0 = entry.get(gram, (0.0 if how == "sum" else -np.inf, 0))
            entry[gram] = (w0 + weight if how == "sum" else max(w0, weight), c0 + 1)
    return lexicon


def merge(lexica: Iterable[Lexicon], *, how: Aggregation = "sum") -> Lexicon:
    """Combine lexica with the aggregation rule: weights summed (or maxed), counts summed."""
    merged: Lexicon = {}
    for lexicon in lexica:
        for label, grams in lexicon.items():
            entry = merged.setdefault(label, {})
            for gram, (weight, count) in grams.items():
                if gram in entry:
                    w0, c0 = entry[gram]
                    entry[gram] = (w0 + weight if how == "sum" else max(w0, weight), c0 + count)
                else:
                    entry[gram] = (float(weight), int(count))
    return merged


def truncate(lexicon: Lexicon, *, top_n: int, min_count: int = 1) -> Lexicon:
    """Keep per label the ``top_n`` heaviest n-grams seen in at least ``min_count`` samples."""
    return {
        label: dict(sorted(((g, wc) for g, wc in grams.items() if wc[1] >= min_count),
                           key=lambda item: (-item[1][0], item[0]))[:top_n])
        for label, grams in lexicon.items()
    }


def keywords(lexicon: Lexicon, label: str) -> list[str]:
    """The label's n-grams, heaviest first (empty for a label the lexicon does not know)."""
    return [g for g, _ in sorted(lexicon.get(label, {}).items(), key=lambda item: (-item[1][0], item[0]))]


def to_json(lexicon: Lexicon) -> dict[str, list[list]]:
    """``{label: [[ngram, weight, count], ...]}``, heaviest first: the wire/report form."""
    return {label: [[g, float(w), int(c)] for g, (w, c) in sorted(grams.items(), key=lambda it: (-it[1][0], it[0]))]
            for label, grams in lexicon.items()}


def from_json(data: dict[str, list[list]]) -> Lexicon:
    """Inverse of :func:`to_json`; a malformed entry raises ``ValueError`` naming it."""
    lexicon: Lexicon = {}
    for label, rows in data.items():
        entry = lexicon.setdefault(str(label), {})
        for row in rows:
            if not (isinstance(row, (list, tuple)) and len(row) == 3):
                raise ValueError(f"lexicon entry {row!r} of label {label!r} is not [ngram, weight, count]")
            entry[str(row[0])] = (float(row[1]), int(row[2]))
    return lexicon
