"""A word-level vocabulary, tokenizer and tiny Llama for memorisation experiments (``docs/tasks.md §4``).

TokenSwap acts on whole grammar *tokens*; the project's ``tiny-llama`` is byte-level, where every
function word starts with the same byte (the space) and G collapses to one id. This module builds a
word-level world instead, with no downloads: :data:`CONTENT_WORDS` (pseudo-words from a seeded
syllable generator) plus the function words of G, a ``tokenizers`` WordLevel tokenizer over them,
and a config-built Llama small enough to overfit in seconds on a CPU. :func:`save_word_model` writes
both as a local HF checkpoint, which ``model.name = <that folder>`` then loads like any other model.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from client.tasks.tokenswap.words import FUNCTION_WORDS

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def _content_words(count: int, seed: int = 7) -> tuple[str, ...]:
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]
    rng = random.Random(f"corolla-wordlm:{seed}")
    words: list[str] = []
    seen = set(FUNCTION_WORDS)
    while len(words) < count:
        word = "".join(rng.choice(syllables) for _ in range(rng.choice((2, 3))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return tuple(words)


CONTENT_WORDS: tuple[str, ...] = _content_words(150)
VOCAB: tuple[str, ...] = (*SPECIAL_TOKENS, *FUNCTION_WORDS, *CONTENT_WORDS)


def build_word_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace-split WordLevel tokenizer over :data:`VOCAB`; decoding joins words with spaces."""
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins pieces with a space; no piece has the prefix
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=256)


def build_word_llama(tokenizer: PreTrainedTokenizerFast, *, hidden: int = 64, layers: int = 2,
                     seed: int = 0) -> LlamaForCausalLM:
    """A random-init Llama over the word vocabulary (hidden 64, 2 layers, 4 heads: ~0.1 M parameters)."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).eval()


def save_word_model(folder: str | Path, *, seed: int = 0) -> Path:
    """Write a random-init word-level Llama and its tokenizer to ``folder`` (an HF checkpoint that
    ``model.name`` or ``tokenswap.aux-model`` can point at); returns the folder."""
    folder = Path(folder)
    tokenizer = build_word_tokenizer()
    build_word_llama(tokenizer, seed=seed).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
