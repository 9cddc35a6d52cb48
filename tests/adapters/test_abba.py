"""ABBA's maths and layer (``docs/algorithms.md §10``, invariants ``docs/exactness.md §8``), float64 on toy layers."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from adapters.abba import (
    ABBALinear,
    abba_delta_x,
    column_khatri_rao,
    configure_abba,
    dense_delta,
    init_factors,
    kaiming_uniform_bound,
    row_khatri_rao,
)
from adapters.lora import AdapterSpec, lora_config

SHAPES = [(12, 12), (10, 17), (19, 8)]  # (m, n): square, wide, tall
RANKS = [(2, 2), (2, 3), (4, 1)]  # (r1, r2), r1 != r2 included


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_factors(m: int, n: int, r1: int, r2: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = _gen(seed)
    shapes = ((m, r1), (r1, n), (m, r2), (r2, n))  # B1, A1, B2, A2
    return tuple(torch.randn(*shape, generator=g, dtype=torch.float64) for shape in shapes)


class Holder(nn.Module):
    """One target layer ``layer``: ``nn.Linear(n, m)`` or GPT-2 ``Conv1D`` (weight stored ``(n, m)``)."""

    def __init__(self, conv1d: bool, m: int, n: int, seed: int = 0) -> None:
        super().__init__()
        g = _gen(seed)
        self.layer = Conv1D(m, n) if conv1d else nn.Linear(n, m)
        with torch.no_grad():
            self.layer.weight.copy_(torch.randn(*self.layer.weight.shape, generator=g))
            self.layer.bias.copy_(torch.randn(m, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _abba(conv1d: bool, m: int, n: int, r1: int, r2: int, *, alpha: float = 3.0, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = Holder(conv1d, m, n, seed).double()
        config = LoraConfig(r=r1, lora_alpha=alpha, target_modules=["layer"])
        config = configure_abba(config, rank2=r2, svd="exact", seed=seed)
        model = get_peft_model(base, config).double()
    layer = model.base_model.model.layer
    assert isinstance(layer, ABBALinear)
    return model, layer


def _w0(layer: ABBALinear) -> torch.Tensor:
    w = layer.get_base_layer().weight.detach()
    return w.T if layer.fan_in_fan_out else w  # W0: (m, n)


def _factors(layer: ABBALinear) -> tuple[torch.Tensor, ...]:
    return (layer.lora_B["default"].weight, layer.lora_A["default"].weight,
            layer.lora_B2["default"].weight, layer.lora_A2["default"].weight)  # B1, A1, B2, A2


def _randomise(layer: ABBALinear, seed: int = 1) -> None:
    g = _gen(seed)
    with torch.no_grad():
        for p in _factors(layer):
            p.copy_(torch.randn(*p.shape, generator=g, dtype=p.dtype) * 0.3)


@pytest.mark.parametrize(("m", "n"), SHAPES)
@pytest.mark.parametrize(("r1", "r2"), RANKS)
def test_khatri_rao_identity_and_forward(m: int, n: int, r1: int, r2: int) -> None:
    b1, a1, b2, a2 = _random_factors(m, n, r1, r2)
    s = 1.7
    b_star, a_star = row_khatri_rao(b1, b2), column_khatri_rao(a1, a2)  # (m, r1 r2), (r1 r2, n)
    assert b_star.shape == (m, r1 * r2) and a_star.shape == (r1 * r2, n)
    dense = dense_delta(b1, a1, b2, a2, s)
    torch.testing.assert_close(s * b_star @ a_star, dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dense, s * (b1 @ a1) * (b2 @ a2), rtol=0, atol=0)
    x = torch.randn(3, 5, n, generator=_gen(2), dtype=torch.float64)
    torch.testing.assert_close(abba_delta_x(x, b1, a1, b2, a2, s), x @ dense.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("r1", "r2", "m", "n"), [(3, 4, 20, 30), (4, 4, 40, 24), (5, 3, 9, 30), (2, 7, 50, 50)])
def test_generic_rank_is_r1_r2(r1: int, r2: int, m: int, n: int) -> None:
    delta = dense_delta(*_random_factors(m, n, r1, r2, seed=3), 1.0)
    expected = min(r1 * r2, m, n)
    assert torch.linalg.matrix_rank(delta).item() == expected
    if min(r1, r2) >= 3 and expected == r1 * r2:
        assert expected > r1 + r2


@pytest.mark.parametrize("conv1d", [False, True])
@pytest.mark.parametrize(("m", "n"), SHAPES)
@pytest.mark.parametrize(("r1", "r2"), RANKS)
def test_layer_equals_dense_reference(conv1d: bool, m: int, n: int, r1: int, r2: int) -> None:
    model, layer = _abba(conv1d, m, n, r1, r2)
    assert layer.fan_in_fan_out == conv1d
    _randomise(layer)
    b1, a1, b2, a2 = (p.detach() for p in _factors(layer))
    delta = 3.0 * (b1 @ a1) * (b2 @ a2)  # s = alpha = √(α1 α2)
    assert layer.scaling["default"] == 3.0
    x = torch.randn(4, n, generator=_gen(5), dtype=torch.float64)
    bias = layer.get_base_layer().bias.detach()
    expected = x @ (_w0(layer) + delta).T + bias
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    stored = delta.T if conv1d else delta
    torch.testing.assert_close(layer.get_delta_weight("default"), stored, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("conv1d", [False, True])
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_init_is_zero_update_from_the_svd_of_w0(conv1d: bool, m: int, n: int) -> None:
    r1, r2 = 3, 2
    model, layer = _abba(conv1d, m, n, r1, r2)
    b1, a1, b2, a2 = (p.detach() for p in _factors(layer))
    assert torch.count_nonzero(b2) == 0
    x = torch.randn(4, n, generator=_gen(5), dtype=torch.float64)
    with model.disable_adapter():
        base_out = model(x)
    assert torch.equal(model(x), base_out)  # ΔW == 0 exactly
    u, s, vh = torch.linalg.svd(_w0(layer), full_matrices=False)
    best = u[:, :r1] @ torch.diag(s[:r1]) @ vh[:r1]  # the rank-r1 truncated SVD of W0
    torch.testing.assert_close(b1 @ a1, best, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(b1.T @ b1, a1 @ a1.T, rtol=1e-10, atol=1e-10)  # both Σ (balanced Σ^{1/2})
    torch.testing.assert_close(torch.diag(b1.T @ b1), s[:r1], rtol=1e-10, atol=1e-10)
    bound = kaiming_uniform_bound(n)
    assert bound == pytest.approx(math.sqrt(6 / n)) and a2.abs().max() <= bound
    assert a2.shape == (r2, n) and a2.abs().max() > 0.5 * bound


def test_randomized_svd_init_matches_exact_and_leaves_global_rng() -> None:
    # a decaying spectrum: the reference's q = r1 range finder (no oversampling) then converges
    u, _, vh = torch.linalg.svd(torch.randn(30, 20, generator=_gen(7), dtype=torch.float64), full_matrices=False)
    w0 = u @ torch.diag(0.5 ** torch.arange(20, dtype=torch.float64)) @ vh
    state = torch.random.get_rng_state()
    exact = init_factors(w0, 4, 3, generator=_gen(1), svd="exact")
    randomized = init_factors(w0, 4, 3, generator=_gen(1), svd="randomized")
    again = init_factors(w0, 4, 3, generator=_gen(1), svd="randomized")
    assert torch.equal(torch.random.get_rng_state(), state)
    # q = r1 power iterations converge like (σ5/σ4)^21 ≈ 5e-7
    torch.testing.assert_close(randomized.B1 @ randomized.A1, exact.B1 @ exact.A1, rtol=0, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(randomized, again, strict=True))
    assert exact.B1.dtype == torch.float64
    assert init_factors(w0.float(), 4, 3, generator=_gen(1)).A2.dtype == torch.float32
    with pytest.raises(ValueError, match="r1 = 21"):
        init_factors(w0, 21, 3, generator=_gen(1))


@pytest.mark.parametrize("conv1d", [False, True])
def test_only_b2_gets_a_gradient_at_step_zero(conv1d: bool) -> None:
    model, layer = _abba(conv1d, 10, 17, 3, 2)
    x = torch.randn(6, 17, generator=_gen(5), dtype=torch.float64)
    model(x).pow(2).sum().backward()
    b1, a1, b2, a2 = _factors(layer)
    for p in (b1, a1, a2):
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0
    assert torch.count_nonzero(b2.grad) > 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == 4 and all(".lora_" in n for n in trainable)


@pytest.mark.parametrize(("m", "n", "r1", "r2"), [(10, 17, 3, 2), (12, 12, 2, 5)])
def test_parameter_count(m: int, n: int, r1: int, r2: int) -> None:
    model, _ = _abba(False, m, n, r1, r2)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count == (r1 + r2) * (m + n)


@pytest.mark.parametrize("conv1d", [False, True])
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_merge_unmerge_round_trip(conv1d: bool, m: int, n: int) -> None:
    model, layer = _abba(conv1d, m, n, 2, 3)
    _randomise(layer)
    w0 = layer.get_base_layer().weight.detach().clone()
    x = torch.randn(4, n, generator=_gen(5), dtype=torch.float64)
    unmerged_out = model(x)
    layer.merge()
    assert not torch.allclose(layer.get_base_layer().weight, w0)
    torch.testing.assert_close(model(x), unmerged_out, rtol=1e-12, atol=1e-12)
    layer.unmerge()
    torch.testing.assert_close(layer.get_base_layer().weight, w0, rtol=0, atol=1e-12)
    torch.testing.assert_close(model(x), unmerged_out, rtol=1e-12, atol=1e-12)


def test_configure_and_spec_ranks() -> None:
    assert AdapterSpec(rank=8, method="abba").ranks() == (4, 4)
    assert AdapterSpec(rank=7, method="abba").ranks() == (3, 4)
    assert AdapterSpec(rank=8, method="abba", rank1=2).ranks() == (2, 6)
    assert AdapterSpec(rank=8, method="abba", rank2=5).ranks() == (3, 5)
    assert AdapterSpec(rank=8, method="abba", rank1=3, rank2=5).ranks() == (3, 5)
    with pytest.raises(ValueError, match="must both be >= 1"):
        AdapterSpec(rank=1, method="abba").ranks()
    spec = AdapterSpec(rank=8, alpha=16, method="abba", rank1=2, rank2=3)
    config = lora_config(spec, kind="causal-lm", model_type="llama")
    assert config.r == 2 and config.lora_alpha == 32 and config._abba.rank2 == 3 and config._custom_modules
    with pytest.raises(ValueError, match="use_rslora"):
        configure_abba(LoraConfig(r=4, use_rslora=True), rank2=2)
    with pytest.raises(ValueError, match="r2 = 0"):
        configure_abba(LoraConfig(r=4), rank2=0)


def test_dropout_acts_on_the_adapter_input_only_in_training() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = Holder(False, 10, 17).double()
        config = LoraConfig(r=2, lora_alpha=3.0, lora_dropout=0.5, target_modules=["layer"])
        model = get_peft_model(base, configure_abba(config, rank2=3, svd="exact", seed=0)).double()
    layer = model.base_model.model.layer
    _randomise(layer)
    x = torch.randn(4, 17, generator=_gen(5), dtype=torch.float64)
    b1, a1, b2, a2 = (p.detach() for p in _factors(layer))
    base_out = x @ _w0(layer).T + layer.get_base_layer().bias.detach()
    model.eval()
    torch.testing.assert_close(model(x), base_out + x @ dense_delta(b1, a1, b2, a2, 3.0).T, rtol=1e-12, atol=1e-12)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        out = model(x)
        torch.manual_seed(3)
        dropped = layer.lora_dropout["default"](x)
    torch.testing.assert_close(out, base_out + dropped @ dense_delta(b1, a1, b2, a2, 3.0).T, rtol=1e-12, atol=1e-12)
