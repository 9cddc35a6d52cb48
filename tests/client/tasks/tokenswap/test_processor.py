"""``TokenSwapProcessor`` inside HF ``generate``: cache, padding, reset, re-tokenising path (``docs/tasks.md §4``)."""

from __future__ import annotations

import copy

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from client.tasks.tokenswap.processor import TokenSwapProcessor, generate_greedy
from client.tasks.tokenswap.swap import swap_distribution
from client.tasks.tokenswap.wordlm import CONTENT_WORDS, VOCAB, build_word_llama, build_word_tokenizer

STEPS = 6


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer()


@pytest.fixture(scope="module")
def main_model(tok):
    return build_word_llama(tok, hidden=32, seed=1)


@pytest.fixture(scope="module")
def aux_model(tok):
    return build_word_llama(tok, hidden=32, seed=2)


PROMPTS = ("the " + " ".join(CONTENT_WORDS[:5]), f"{CONTENT_WORDS[7]} of", " ".join(CONTENT_WORDS[10:13]) + " is a")


def encode_left(tok, prompts):
    ids = [tok(p)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tok.pad_token_id)
    mask = torch.zeros_like(input_ids)
    for i, row in enumerate(ids):
        input_ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return input_ids, mask


def run(model, tok, processor, prompts):
    """Generated ids and the processed scores per step, ``(B, STEPS)`` and ``(B, STEPS, V)``."""
    input_ids, mask = encode_left(tok, prompts)
    if processor is not None:
        processor.begin(mask)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=STEPS, min_new_tokens=STEPS,
                             do_sample=False, pad_token_id=tok.pad_token_id, output_scores=True,
                             return_dict_in_generate=True, logits_processor=[processor] if processor else None)
    return out.sequences[:, input_ids.shape[1]:], torch.stack(out.scores, dim=1)


def test_cache_and_no_cache_agree(tok, main_model, aux_model):
    cached = run(main_model, tok, TokenSwapProcessor(aux_model, tok, use_cache=True), PROMPTS)
    fresh = run(main_model, tok, TokenSwapProcessor(aux_model, tok, use_cache=False), PROMPTS)
    assert torch.equal(cached[0], fresh[0])
    torch.testing.assert_close(cached[1], fresh[1], atol=1e-5, rtol=1e-5)


def test_padded_batch_equals_single_runs(tok, main_model, aux_model):
    processor = TokenSwapProcessor(aux_model, tok)
    ids, scores = run(main_model, tok, processor, PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        one_ids, one_scores = run(main_model, tok, processor, [prompt])  # also exercises begin() as a reset
        assert torch.equal(ids[i], one_ids[0])
        torch.testing.assert_close(scores[i], one_scores[0], atol=1e-4, rtol=1e-4)


def test_reset_makes_calls_independent(tok, main_model, aux_model):
    processor = TokenSwapProcessor(aux_model, tok)
    first = run(main_model, tok, processor, PROMPTS[:2])
    run(main_model, tok, processor, PROMPTS[2:])
    again = run(main_model, tok, processor, PROMPTS[:2])
    assert torch.equal(first[0], again[0]) and torch.allclose(first[1], again[1])


def test_processed_scores_are_the_swapped_distribution(tok, main_model, aux_model):
    """One step by hand: softmax, aux softmax, swap, log; and the greedy pick obeys the closed form."""
    processor = TokenSwapProcessor(aux_model, tok)
    input_ids, mask = encode_left(tok, PROMPTS)
    processor.begin(mask)
    with torch.no_grad():
        raw = main_model(input_ids=input_ids, attention_mask=mask).logits[:, -1]
        aux = torch.softmax(aux_model(input_ids=input_ids, attention_mask=mask,
                                      position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits[:, -1], -1)
        got = processor(input_ids, raw)
    g = processor.g_main
    expected = swap_distribution(torch.softmax(raw, -1), aux, g, g)
    torch.testing.assert_close(got.exp(), expected.clamp_min(1e-10), atol=1e-6, rtol=1e-5)
    assert len(g) == 110  # the word-level vocabulary has every function word as one token


def permuted_world(tok, model, seed=3):
    """The same words under shuffled ids, and ``model`` re-indexed to match: an aux with another vocabulary."""
    perm = torch.randperm(len(VOCAB), generator=torch.Generator().manual_seed(seed))
    words = [VOCAB[i] for i in perm.tolist()]  # new id j holds old word perm[j]
    core = Tokenizer(models.WordLevel(vocab={w: j for j, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")
    other = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                    unk_token="<unk>")
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.model.embed_tokens.weight.copy_(model.model.embed_tokens.weight[perm])
        twin.lm_head.weight.copy_(model.lm_head.weight[perm])
    return other, twin


def test_retokenising_path_matches_shared_vocabulary(tok, main_model, aux_model):
    """An aux model with permuted ids must give exactly the shared-vocabulary result, batched and padded."""
    other_tok, twin = permuted_world(tok, aux_model)
    shared = run(main_model, tok, TokenSwapProcessor(aux_model, tok), PROMPTS)
    crossed = run(main_model, tok, TokenSwapProcessor(twin, tok, other_tok), PROMPTS)
    assert torch.equal(shared[0], crossed[0])
    torch.testing.assert_close(shared[1], crossed[1], atol=1e-4, rtol=1e-4)


def test_generate_greedy_fixed_length_and_identity_aux(tok, main_model):
    input_ids, mask = encode_left(tok, PROMPTS)
    with torch.no_grad():
        plain = generate_greedy(main_model, input_ids, mask, max_new_tokens=STEPS, pad_token_id=tok.pad_token_id)
        same = generate_greedy(main_model, input_ids, mask, max_new_tokens=STEPS, pad_token_id=tok.pad_token_id,
                               processor=TokenSwapProcessor(main_model, tok))
    assert plain.shape == (3, STEPS) and torch.equal(plain, same)  # p_aux = p_main: the identity
