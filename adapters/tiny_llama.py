"""``tiny-llama``: a Llama-architecture model of a few million parameters built from a config.

No weights and no tokenizer files are downloaded. The tokenizer is byte-level (every UTF-8 byte is
a token, plus four specials), built with the ``tokenizers`` library, so any text encodes without an
unknown token. The random initialisation uses a fixed seed inside a forked RNG, so every process
builds bit-identical frozen weights (the property federated clients rely on) without touching the
global RNG.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
INIT_SEED = 20260101  # fixed: the frozen base must be the same in every process and every run
Built = TypeVar("Built")  # what seeded_init's build() returns


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: 4 specials + 256 byte symbols."""
    byte_symbols = list(pre_tokenizers.ByteLevel.alphabet())  # the 256 printable stand-ins for bytes
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *sorted(byte_symbols)])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def build_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """Hidden 256, 4 layers, 8 heads (4 KV heads), SwiGLU 512: about 2.5 M parameters."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def seeded_init(build: Callable[[], Built]) -> Built:
    """Run ``build()`` with the fixed init seed, leaving the caller's global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        return build()
