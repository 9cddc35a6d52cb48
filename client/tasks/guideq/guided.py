"""The guided-questioning evaluation (GUIDEQ, arXiv 2411.05991; ``docs/tasks.md §6``).

Each text is split into a first half (what the user said) and a hidden second half (what the user
knows). The classifier on the first half gives its top-3 labels; the questioner asks one question
from the lexicon keywords of those labels; the answerer answers it from the hidden half; the
classifier re-labels ``partial + answer``. Multi-turn repeats with the updated partial text and never
reuses a keyword. The no-keyword baseline asks the same questioner with keywords switched off.

Metrics (weighted F1 as sklearn's ``classification_report`` computes it: per-class F1 weighted by
true support): ``f1_full`` (upper bound), ``f1_partial`` (first half only), ``f1_guided``,
``f1_noKW``, ``delta_f1 = f1_guided - f1_partial`` and ``top3_recall`` (true label among the top-3
of the first half).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from client.tasks.guideq.occlusion import Lexicon, Predict
from client.tasks.guideq.questioning import Answerer, Questioner, split_halves

TOP_K = 3  # the paper pairs the classifier's top-3 labels with their keywords


Labels = Sequence[int] | NDArray[np.integer]  # one class index per text


def weighted_f1(y_true: Labels, y_pred: Labels) -> float:
    """Per-class F1 averaged with weights = true support (sklearn's ``average="weighted"``)."""
    truth, predicted = np.asarray(y_true), np.asarray(y_pred)
    if truth.size == 0:
        return float("nan")
    total = 0.0
    for c in np.unique(truth):
        tp = float(np.sum((truth == c) & (predicted == c)))
        fp = float(np.sum((truth != c) & (predicted == c)))
        fn = float(np.sum((truth == c) & (predicted != c)))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        total += f1 * float(np.sum(truth == c))
    return total / truth.size


@dataclass
class Dialogue:
    """One text's guided exchange: the questions asked, the answers got, the keywords used."""

    questions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)


def _ask_all(predict: Predict, partials: list[str], hiddens: list[str], label_names: Sequence[str],
             lexicon: Lexicon, questioner: Questioner, answerer: Answerer, turns: int,
             first_probs: NDArray[np.floating]) -> tuple[NDArray[np.intp], list[Dialogue]]:
    current, probs = list(partials), first_probs
    dialogues = [Dialogue() for _ in partials]
    for _ in range(turns):
        top = np.argsort(-probs, axis=1, kind="stable")[:, :TOP_K]  # (N, 3)
        for i, dialogue in enumerate(dialogues):
            candidates = [label_names[int(c)] for c in top[i]]
            question = questioner.ask(current[i], candidates, lexicon, dialogue.used)
            answer = answerer.answer(question.text, hiddens[i])
            dialogue.questions.append(question.text)
            dialogue.answers.append(answer)
            dialogue.used.update(question.keywords)
            if answer:
                current[i] = f"{current[i]} {answer}"
        probs = predict(current)
    return probs.argmax(axis=1), dialogues


def guided_metrics(predict: Predict, texts: Sequence[str], labels: Labels, label_names: Sequence[str],
                   lexicon: Lexicon, questioner: Questioner, no_kw_questioner: Questioner, answerer: Answerer, *,
                   turns: int = 1) -> tuple[dict[str, float], list[Dialogue]]:
    """The ``docs/tasks.md §6`` metrics over ``texts`` and the guided dialogues (for inspection)."""
    if turns < 1:
        raise ValueError(f"`guideq.turns` = {turns} must be >= 1")
    halves = [split_halves(t) for t in texts]
    partials, hiddens = [h[0] for h in halves], [h[1] for h in halves]
    full = predict(list(texts)).argmax(axis=1)
    partial_probs = predict(partials)
    top3 = np.argsort(-partial_probs, axis=1, kind="stable")[:, :TOP_K]
    y = np.asarray(labels)
    guided, dialogues = _ask_all(predict, partials, hiddens, label_names, lexicon, questioner, answerer,
                                 turns, partial_probs)
    no_kw, _ = _ask_all(predict, partials, hiddens, label_names, lexicon, no_kw_questioner, answerer,
                        turns, partial_probs)
    f1_partial = weighted_f1(y, partial_probs.argmax(axis=1))
    f1_guided = weighted_f1(y, guided)
    return {
        "f1_full": weighted_f1(y, full),
        "f1_partial": f1_partial,
        "f1_guided": f1_guided,
        "f1_noKW": weighted_f1(y, no_kw),
        "delta_f1": f1_guided - f1_partial,
        "top3_recall": float(np.mean([int(t) in row for t, row in zip(y, top3, strict=True)])) if len(y) else float("nan"),
    }, dialogues
