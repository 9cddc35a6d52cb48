"""privacy.engine on tiny-llama with every adapter kind: per-example gradients, exactness, clipping, noise."""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import RecordDict

from adapters.lora_sb import adapted_layers
from adapters.payload import extract
from privacy import BudgetExhausted, DPConfig, PrivateTraining, privatize
from privacy._opacus import create_accountant
from tests.privacy.models import (
    CASE_IDS,
    CASES,
    batch,
    build,
    example_losses,
    frozen,
    per_example_grads,
    restore,
    snapshot,
    trainable,
)

B = 4
EXACT = DPConfig(enabled=True, noise_multiplier=0.0, max_grad_norm=1e6, poisson_sampling=False)


def _private(model: torch.nn.Module, config: DPConfig, *, lr: float = 0.5, adam: bool = False, n: int = B,
             steps: int = 1, planned_rounds: int = 1, state: RecordDict | None = None) -> PrivateTraining:
    params = list(trainable(model).values())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0) if adam else torch.optim.SGD(params, lr=lr)
    return privatize(model, opt, config=config, num_examples=n, batch_size=B, steps=steps,
                     planned_rounds=planned_rounds, state=state)


def _dp_step(private: PrivateTraining, data: dict[str, torch.Tensor]) -> None:
    private.optimizer.zero_grad(set_to_none=True)
    example_losses(private.module, data).mean().backward()
    private.optimizer.step()


@pytest.mark.parametrize(("method", "kind"), CASES, ids=CASE_IDS)
def test_per_sample_gradients_equal_a_per_example_loop(method: str, kind: str) -> None:
    # Prepare
    model, data = build(method, kind, dtype=torch.float64), batch(kind, B)
    expected = per_example_grads(model, data)
    # Execute
    with _private(model, EXACT) as private:
        example_losses(private.module, data).mean().backward()
        got = {n: p.grad_sample.detach().clone() for n, p in trainable(private.model).items()}
    # Assert: the same tensors (no frozen one), each example's gradient to float64 round-off
    assert set(got) == set(expected)
    for name, ref in expected.items():
        assert ref.abs().max() > 0, name  # a live check: no all-zero factor
        torch.testing.assert_close(got[name], ref, rtol=1e-10, atol=1e-12)
    # negative control: the check sees a one-example shift
    first = next(iter(expected))
    assert not torch.allclose(got[first], expected[first].roll(1, dims=0), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("adam", [False, True], ids=["sgd", "adamw"])
@pytest.mark.parametrize(("method", "kind"), CASES, ids=CASE_IDS)
def test_dp_step_without_noise_or_clipping_equals_a_plain_step(method: str, kind: str, adam: bool) -> None:
    # the guard against opacus #820 (silently corrupted LoRA updates): noise 0, C never binds,
    # no Poisson sampling, n a multiple of the batch size -> one DP step is one plain step
    model, data = build(method, kind), batch(kind, B, seed=1)
    lr = 0.01 if adam else 0.5
    before = snapshot(model)
    params = list(trainable(model).values())
    plain = torch.optim.AdamW(params, lr=lr, weight_decay=0.0) if adam else torch.optim.SGD(params, lr=lr)
    example_losses(model, data).mean().backward()
    plain_grads = {n: p.grad.detach().clone() for n, p in trainable(model).items()}
    plain.step()
    plain_after = snapshot(model)
    restore(model, before)
    model.zero_grad(set_to_none=True)
    with _private(model, EXACT, lr=lr, adam=adam) as private:
        _dp_step(private, data)
        dp_grads = {n: p.grad.detach().clone() for n, p in trainable(private.model).items()}
    dp_after = snapshot(model)
    # The gradient handed to the wrapped optimizer is the plain one up to float32 summation order
    # (a sum of per-example gradients vs one batched backward): 1e-6 of its largest entry. SGD's
    # parameters then agree to 1e-7 plus one float32 ulp. AdamW's first step is about lr·g/|g|, which
    # magnifies that round-off where |g| is tiny: its parameters are compared where |g| is at least
    # 1e-4 of the largest entry, to 1e-3 of a step.
    for name in before:
        assert not torch.equal(dp_after[name], before[name]), f"{name} did not move"
        scale = float(plain_grads[name].abs().max())
        torch.testing.assert_close(dp_grads[name], plain_grads[name], rtol=0, atol=1e-6 * scale)
        if adam:
            live = plain_grads[name].abs() >= 1e-4 * scale
            torch.testing.assert_close(dp_after[name][live], plain_after[name][live], rtol=0, atol=1e-3 * lr)
        else:
            torch.testing.assert_close(dp_after[name], plain_after[name], rtol=2.5e-7, atol=1e-7)


@pytest.mark.parametrize(("method", "kind"), CASES, ids=CASE_IDS)
def test_clipping_binds_each_example_to_the_clip_norm(method: str, kind: str) -> None:
    model, data = build(method, kind, dtype=torch.float64), batch(kind, B, seed=2)
    ref = per_example_grads(model, data)
    norms = sum(g.reshape(B, -1).pow(2).sum(dim=1) for g in ref.values()).sqrt()  # (B,)
    clip = float(norms.min()) / 4  # binds for every example
    factors = (clip / (norms + 1e-6)).clamp(max=1.0)  # Opacus's flat clipping (Abadi et al. 2016, Alg. 1)
    config = DPConfig(enabled=True, noise_multiplier=0.0, max_grad_norm=clip, poisson_sampling=False)
    with _private(model, config) as private:
        _dp_step(private, data)
        got = {n: p.grad.detach().clone() for n, p in trainable(private.model).items()}
        samples = {n: p.grad_sample.detach() for n, p in trainable(private.model).items()}
    clipped_norms = norms * factors
    assert torch.all(clipped_norms <= clip * (1 + 1e-12))
    # equal to C up to Opacus's stabiliser: C * |g| / (|g| + 1e-6), a relative 1e-6 / |g| below C
    assert torch.allclose(clipped_norms, torch.full_like(clipped_norms, clip), rtol=2e-6 / float(norms.min()), atol=0)
    opacus_norms = sum(g.reshape(B, -1).pow(2).sum(dim=1) for g in samples.values()).sqrt()
    torch.testing.assert_close(opacus_norms, norms, rtol=1e-10, atol=0)
    for name, g in ref.items():
        manual = torch.einsum("i,i...->...", factors, g) / B
        torch.testing.assert_close(got[name], manual, rtol=0, atol=1e-12 * float(manual.abs().max()))
    total = math.sqrt(sum(float(g.pow(2).sum()) for g in got.values()))
    assert total <= clip * (1 + 1e-12)  # the mean of B vectors of norm <= C


@pytest.mark.parametrize(("method", "kind"), CASES, ids=CASE_IDS)
def test_noise_reaches_only_trainable_tensors(method: str, kind: str) -> None:
    model = build(method, kind)
    data = batch(kind, 16, seed=3)
    frozen_before, trained_before = frozen(model), snapshot(model)
    config = DPConfig(enabled=True, noise_multiplier=1.0, max_grad_norm=1.0)
    with _private(model, config, n=16, steps=3) as private:
        for idx in private.index_batches(3):
            if len(idx) == 0:
                private.noise_only_step()
                continue
            _dp_step(private, {k: v[torch.from_numpy(idx)] for k, v in data.items()})
        assert len(private.accountant.history) == 1 and private.accountant.history[0][2] == 3
    for name, value in frozen(model).items():
        assert torch.equal(value, frozen_before[name]), f"frozen {name} changed"
        assert dict(model.named_parameters())[name].grad is None
    assert all(not torch.equal(p, trained_before[n]) for n, p in snapshot(model).items())


def test_close_leaves_a_plain_model_that_can_be_privatised_again() -> None:
    model, data = build("lora", "causal-lm"), batch("causal-lm", B)
    payload_before = extract(model)
    private = _private(model, EXACT)
    assert set(extract(private.model)) == set(payload_before)  # PrivateTraining hands out the plain model
    assert all(k.startswith("_module.") for k in private.module.state_dict())
    with pytest.raises(TypeError, match="PEFT model"):  # adapters never see Opacus's wrapper
        extract(private.module)
    _dp_step(private, data)
    assert private.close() is model
    assert private.close() is model  # idempotent
    assert not hasattr(model, "autograd_grad_sample_hooks")
    assert not any(hasattr(p, "grad_sample") or hasattr(p, "_forward_counter") for p in model.parameters())
    assert not any("activations" in m.__dict__ for m in model.modules())
    assert not any(k.startswith("_module.") for k in model.state_dict())
    with _private(model, EXACT) as again:  # a second round on the same (cached) model
        _dp_step(again, data)


def test_noise_only_step_is_accounted_and_isometric_for_lora_sb() -> None:
    # an empty Poisson batch still releases N(0, σ²C²)/E[B] and counts as a step; with Fed-SB's
    # orthonormal B and A the weight change has exactly the Frobenius norm of R's (docs/algorithms.md §9.1)
    model = build("lora-sb", "sequence-classification")
    layers = adapted_layers(model)
    delta_before = {n: layer.get_delta_weight("default").detach().clone() for n, layer in layers.items()}
    r_before = {n: layer.lora_R["default"].weight.detach().clone() for n, layer in layers.items()}
    config = DPConfig(enabled=True, noise_multiplier=2.0, max_grad_norm=0.5)
    with _private(model, config, lr=1.0, n=16) as private:
        private.noise_only_step()
        assert private.accountant.history == [(2.0, private.sample_rate, 1)]
    for name, layer in layers.items():
        d_r = layer.lora_R["default"].weight.detach() - r_before[name]
        d_w = layer.get_delta_weight("default").detach() - delta_before[name]
        assert float(d_r.norm()) > 0
        assert math.isclose(float(d_w.norm()), layer.scaling["default"] * float(d_r.norm()), rel_tol=1e-4)


def test_epsilon_grows_over_rounds_and_matches_one_accountant() -> None:
    model, data = build("lora-sb", "sequence-classification"), batch("sequence-classification", 16, seed=4)
    state, config = RecordDict(), DPConfig(enabled=True, target_epsilon=4.0, max_grad_norm=1.0)
    epsilons, noises = [], set()
    for _ in range(3):
        with _private(model, config, n=16, steps=2, planned_rounds=3, state=state) as private:
            for idx in private.index_batches(2):
                if len(idx) == 0:
                    private.noise_only_step()
                else:
                    _dp_step(private, {k: v[torch.from_numpy(idx)] for k, v in data.items()})
            epsilons.append(private.save(state))
            noises.add(private.noise_multiplier)
    assert epsilons[0] < epsilons[1] < epsilons[2] <= 4.0
    assert len(noises) == 1  # σ is calibrated once for the whole plan, the same every round
    (sigma,) = noises
    direct = create_accountant(mechanism="rdp")  # Opacus's accountant fed all 6 steps directly
    for _ in range(6):
        direct.step(noise_multiplier=sigma, sample_rate=private.sample_rate)
    assert math.isclose(epsilons[2], direct.get_epsilon(delta=private.delta), rel_tol=1e-9)
    with pytest.raises(BudgetExhausted, match="privacy.target-epsilon"):
        _private(model, config, n=16, steps=2, planned_rounds=3, state=state)
    assert not hasattr(model, "autograd_grad_sample_hooks")  # refused before wrapping anything


def test_optimizer_must_hold_exactly_the_trainable_tensors() -> None:
    model = build("ffa", "sequence-classification")
    everything = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="exactly the model's trainable parameters"):
        privatize(model, everything, config=EXACT, num_examples=B, batch_size=B, steps=1, planned_rounds=1)


def test_secure_mode_without_torchcsprng_says_what_to_do() -> None:
    try:
        import torchcsprng  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torchcsprng is installed; secure mode works here")
    model = build("lora-sb", "sequence-classification")
    with pytest.raises(ImportError, match="privacy.secure-mode"):
        _private(model, DPConfig(enabled=True, noise_multiplier=1.0, secure_mode=True))
    assert not hasattr(model, "autograd_grad_sample_hooks")
