"""Scoring generated responses: the source's own scorer where it has one, else ROUGE-L.

* Answer extraction (:func:`extract_answer`): the text inside the first ``<answer>...</answer>``
  (reasoning-gym's convention), else the first non-empty line, stripped.
* ``exact_match``: the extracted answer equals the reference after SQuAD normalisation (lowercase,
  punctuation and the articles a/an/the removed, whitespace collapsed; Rajpurkar et al. 2016,
  arXiv 1606.05250, the official v1.1 evaluation script).
* ``rouge_l``: ROUGE-L F-measure (Lin 2004) of the whole generation against the reference, from the
  ``rouge-score`` package (its tokenizer: lowercase alphanumeric tokens).
* ``score``: the source's own scorer on the extracted answer (reasoning-gym's ``score_answer``,
  in ``[0, 1]``) for rows that carry an ``entry``, otherwise ``rouge_l``.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from client.tasks.instruct import reasoning

INSTALL_HINT = 'pip install -e ".[instruct]"'
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def extract_answer(text: str) -> str:
    """The answer part of a generation (module docstring)."""
    tagged = _ANSWER_TAG.search(text)
    if tagged:
        return tagged.group(1).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def normalise(text: str) -> str:
    """SQuAD v1.1 answer normalisation."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


@lru_cache(maxsize=1)
def _rouge() -> Any:
    try:
        from rouge_score import rouge_scorer, tokenizers  # type: ignore[import-untyped]  # the package ships no type information
    except ImportError as exc:
        raise ImportError(f"task `instruct` scores generations with ROUGE-L from rouge-score: {INSTALL_HINT} "
                          "(or pip install rouge-score)") from exc
    # Its default tokenizer, passed explicitly: without one rouge-score logs "Using default tokenizer." through
    # absl, whose first log call installs a handler on the root logger, and every Flower log line of the
    # process is printed twice from then on.
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=tokenizers.DefaultTokenizer(use_stemmer=False))


def require_rouge() -> None:
    """Fail now, naming the install, when ``rouge-score`` is missing (not at the first evaluation)."""
    _rouge()


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of ``prediction`` against ``reference``."""
    return float(_rouge().score(reference, prediction)["rougeL"].fmeasure)


@dataclass(frozen=True)
class Scored:
    """One generation's scores and the answer extracted from it."""

    answer: str
    score: float
    exact_match: float
    rouge_l: float


def score_generation(generation: str, *, reference: str, source: str, entry: str) -> Scored:
    """Score one ``generation`` against its row's ``reference`` response (module docstring)."""
    answer = extract_answer(generation)
    exact = float(normalise(answer) == normalise(reference))
    rouge = rouge_l(generation, reference)
    own = reasoning.score(source, answer, entry) if entry else rouge
    return Scored(answer=answer, score=own, exact_match=exact, rouge_l=rouge)
