"""Questioners and answerers for guided questioning (GUIDEQ, arXiv 2411.05991; ``docs/tasks.md §6``).

A questioner writes one information-seeking question from the partial text, the classifier's top
candidate labels and the global keyword lexicon; an answerer answers it from the hidden second half
of the text, which stands in for the user.

- :class:`TemplateQuestioner` (CPU default, deterministic): asks about up to ``per_label`` keywords
  of each candidate label, skipping keywords already asked about (multi-turn). The classifier's
  top-3 already ranks the candidates, so the paper's "rule out improbable categories" step is left
  to it. With ``use_keywords=False`` it asks the generic no-keyword baseline question.
- :class:`LLMQuestioner`: the paper's few-shot prompt with any local causal LM, parsed by
  :func:`parse_question` (quoted ``QUESTION: "…"``, the prompt's own examples skipped, more than
  ``min_words`` words, else the sentinel ``"None"``).
- :class:`OverlapAnswerer` (CPU default): the hidden sentence sharing the most content words with the
  question; no answer (``""``) when none shares any, as an extractive QA model abstains.
- :class:`ExtractiveQAAnswerer`: an HF extractive question-answering model (e.g. a local
  deberta-v3-large-squad2), SQuAD-2 style with a no-answer option.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from client.tasks._batching import generate_ids, model_device
from client.tasks.guideq.occlusion import Lexicon, keywords, normalise

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

NO_QUESTION = "None"
# Function words and the template's own words never count as overlap.
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with about from into over after before is are was "
    "were be been being it its this that these those there here he she they we you i me my your our "
    "their them us do does did done have has had can could would should will may might must not no "
    "any some more most other tell anything else what which who whom whose when where why how "
    "involve involves mention mentions related".split()
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_QUESTION = re.compile(r"QUESTION:\s*[\"“]([^\"”]+)[\"”]")

# The three worked examples of the paper's prompt (arXiv 2411.05991), paraphrased.
FEW_SHOT = (
    ("I have been sneezing all week and my eyes itch.", ("allergy", "diabetes", "cold"),
     "Do your symptoms get worse around pollen, dust or pets, or do you also have a fever and sore throat?"),
    ("The program closes itself when I open a large file.", ("software bug", "user error", "hardware"),
     "Does the crash happen on other machines too, and does it show an error code or an overheating warning?"),
    ("My car makes a strange noise when I drive.", ("engine", "tire", "transmission"),
     "Does the noise change when you shift gears, when you accelerate, or when you drive over bumps?"),
)


def split_sentences(text: str) -> list[str]:
    """Sentences split after ``.``, ``!`` or ``?`` followed by whitespace (no NLTK model needed)."""
    return [s for s in _SENTENCE.split(text.strip()) if s]


def split_halves(text: str) -> tuple[str, str]:
    """``(first half, hidden second half)`` by sentences; one-sentence texts split by words."""
    sentences = split_sentences(text)
    if len(sentences) < 2:
        words = text.split()
        half = max(1, len(words) // 2)
        return " ".join(words[:half]), " ".join(words[half:])
    half = len(sentences) // 2
    return " ".join(sentences[:half]), " ".join(sentences[half:])


def content_words(text: str) -> set[str]:
    """Normalised words of ``text`` minus :data:`STOPWORDS`."""
    return {w for w in (normalise(t) for t in text.split()) if w and w not in STOPWORDS}


@dataclass(frozen=True)
class Question:
    """A question and the lexicon keywords it uses (never reused in a later turn)."""

    text: str
    keywords: tuple[str, ...] = ()


class Questioner(Protocol):
    def ask(self, partial: str, candidates: list[str], lexicon: Lexicon, exclude: set[str]) -> Question: ...


class Answerer(Protocol):
    def answer(self, question: str, hidden: str) -> str: ...


class TemplateQuestioner:
    """Deterministic keyword question (module docstring)."""

    GENERIC = "Can you tell me anything else about it?"

    def __init__(self, *, per_label: int = 3, use_keywords: bool = True) -> None:
        if per_label < 1:
            raise ValueError(f"`guideq.keywords-per-label` = {per_label} must be >= 1")
        self.per_label = per_label
        self.use_keywords = use_keywords

    def ask(self, partial: str, candidates: list[str], lexicon: Lexicon, exclude: set[str]) -> Question:
        if not self.use_keywords:
            return Question(self.GENERIC)
        groups, used = [], []
        for label in candidates:
            fresh = [k for k in keywords(lexicon, label) if k not in exclude and k not in used][: self.per_label]
            if fresh:
                groups.append(", ".join(fresh))
                used += fresh
        if not groups:
            return Question(self.GENERIC)
        return Question("Does it involve " + "; or ".join(groups) + "?", tuple(used))


def parse_question(output: str, *, min_words: int = 5) -> str:
    """The first quoted ``QUESTION: "…"`` of ``output`` that is not one of the prompt's examples and has
    more than ``min_words`` words (upstream: 5; 15 in its multi-turn script); else ``"None"``."""
    examples = {q for _, _, q in FEW_SHOT}
    for match in _QUESTION.finditer(output):
        question = match.group(1).strip()
        if question in examples or len(question.split()) <= min_words:
            continue
        return question
    return NO_QUESTION


def build_prompt(partial: str, candidates: list[str], lexicon: Lexicon, exclude: set[str], *,
                 use_keywords: bool = True, per_label: int = 5) -> tuple[str, tuple[str, ...]]:
    """The few-shot prompt (system role, two-step strategy, three examples) and the keywords it shows."""
    lines = ["You are an AI Expert. Given a partial description and candidate categories"
             + (" with their keywords" if use_keywords else "") + ", first rule out improbable categories, "
             "then ask ONE question that tells the remaining ones apart. End with QUESTION: \"...\"", ""]
    for text, labels, question in FEW_SHOT:
        lines += [f"Text: {text}", f"Categories: {', '.join(labels)}", f"QUESTION: \"{question}\"", ""]
    shown: list[str] = []
    cats = []
    for label in candidates:
        kws = [k for k in keywords(lexicon, label) if k not in exclude][:per_label] if use_keywords else []
        shown += kws
        cats.append(f"{label} ({', '.join(kws)})" if kws else label)
    lines += [f"Text: {partial}", f"Categories: {'; '.join(cats)}", "QUESTION: \""]
    return "\n".join(lines), tuple(shown)


class LLMQuestioner:
    """The few-shot prompt with a local causal LM (``model``/``tokenizer`` of HF), parsed robustly.

    If the model's output holds no usable question the sentinel ``"None"`` is asked, which an answerer
    cannot answer (the turn adds nothing)."""

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, *, use_keywords: bool = True,
                 max_new_tokens: int = 48,
                 temperature: float = 0.0, min_words: int = 5, seed: int = 0) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.use_keywords, self.max_new_tokens = use_keywords, max_new_tokens
        self.temperature, self.min_words, self.seed = temperature, min_words, seed

    def ask(self, partial: str, candidates: list[str], lexicon: Lexicon, exclude: set[str]) -> Question:
        prompt, shown = build_prompt(partial, candidates, lexicon, exclude, use_keywords=self.use_keywords)
        ids = self.tokenizer(prompt, return_tensors="pt")
        device = model_device(self.model)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            out = generate_ids(self.model, **{k: v.to(device) for k, v in ids.items()},
                               max_new_tokens=self.max_new_tokens, do_sample=self.temperature > 0,
                               temperature=self.temperature or None, pad_token_id=pad)
        completion = self.tokenizer.batch_decode(out[:, ids["input_ids"].shape[1]:], skip_special_tokens=True)[0]
        question = parse_question('QUESTION: "' + completion, min_words=self.min_words)
        used = tuple(k for k in shown if k in question.lower())
        return Question(question, used)


class OverlapAnswerer:
    """The hidden sentence with the largest content-word overlap with the question (ties: the first)."""

    def answer(self, question: str, hidden: str) -> str:
        asked = content_words(question)
        best, best_overlap = "", 0
        for sentence in split_sentences(hidden):
            overlap = len(asked & content_words(sentence))
            if overlap > best_overlap:
                best, best_overlap = sentence, overlap
        return best


class ExtractiveQAAnswerer:
    """An HF ``...ForQuestionAnswering`` model: the best span of ``hidden`` (at most ``max_answer_tokens``),
    or ``""`` when the no-answer score (start = end = the first token) beats every span."""

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, *, max_length: int = 384,
                 max_answer_tokens: int = 30) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_length, self.max_answer_tokens = max_length, max_answer_tokens

    def answer(self, question: str, hidden: str) -> str:
        if not hidden.strip():
            return ""
        enc = self.tokenizer(question, hidden, truncation="only_second", max_length=self.max_length,
                             return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0]
        context = torch.tensor([s == 1 for s in enc.sequence_ids(0)])  # (T,) tokens of `hidden`
        with torch.no_grad():
            out = self.model(**{k: v.to(model_device(self.model)) for k, v in enc.items()})
        start, end = out.start_logits[0].float().cpu(), out.end_logits[0].float().cpu()  # (T,)
        null = float(start[0] + end[0])
        scores = start[:, None] + end[None, :]  # (T, T): span [i, j]
        valid = context[:, None] & context[None, :]
        valid &= torch.triu(torch.ones_like(valid), 0) & ~torch.triu(torch.ones_like(valid), self.max_answer_tokens)
        scores = scores.masked_fill(~valid, float("-inf"))
        best = int(scores.argmax())
        i, j = divmod(best, scores.shape[1])
        if not torch.isfinite(scores[i, j]) or float(scores[i, j]) < null:
            return ""
        return hidden[int(offsets[i, 0]) : int(offsets[j, 1])]
