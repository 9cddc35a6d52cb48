"""Prompts, response-only labels (token by token), EOS, truncation that keeps the response, drops."""

from __future__ import annotations

import pytest

from client.tasks.instruct.prompting import (
    IGNORE_INDEX,
    encode,
    generation_prompt,
    plain_prompt,
    prompt_ids,
    resolve_template,
)

TURNS = (("user", "How many legs do 2 cats have?"),)
RESPONSE = "8"


def test_template_resolution(plain_tokenizer, chatml_tokenizer) -> None:
    assert resolve_template(plain_tokenizer, "auto") == "plain"
    assert resolve_template(chatml_tokenizer, "auto") == "chat"
    assert resolve_template(chatml_tokenizer, "plain") == "plain"
    with pytest.raises(ValueError, match="has no chat template; use `plain` or `auto`"):
        resolve_template(plain_tokenizer, "chat")


def test_plain_template_text_and_labels_token_by_token(plain_tokenizer) -> None:
    tok = plain_tokenizer
    text = plain_prompt((("system", "Be brief."), ("user", "Q1"), ("assistant", "A1"), ("user", "Q2")))
    assert text == "Be brief.\n\n### Instruction:\nQ1\n\n### Response:\nA1\n\n### Instruction:\nQ2\n\n### Response:\n"
    enc = encode(tok, TURNS, RESPONSE, template="plain", max_length=256)
    assert enc is not None
    expected_prompt = tok(plain_prompt(TURNS), add_special_tokens=False)["input_ids"]
    bos = [tok.bos_token_id] if tok("x")["input_ids"][0] == tok.bos_token_id else []
    expected = bos + expected_prompt + tok(RESPONSE, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert enc.input_ids == expected
    n_prompt = len(bos) + len(expected_prompt)
    assert enc.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert enc.labels[n_prompt:] == expected[n_prompt:]  # the response, then EOS, and nothing else
    assert tok.decode(enc.labels[n_prompt:]) == RESPONSE + tok.eos_token
    assert enc.response_tokens == len(RESPONSE) + 1


def test_chat_template_is_applied_and_only_the_response_is_labelled(chatml_tokenizer) -> None:
    tok = chatml_tokenizer
    enc = encode(tok, TURNS, RESPONSE, template="chat", max_length=256)
    assert enc is not None
    text = tok.decode(enc.input_ids)
    assert text == f"<|im_start|>user\n{TURNS[0][1]}<|im_end|>\n<|im_start|>assistant\n{RESPONSE}</s>"
    labelled = [t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE_INDEX]
    assert labelled == enc.input_ids[-len(labelled):]  # one contiguous block at the end
    assert tok.decode(labelled) == RESPONSE + "</s>"


def test_smollm2_chat_template_token_by_token(smollm2_tokenizer) -> None:
    tok = smollm2_tokenizer
    assert tok.chat_template and resolve_template(tok, "auto") == "chat"
    enc = encode(tok, TURNS, " 8 legs", template="chat", max_length=256)
    assert enc is not None
    prompt = tok.apply_chat_template([{"role": "user", "content": TURNS[0][1]}], add_generation_prompt=True,
                                     tokenize=True, return_dict=True)["input_ids"]
    response = tok(" 8 legs", add_special_tokens=False)["input_ids"]
    assert enc.input_ids == list(prompt) + list(response) + [tok.eos_token_id]
    assert tok.decode(enc.input_ids[: len(prompt)]).endswith("<|im_start|>assistant\n")
    for position, (token, label) in enumerate(zip(enc.input_ids, enc.labels, strict=True)):
        assert label == (IGNORE_INDEX if position < len(prompt) else token), position
    assert tok.convert_ids_to_tokens(enc.labels[-1]) == "<|im_end|>"  # SmolLM2's EOS ends the turn


def test_truncation_cuts_the_prompt_from_its_start_and_keeps_the_response(plain_tokenizer) -> None:
    tok = plain_tokenizer
    long_turns = (("user", "word " * 100 + "END?"),)
    full = encode(tok, long_turns, RESPONSE, template="plain", max_length=4096)
    cut = encode(tok, long_turns, RESPONSE, template="plain", max_length=40)
    assert full is not None and cut is not None
    assert len(cut.input_ids) == 40
    assert cut.input_ids == full.input_ids[-40:]  # the prompt's end (turn header) and the whole response
    assert tok.decode([t for t, l in zip(cut.input_ids, cut.labels) if l != IGNORE_INDEX]) == RESPONSE + "</s>"
    assert not tok.decode(cut.input_ids).startswith("### Instruction")  # the start is what was cut
    assert "### Response:\n" + RESPONSE in tok.decode(cut.input_ids)


def test_a_response_that_cannot_fit_is_dropped(plain_tokenizer) -> None:
    tok = plain_tokenizer
    response = "x" * 30  # 30 bytes + EOS = 31 tokens
    assert encode(tok, TURNS, response, template="plain", max_length=31) is None  # no room for a prompt token
    kept = encode(tok, TURNS, response, template="plain", max_length=32)
    assert kept is not None and kept.labels[0] == IGNORE_INDEX and kept.response_tokens == 31


def test_generation_prompt_leaves_room_for_new_tokens(plain_tokenizer) -> None:
    ids = prompt_ids(plain_tokenizer, TURNS, template="plain")
    assert generation_prompt(plain_tokenizer, TURNS, template="plain", max_length=1000, max_new_tokens=8) == ids
    assert generation_prompt(plain_tokenizer, TURNS, template="plain", max_length=30, max_new_tokens=8) == ids[-22:]
