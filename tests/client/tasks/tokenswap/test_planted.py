"""Planted memorisation (``docs/tasks.md §4``): a tiny word-level Llama overfits 20 secrets; TokenSwap with a
bigram auxiliary model trained on background text only stops their verbatim extraction, and leaves
secrets without grammar words in the suffix exactly as they were."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from client.tasks.tokenswap.aux import BigramLM
from client.tasks.tokenswap.data import background, make_canaries
from client.tasks.tokenswap.metrics import mean_metrics, reduction_factor
from client.tasks.tokenswap.processor import TokenSwapProcessor, generate_greedy
from client.tasks.tokenswap.wordlm import build_word_llama, build_word_tokenizer

SECRETS, CONTROLS, LENGTH, SUFFIX, REPEATS, STEPS = 20, 5, 30, 20, 50, 200


def encode(tok, text):
    return [tok.bos_token_id, *tok(text)["input_ids"]]


@pytest.fixture(scope="module")
def world():
    tok = build_word_tokenizer()
    canaries = make_canaries(0, count=SECRETS + CONTROLS, controls=CONTROLS, length=LENGTH, suffix=SUFFIX)
    back = [encode(tok, s) for s in background(0, "train", 400)]
    rows = [encode(tok, c.text) for c in canaries] * REPEATS + back
    model = build_word_llama(tok, hidden=64, layers=2, seed=0).train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    rng = random.Random(0)
    for _ in range(STEPS):
        batch = rng.sample(rows, 64)
        width = max(map(len, batch))
        ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in batch])
        mask = (torch.arange(width)[None] < torch.tensor([len(r) for r in batch])[:, None]).long()
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    aux = BigramLM(len(tok), back)
    return tok, model.eval(), aux, canaries


def extract(tok, model, canaries, processor):
    prompts = [encode(tok, c.text)[: 1 + LENGTH - SUFFIX] for c in canaries]
    refs = [encode(tok, c.text)[1 + LENGTH - SUFFIX:] for c in canaries]
    ids = torch.tensor(prompts)  # equal lengths: no padding needed
    with torch.no_grad():
        out = generate_greedy(model, ids, torch.ones_like(ids), max_new_tokens=SUFFIX,
                              pad_token_id=tok.pad_token_id, processor=processor)
    return out.tolist(), refs


def test_tokenswap_breaks_verbatim_extraction(world):
    tok, model, aux, canaries = world
    secrets = [c for c in canaries if not c.control]
    plain = mean_metrics(*extract(tok, model, secrets, None))
    swapped = mean_metrics(*extract(tok, model, secrets, TokenSwapProcessor(aux, tok)))
    assert plain["exact_match"] >= 0.9, plain
    assert swapped["exact_match"] <= 0.2, swapped
    assert reduction_factor(plain["exact_match"], swapped["exact_match"], len(secrets)) >= 5
    # Measured, not assumed: the design expected ROUGE-L to stay partly high (content leaks, only
    # verbatim copying breaks). In this 2-layer toy one swapped grammar word derails the rest of the
    # suffix, so ROUGE-L falls too (1.0 -> about 0.2 at seed 0); large models recover better.
    print(f"plain {plain}\nswapped {swapped}")
    assert 0 < swapped["rougeL"] < plain["rougeL"] and swapped["levenshtein"] > plain["levenshtein"]


def test_controls_without_grammar_words_are_unchanged(world):
    tok, model, aux, canaries = world
    controls = [c for c in canaries if c.control]
    plain, refs = extract(tok, model, controls, None)
    swapped, _ = extract(tok, model, controls, TokenSwapProcessor(aux, tok))
    assert plain == swapped
    assert mean_metrics(plain, refs)["exact_match"] >= 0.8  # they were memorised too
