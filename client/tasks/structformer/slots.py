"""Synthetic "slot" documents whose answer is reachable only through global attention (``docs/tasks.md §7``).

A document is a two-word title, one heading ``h`` out of 8 and a body of ``body_len`` filler words
drawn uniformly from a shared vocabulary (no topic). Somewhere beyond ``min_gap`` words after the
heading sits the pair ``[SLOT] k(h)``: the keyword is a fixed function of the heading. The collator
always masks the keyword, so predicting it needs the heading; with the tiny model's 2 layers x 8
tokens per side, a heading more than 32 tokens back is out of local reach, and only a global heading
token carries it. Words come from ``adapters.tiny_longformer.WORDS``: headings w000-w007, keywords
w008-w015, titles w016-w031, filler w032-w191.
"""

from __future__ import annotations

import random

from adapters.tiny_longformer import WORDS
from client.tasks.structformer.docs import StructuredDoc

HEADINGS, KEYWORDS, TITLES, FILLER = WORDS[0:8], WORDS[8:16], WORDS[16:32], WORDS[32:]
SLOT = "[SLOT]"


def slot_document(rng: random.Random, *, body_len: int = 200, min_gap: int = 33) -> tuple[StructuredDoc, int]:
    """One slot document and its heading id; the slot sits at least ``min_gap`` words after the heading."""
    if body_len < min_gap + 2:
        raise ValueError(f"`structformer.body-length` = {body_len} must be at least min-gap + 2 = {min_gap + 2}")
    h = rng.randrange(len(HEADINGS))
    body = [rng.choice(FILLER) for _ in range(body_len)]
    at = rng.randrange(min_gap - 1, body_len - 1)  # the heading is word 0 of its section: gap = at + 1
    body[at : at + 2] = [SLOT, KEYWORDS[h]]
    title = " ".join(rng.choice(TITLES) for _ in range(2))
    return StructuredDoc(heading=title, children=[StructuredDoc(HEADINGS[h], [" ".join(body)])]), h


def slot_split(seed: int, split: str, size: int, *, body_len: int = 200, min_gap: int = 33) -> list[StructuredDoc]:
    """``size`` slot documents, a pure function of the arguments."""
    rng = random.Random(f"corolla-slots:{seed}:{split}")
    return [slot_document(rng, body_len=body_len, min_gap=min_gap)[0] for _ in range(size)]
