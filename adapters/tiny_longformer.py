"""``tiny-longformer``: a Longformer masked LM of ~0.1 M parameters built from a config, for CPU tests.

StructFormer (arXiv 2411.16618 §3) continues pre-training Longformer-base-4096 with global attention
on heading tokens; for CPU runs Corolla (``docs/tasks.md §7``) shrinks it to 2 layers, hidden 64, 2 heads and a
local window of 16 (8 tokens each side), so that 2 layers see at most 16 tokens either way and an
answer more than 32 tokens from a heading is reachable *only* through global attention.

The tokenizer is word-level (``tokenizers``' ``WordLevel``, whitespace pre-tokenizer) over a fixed,
opaque vocabulary: the RoBERTa-style specials, two structure markers (``<sec>``, ``[SLOT]``) and
192 word types ``w000`` … ``w191``. Any other word is ``<unk>``: this is a test model for synthetic
documents built from that vocabulary; real documents need a real checkpoint (``model.name`` = a
local Longformer directory). Initialisation is seeded in a forked RNG (``tiny_llama.seeded_init``),
so every process builds bit-identical frozen weights.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LongformerConfig, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
MARKER_TOKENS = ("<sec>", "[SLOT]")  # a per-heading marker (global policy "marker") and the slot cue
WORDS: tuple[str, ...] = tuple(f"w{i:03d}" for i in range(192))
ATTENTION_WINDOW = 16  # both sides together, per layer (8 each side, docs/tasks.md §7)
MAX_POSITIONS = 520  # RoBERTa-style positions start at pad_id + 1, so sequences up to 518 tokens


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer: 5 specials, 2 markers, 192 words (199 ids); unknown words -> ``<unk>``."""
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *MARKER_TOKENS, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        additional_special_tokens=list(MARKER_TOKENS),
        model_max_length=MAX_POSITIONS - 2,
    )


def build_config(tokenizer: PreTrainedTokenizerFast) -> LongformerConfig:
    """2 layers, hidden 64, 2 heads, FFN 128, window 16 per layer (``docs/tasks.md §7``)."""
    return LongformerConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        attention_window=[ATTENTION_WINDOW, ATTENTION_WINDOW],
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
