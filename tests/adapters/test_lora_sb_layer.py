"""The LoRA-SB layer on nn.Linear and GPT-2 Conv1D (``docs/algorithms.md §8.1``, ``docs/exactness.md §6``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adapters.lora_sb import install_factors, read_factors
from adapters.lora_sb.layer import LoraSBLinear
from adapters.payload import extract, layout
from tests.adapters.toys import LAYERS, RANK, SHAPES, one_layer, orthonormal_factors, stored_to_mn

MODULE = "base_model.model.proj"


def with_factors(layer: str, m: int, n: int, seed: int = 0, **kwargs):
    model = one_layer(layer, m, n, **kwargs)
    b, r, a = orthonormal_factors(m, n, RANK, np.random.default_rng(seed))
    install_factors(model, {MODULE: (b, r, a)})
    return model, (torch.from_numpy(b), torch.from_numpy(r), torch.from_numpy(a))


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_forward_is_base_plus_b_r_a(layer: str, m: int, n: int) -> None:
    model, (b, r, a) = with_factors(layer, m, n)
    proj = model.base_model.model.proj
    assert isinstance(proj, LoraSBLinear) and proj.fan_in_fan_out == (layer == "conv1d")
    assert proj.scaling["default"] == 1.0  # s = 1: alpha is forced to r (docs/algorithms.md §8.1)
    x = torch.randn(5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w0 = stored_to_mn(proj.get_base_layer().weight, layer)  # (m, n)
    expected = x @ (w0 + b @ r @ a).T + proj.get_base_layer().bias
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    # the stored delta has the stored orientation: (n, m) for Conv1D, so non-square shapes cannot mix up
    assert proj.get_delta_weight("default").shape == proj.get_base_layer().weight.shape


@pytest.mark.parametrize("layer", LAYERS)
def test_only_r_trains_and_count_is_r_squared(layer: str) -> None:
    model, _ = with_factors(layer, 48, 32)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names == [f"{MODULE}.lora_R.default.weight"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == RANK**2
    model.base_model.set_adapter("default")  # PEFT re-activating the adapter keeps A and B frozen
    assert [n for n, p in model.named_parameters() if p.requires_grad] == names
    assert list(extract(model)) == [f"{MODULE}.lora_R.weight"]
    assert layout(model) == {MODULE: {"r_key": f"{MODULE}.lora_R.weight", "scale": 1.0,
                                      "fan_in_fan_out": layer == "conv1d", "form": "r-only"}}


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_r_gradient_is_projected_weight_gradient(layer: str, m: int, n: int) -> None:
    model, (b, r, a) = with_factors(layer, m, n)
    proj = model.base_model.model.proj
    gen = torch.Generator().manual_seed(2)
    x, target = torch.randn(6, n, dtype=torch.float64, generator=gen), torch.randn(6, m, dtype=torch.float64, generator=gen)
    F.mse_loss(model(x), target).backward()
    grad_r = proj.lora_R["default"].weight.grad
    # reference: the same loss through a dense W = W0 + B R A, differentiated w.r.t. W
    w = (stored_to_mn(proj.get_base_layer().weight, layer) + b @ r @ a).detach().requires_grad_(True)
    F.mse_loss(x @ w.T + proj.get_base_layer().bias, target).backward()
    g = w.grad  # G: (m, n)
    torch.testing.assert_close(grad_r, b.T @ g @ a.T, rtol=1e-10, atol=1e-14)  # ∂L/∂R = s·Bᵀ G Aᵀ, s = 1
    torch.testing.assert_close(b @ grad_r @ a, (b @ b.T) @ g @ (a.T @ a), rtol=1e-10, atol=1e-14)  # P_B G P_A


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(("m", "n"), SHAPES)
def test_merged_equals_unmerged_and_unmerge_restores(layer: str, m: int, n: int) -> None:
    model, (b, r, a) = with_factors(layer, m, n)
    proj = model.base_model.model.proj
    x = torch.randn(4, n, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    w0 = proj.get_base_layer().weight.detach().clone()
    unmerged = model(x)
    proj.merge()
    torch.testing.assert_close(stored_to_mn(proj.get_base_layer().weight, layer) - stored_to_mn(w0, layer), b @ r @ a)
    torch.testing.assert_close(model(x), unmerged, rtol=1e-12, atol=1e-12)
    proj.unmerge()
    torch.testing.assert_close(proj.get_base_layer().weight, w0, rtol=1e-12, atol=1e-12)
    merged = model.merge_and_unload()  # PEFT's own path, through the variant
    torch.testing.assert_close(merged(x), unmerged, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer", LAYERS)
def test_dropout_applies_to_the_adapter_input_only(layer: str) -> None:
    model, (b, r, a) = with_factors(layer, 48, 32, dropout=0.5)
    proj = model.base_model.model.proj
    model.train()
    x = torch.randn(8, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        y = model(x)
        torch.manual_seed(0)
        dropped = F.dropout(x, p=0.5, training=True)
    expected = proj.get_base_layer()(x) + dropped @ (b @ r @ a).T
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def test_fed_sb_average_of_r_is_average_of_effective_weights() -> None:
    # docs/algorithms.md §9.1 / docs/exactness.md §6: shared B, A; mean R gives the mean effective weight, for any p_i
    rng = np.random.default_rng(5)
    b, _, a = orthonormal_factors(48, 32, RANK, rng)
    rs = [rng.standard_normal((RANK, RANK)) for _ in range(3)]
    p = np.array([0.5, 0.3, 0.2])
    merged = []
    for r_i in [*rs, sum(pi * ri for pi, ri in zip(p, rs, strict=True))]:
        model = one_layer("conv1d", 48, 32)
        install_factors(model, {MODULE: (b, r_i, a)})
        merged.append(model.merge_and_unload().proj.weight.detach())
    torch.testing.assert_close(merged[3], sum(pi * w for pi, w in zip(p, merged[:3], strict=True)), rtol=1e-12, atol=1e-12)
    xi = rng.standard_normal((RANK, RANK))
    assert np.isclose(np.linalg.norm(b @ xi @ a), np.linalg.norm(xi))  # no amplification (Fed-SB 5)


def test_read_factors_returns_what_was_installed_and_shapes_are_checked() -> None:
    model, (b, r, a) = with_factors("linear", 48, 32, dtype=torch.float32)
    got = read_factors(model)[MODULE]
    assert got.B.shape == (48, RANK) and got.R.shape == (RANK, RANK) and got.A.shape == (RANK, 32)
    np.testing.assert_array_equal(got.R, r.numpy().astype(np.float32))
    with pytest.raises(ValueError, match="B has shape"):
        install_factors(model, {MODULE: (b.T, r, a)})
    with pytest.raises(ValueError, match="missing"):
        install_factors(model, {"other": (b, r, a)})
