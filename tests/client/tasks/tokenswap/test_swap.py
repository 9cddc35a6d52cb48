"""Invariants of ``swap_distribution`` on random distributions (``docs/tasks.md §4``; vocabulary 50, |G| = 8)."""

from __future__ import annotations

import pytest
import torch

from client.tasks.tokenswap.swap import swap_distribution
from client.tasks.tokenswap.words import FUNCTION_WORDS, aligned_token_sets, parse_words

V, B = 50, 6


@pytest.fixture()
def case():
    gen = torch.Generator().manual_seed(0)
    p_main = torch.softmax(3 * torch.randn(B, V, generator=gen, dtype=torch.float64), -1)
    p_aux = torch.softmax(3 * torch.randn(B, V, generator=gen, dtype=torch.float64), -1)
    g = torch.randperm(V, generator=gen)[:8]
    return p_main, p_aux, g


def off(g: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(V, dtype=torch.bool)
    mask[g] = False
    return mask


@pytest.mark.parametrize("mode", ["mass-preserving", "naive"])
def test_rows_are_distributions(case, mode):
    p_main, p_aux, g = case
    out = swap_distribution(p_main, p_aux, g, g, mode)
    assert (out >= 0).all()
    torch.testing.assert_close(out.sum(-1), torch.ones(B, dtype=torch.float64))


def test_mass_on_g_preserved_and_off_g_untouched(case):
    p_main, p_aux, g = case
    out = swap_distribution(p_main, p_aux, g, g)
    torch.testing.assert_close(out[:, g].sum(-1), p_main[:, g].sum(-1))
    torch.testing.assert_close(out[:, off(g)], p_main[:, off(g)], rtol=0, atol=1e-15)  # renormalising: rounding only


def test_within_g_order_and_ratios_follow_aux(case):
    p_main, p_aux, g = case
    out = swap_distribution(p_main, p_aux, g, g)
    torch.testing.assert_close(out[:, g] / out[:, g].sum(-1, keepdim=True), p_aux[:, g] / p_aux[:, g].sum(-1, keepdim=True))
    assert torch.equal(out[:, g].argsort(-1), p_aux[:, g].argsort(-1))


def test_identity_cases(case):
    p_main, p_aux, g = case
    torch.testing.assert_close(swap_distribution(p_main, p_main, g, g), p_main)
    empty = torch.empty(0, dtype=torch.long)
    assert torch.equal(swap_distribution(p_main, p_aux, empty, empty), p_main)
    # |G| = 1: mass preservation leaves nothing to choose
    torch.testing.assert_close(swap_distribution(p_main, p_aux, g[:1], g[:1]), p_main)


def test_naive_mode_differs_exactly_as_predicted(case):
    p_main, p_aux, g = case
    out = swap_distribution(p_main, p_aux, g, g, "naive")
    s_main, s_aux = p_main[:, g].sum(-1, keepdim=True), p_aux[:, g].sum(-1, keepdim=True)
    z = 1 - s_main + s_aux
    torch.testing.assert_close(out[:, off(g)], p_main[:, off(g)] / z)
    torch.testing.assert_close(out[:, g], p_aux[:, g] / z)


def test_greedy_closed_form(case):
    """argmax changes only through G: the best G candidate S_M·max p_a/S_a against the best non-G."""
    p_main, p_aux, g = case
    for row in range(B):
        pm, pa = p_main[row], p_aux[row]
        s_m, s_a = pm[g].sum(), pa[g].sum()
        best_g_val, best_g = (s_m * pa[g].max() / s_a).item(), g[pa[g].argmax()].item()
        non_g = pm.masked_fill(~off(g), -1)
        expected = best_g if best_g_val > non_g.max().item() else non_g.argmax().item()
        assert swap_distribution(pm, pa, g, g).argmax().item() == expected


def test_different_vocabularies_use_aligned_ids():
    gen = torch.Generator().manual_seed(1)
    p_main = torch.softmax(torch.randn(2, 30, generator=gen, dtype=torch.float64), -1)
    p_aux = torch.softmax(torch.randn(2, 70, generator=gen, dtype=torch.float64), -1)
    g_main, g_aux = torch.tensor([3, 7, 9]), torch.tensor([60, 2, 41])
    out = swap_distribution(p_main, p_aux, g_main, g_aux)
    ratio = out[:, g_main] / p_aux[:, g_aux]
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))
    with pytest.raises(ValueError, match="tokenswap.mode"):
        swap_distribution(p_main, p_aux, g_main, g_aux, "replace")  # type: ignore[arg-type]


def test_word_list_and_byte_tokenizer_collapse(bytes_tokenizer):
    assert len(FUNCTION_WORDS) == 110 == len(set(FUNCTION_WORDS))
    assert parse_words("") == FUNCTION_WORDS and parse_words(" the, of ,") == ("the", "of")
    g_main, g_aux = aligned_token_sets(bytes_tokenizer)
    assert g_main.tolist() == g_aux.tolist() and len(g_main) == 1  # every " word" starts with the space byte
