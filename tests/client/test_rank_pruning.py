"""The client side of HetLoRA's rank self-pruning (arXiv 2401.06432 §3.2; docs/algorithms.md §19): the tail
regulariser's value and gradient, the prune decision, and the node's rank kept in ``Context.state``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict

from adapters.payload import layout
from adapters.peft_model import ADAPTER, adapted_layers
from client.rank_pruning import STATE_RANK, RankPruning, tail_norm
from contract import CONFIG
from contract.rank_pruning import PruneRule
from tests.adapters.toys import one_layer

ALPHA, M, N = 8.0, 6, 5
A_KEY, B_KEY = "q.lora_A.weight", "q.lora_B.weight"


def context() -> Context:
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})


def instruction(rule: PruneRule) -> RecordDict:
    return RecordDict({CONFIG: ConfigRecord({"server-round": 1, **rule.to_config()})})


def pair_layout(rank: int) -> dict:
    return {"q": {"a_key": A_KEY, "b_key": B_KEY, "scale": ALPHA / rank, "form": "pair"}}


def payload(rank: int, tail_scale: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Random factors whose components from index 2 on are multiplied by ``tail_scale``."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(rank, N)), rng.normal(size=(M, rank))  # A: (r, n), B: (m, r)
    a[2:] *= tail_scale
    b[:, 2:] *= tail_scale
    return {A_KEY: a.astype(np.float32), B_KEY: b.astype(np.float32)}


def started(rule: PruneRule, ctx: Context, rank: int, *, configured: int | None = None) -> RankPruning:
    """A node's pruning for one message whose payload has rank ``rank``."""
    pruning = RankPruning.of(instruction(rule), ctx, configured=configured or rank)
    assert pruning is not None
    pruning.fit(payload(rank, 1.0), pair_layout)
    return pruning


def test_no_rule_in_the_instruction_means_no_pruning() -> None:
    assert RankPruning.of(RecordDict({CONFIG: ConfigRecord({"server-round": 1})}), context(), configured=4) is None


def test_the_regulariser_is_lambda_times_the_tail_norms_and_its_gradient_is_the_product_rule() -> None:
    model = one_layer("linear", method="lora", rank=4, alpha=ALPHA)
    layer = next(iter(adapted_layers(model).values()))
    a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight  # A: (4, n), B: (m, 4)
    rng = np.random.default_rng(1)
    with torch.no_grad():
        a.copy_(torch.from_numpy(rng.normal(size=tuple(a.shape))))
        b.copy_(torch.from_numpy(rng.normal(size=tuple(b.shape))))
    pruning = RankPruning(rule=PruneRule(gamma=0.5, lam=0.3, min_rank=1), context=context(), configured=4, rank=4)
    penalty = pruning.regulariser(model)
    assert penalty is not None
    value = penalty()
    a_t, b_t = a.detach().numpy()[2:], b.detach().numpy()[:, 2:]  # the last ⌈0.5·4⌉ = 2 components
    na, nb = np.linalg.norm(a_t), np.linalg.norm(b_t)
    assert value.item() == pytest.approx(0.3 * na * nb, rel=1e-12)
    value.backward()
    np.testing.assert_allclose(b.grad.numpy()[:, 2:], 0.3 * na * b_t / nb, rtol=1e-12)  # ∂(λ‖B_t‖‖A_t‖)/∂B_t
    np.testing.assert_allclose(a.grad.numpy()[2:], 0.3 * nb * a_t / na, rtol=1e-12)
    assert not b.grad[:, :2].any() and not a.grad[:2].any()  # the kept components are not penalised
    a.grad = b.grad = None
    with torch.no_grad():
        b[:, 2:] = 0  # a fresh LoRA B: the norm's kink at zero gives a zero, finite gradient
    penalty().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all() and not a.grad.any()


def test_no_regulariser_at_the_floor_or_with_lambda_zero() -> None:
    at_floor = RankPruning(rule=PruneRule(gamma=0.5, lam=0.3, min_rank=4), context=context(), configured=4, rank=4)
    no_lambda = RankPruning(rule=PruneRule(gamma=0.5, lam=0.0, min_rank=1), context=context(), configured=4, rank=4)
    assert at_floor.regulariser(object()) is None and no_lambda.regulariser(object()) is None


def test_a_shrinking_tail_cuts_the_rank_by_ceil_gamma_r_in_effective_units() -> None:
    rule, ctx = PruneRule(gamma=0.25, lam=0.1, min_rank=1), context()
    first = started(rule, ctx, 8)
    out = first.prune(payload(8, 1.0), pair_layout(8))  # no earlier tail: only recorded
    assert first.rank == 8 and not first.pruned and out[A_KEY].shape == (8, N)
    first.commit()
    before = ctx.state.config_records[STATE_RANK]
    assert before["tail-rank"] == 8 and before["tail-norm"] == pytest.approx(tail_norm(payload(8, 1.0), pair_layout(8), 6))

    second = started(rule, ctx, 8)
    trained = payload(8, 0.5)  # the tail (components 6, 7) shrank
    out = second.prune(trained, pair_layout(8))
    assert second.pruned and second.rank == 6  # 8 - ⌈0.25·8⌉
    assert out[A_KEY].shape == (6, N) and out[B_KEY].shape == (M, 6)
    kept = (ALPHA / 8) * trained[B_KEY][:, :6].astype(np.float64) @ trained[A_KEY][:6].astype(np.float64)
    np.testing.assert_allclose((ALPHA / 6) * out[B_KEY].astype(np.float64) @ out[A_KEY].astype(np.float64), kept, rtol=1e-6)
    second.commit()
    assert dict(ctx.state.config_records[STATE_RANK]) == {"rank": 6}  # the new rank's tail is first only recorded


def test_a_growing_tail_keeps_the_rank_and_records_the_new_norm() -> None:
    rule, ctx = PruneRule(gamma=0.25, lam=0.1, min_rank=1), context()
    first = started(rule, ctx, 8)
    first.prune(payload(8, 1.0), pair_layout(8))
    first.commit()
    second = started(rule, ctx, 8)
    out = second.prune(payload(8, 2.0), pair_layout(8))
    assert not second.pruned and second.rank == 8 and out[A_KEY].shape == (8, N)
    second.commit()
    assert ctx.state.config_records[STATE_RANK]["tail-norm"] == pytest.approx(tail_norm(payload(8, 2.0), pair_layout(8), 6))


def test_the_floor_is_respected() -> None:
    rule, ctx = PruneRule(gamma=0.5, lam=0.1, min_rank=3), context()
    for scale in (1.0, 0.5, 0.25):
        pruning = started(rule, ctx, 4, configured=4)  # the round's rank: the stored one once there is one
        pruning.prune(payload(pruning.rank, scale), pair_layout(pruning.rank))
        pruning.commit()
    assert dict(ctx.state.config_records[STATE_RANK]) == {"rank": 3}  # 4 - ⌈0.5·4⌉ = 2 would cross the floor of 3


def test_the_rank_lives_in_context_state_and_the_round_takes_the_smaller_of_own_and_sent() -> None:
    rule, ctx = PruneRule(gamma=0.5, lam=0.1, min_rank=1), context()
    ctx.state[STATE_RANK] = ConfigRecord({"rank": 4})  # pruned in an earlier round (a fresh process reads it back)
    calls: list[int] = []

    def use_rank(rank: int) -> dict:
        calls.append(rank)
        return pair_layout(rank)

    pruning = RankPruning.of(instruction(rule), ctx, configured=8)
    assert pruning is not None and pruning.own_rank() == 4
    sent = payload(8, 1.0)  # the server still held rank 8 (it dropped the reply that pruned)
    fitted = pruning.fit(sent, use_rank)
    assert pruning.rank == 4 and calls[-1] == 4 and fitted[A_KEY].shape == (4, N)
    np.testing.assert_allclose(  # the first 4 components, rescaled from α/8 to α/4
        (ALPHA / 4) * fitted[B_KEY].astype(np.float64) @ fitted[A_KEY].astype(np.float64),
        (ALPHA / 8) * sent[B_KEY][:, :4].astype(np.float64) @ sent[A_KEY][:4].astype(np.float64), rtol=1e-6,
    )
    again = RankPruning.of(instruction(rule), ctx, configured=8)
    assert again is not None
    again.fit(payload(2, 1.0), use_rank)  # a payload smaller than its own rank: trained as sent
    assert again.rank == 2 and calls[-1] == 2


def test_a_real_layout_round_trips() -> None:
    model = one_layer("linear", method="lora", rank=4, alpha=ALPHA)
    entries = layout(model)
    ctx = context()
    rule = PruneRule(gamma=0.5, lam=0.1, min_rank=1)
    pruning = RankPruning(rule=rule, context=ctx, configured=4, rank=4)
    (entry,) = entries.values()
    arrays = {entry["a_key"]: np.ones((4, 32), np.float32), entry["b_key"]: np.ones((48, 4), np.float32)}
    assert tail_norm(arrays, entries, 2) == pytest.approx(np.sqrt(2 * 32) * np.sqrt(2 * 48))
    pruning.prune(arrays, entries)
    assert pruning.rank == 4
