"""Synthetic text for memorisation: templated background sentences and planted canaries (``docs/tasks.md §4``).

*Background* sentences follow a few fixed grammatical frames, so function words appear in a
predictable, frame-determined order: a model of the background alone (the auxiliary model) learns
that order. *Canaries* ("secrets") are random word strings whose suffix holds at least
``min_function_words`` function words drawn uniformly from G, placed at random: only a model that
memorised a canary knows which function word comes where. *Control* canaries hold no function word
in their suffix, so TokenSwap cannot touch them (their extraction must not change).
Everything is a pure function of the seed (a private ``random.Random``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from client.tasks.tokenswap.wordlm import CONTENT_WORDS
from client.tasks.tokenswap.words import FUNCTION_WORDS

# Frames: "N" a content word, anything else a literal function word.
FRAMES: tuple[tuple[str, ...], ...] = (
    ("the", "N", "of", "the", "N", "is", "N"),
    ("a", "N", "was", "N", "by", "the", "N"),
    ("they", "N", "the", "N", "and", "the", "N"),
    ("we", "have", "N", "with", "a", "N", "in", "the", "N"),
    ("it", "is", "N", "to", "N", "for", "their", "N"),
    ("she", "will", "N", "from", "his", "N", "at", "N"),
)


@dataclass(frozen=True)
class Canary:
    """One planted sequence; ``control`` marks a suffix without function words."""

    words: tuple[str, ...]
    control: bool

    @property
    def text(self) -> str:
        return " ".join(self.words)


def background_sentence(rng: random.Random) -> str:
    """One sentence of one or two frames with random content words."""
    words: list[str] = []
    for _ in range(rng.choice((1, 2))):
        words += [rng.choice(CONTENT_WORDS) if w == "N" else w for w in rng.choice(FRAMES)]
    return " ".join(words)


def make_canary(rng: random.Random, *, length: int, suffix: int, min_function_words: int, control: bool) -> Canary:
    """A random word string; the last ``suffix`` words hold >= ``min_function_words`` function words
    (none if ``control``). Prefix words are content words only, so the prefix never leaks G order."""
    if not 0 < suffix < length:
        raise ValueError(f"suffix ({suffix}) must be in (0, length={length})")
    words = [rng.choice(CONTENT_WORDS) for _ in range(length)]
    if not control:
        count = rng.randint(min_function_words, max(min_function_words, suffix // 3))
        for pos in rng.sample(range(length - suffix, length), count):
            words[pos] = rng.choice(FUNCTION_WORDS)
    return Canary(words=tuple(words), control=control)


def make_canaries(seed: int, *, count: int, controls: int, length: int, suffix: int,
                  min_function_words: int = 5) -> list[Canary]:
    """``count`` canaries, the last ``controls`` of them control canaries."""
    rng = random.Random(f"corolla-canaries:{seed}")
    return [make_canary(rng, length=length, suffix=suffix, min_function_words=min_function_words,
                        control=i >= count - controls) for i in range(count)]


def background(seed: int, split: str, size: int) -> list[str]:
    """``size`` background sentences of one split."""
    rng = random.Random(f"corolla-background:{seed}:{split}")
    return [background_sentence(rng) for _ in range(size)]
