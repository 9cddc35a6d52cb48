"""The grammar token set G of TokenSwap (arXiv 2502.05159 §3; ``docs/tasks.md §4``).

G is a fixed list of English function words, not chosen at run time. Each word is written with a
leading space and maps to the **first** sub-token id of ``tokenizer.encode(" word")``, as the
authors' library does. The list below is our own grouping into four classes
(determiners, pronouns, prepositions/conjunctions, auxiliaries/modals); it has 110 words like the
paper's, but it is not a copy of it.

A byte- or character-level tokenizer maps every " word" to the same first piece (the space), so G
collapses to one id and mass-preserving TokenSwap becomes the identity there: use a word- or
subword-level tokenizer (``client.tasks.tokenswap.wordlm`` builds one for tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FUNCTION_WORDS: tuple[str, ...] = (
    # articles and determiners (20)
    "the", "a", "an", "this", "that", "these", "those", "each", "every", "any", "some", "all", "no",
    "both", "either", "neither", "such", "another", "other", "much",
    # pronouns and possessives (28)
    "i", "you", "it", "he", "she", "we", "they", "me", "him", "her", "us", "them", "my", "your",
    "his", "its", "our", "their", "who", "whom", "whose", "which", "what", "itself", "himself",
    "themselves", "one", "there",
    # prepositions and conjunctions (36)
    "to", "of", "in", "for", "on", "with", "from", "by", "at", "as", "into", "onto", "about",
    "over", "under", "between", "through", "during", "without", "within", "after", "before",
    "against", "among", "and", "or", "but", "if", "because", "than", "while", "whether",
    "although", "though", "so", "nor",
    # auxiliary and modal verbs (26)
    "is", "was", "be", "have", "are", "do", "had", "has", "were", "will", "did", "been", "could",
    "would", "should", "may", "might", "must", "can", "being", "having", "does", "am", "shall",
    "not", "then",
)


def parse_words(text: str) -> tuple[str, ...]:
    """``tokenswap.words``: a comma-separated list, or the built-in :data:`FUNCTION_WORDS` if empty."""
    words = tuple(w.strip() for w in text.split(",") if w.strip())
    return words or FUNCTION_WORDS


def first_piece(tokenizer: PreTrainedTokenizerBase, word: str) -> int | None:
    """First sub-token id of ``" " + word`` (no special tokens), or ``None`` if it encodes to nothing."""
    ids = list(tokenizer(" " + word, add_special_tokens=False)["input_ids"])
    return int(ids[0]) if ids else None


def aligned_token_sets(
    main_tokenizer: PreTrainedTokenizerBase, aux_tokenizer: PreTrainedTokenizerBase | None = None,
    words: Sequence[str] = FUNCTION_WORDS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """G as aligned id vectors ``(g_main, g_aux)``: entry ``i`` is the same word in both vocabularies.

    A word whose first piece repeats an id already taken (in either vocabulary) is dropped, so each
    vector has distinct ids and the swap is a bijection between them. ``aux_tokenizer=None`` means the
    two models share ``main_tokenizer``.
    """
    aux_tokenizer = aux_tokenizer or main_tokenizer
    seen_main: set[int] = set()
    seen_aux: set[int] = set()
    g_main: list[int] = []
    g_aux: list[int] = []
    for word in words:
        m, a = first_piece(main_tokenizer, word), first_piece(aux_tokenizer, word)
        if m is None or a is None or m in seen_main or a in seen_aux:
            continue
        seen_main.add(m)
        seen_aux.add(a)
        g_main.append(m)
        g_aux.append(a)
    return torch.tensor(g_main, dtype=torch.long), torch.tensor(g_aux, dtype=torch.long)
