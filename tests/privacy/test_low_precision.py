"""DP-SGD on a bf16 base: Opacus's per-example gradients of the float32 adapter against a float64
reference of the same model (docs/precision.md §1).

The reference is the bf16 model upcast to float64 (bf16 -> float64 is exact, so it has the very same
base weights); the only difference left is the bf16 arithmetic of the frozen base's activations.
bf16 keeps 8 significant bits (relative spacing 2^-8 = 3.9e-3), and the error of a gradient through
a few layers of such activations is a small multiple of it: the stated tolerance is 5e-2 relative
(Frobenius, per tensor and example). A float32 base on the same check agrees to 1e-5.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from adapters.lora import AdapterSpec, build_adapted_model
from adapters.precision import BasePrecision
from privacy import DPConfig, privatize
from tests.privacy.models import batch, example_losses, per_example_grads, trainable

BF16_TOLERANCE = 5e-2  # relative; a few bf16 roundings (2^-8 each) through the base (module docstring)
EXACT = DPConfig(enabled=True, noise_multiplier=0.0, max_grad_norm=1e6, poisson_sampling=False)


def _model(dtype: str, kind: str) -> torch.nn.Module:
    labels = None if kind == "causal-lm" else 3
    model, _ = build_adapted_model("tiny-llama", AdapterSpec(rank=4), kind=kind, num_labels=labels, init_seed=0,  # type: ignore[arg-type]
                                   precision=BasePrecision(dtype=dtype))  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B = 0 would make A's gradient 0: a check on zeros proves nothing
                p.copy_(torch.as_tensor(0.05 * rng.standard_normal(tuple(p.shape)), dtype=p.dtype))
    return model.train()


def _worst_relative_error(dtype: str, kind: str) -> float:
    model = _model(dtype, kind)
    reference = copy.deepcopy(model).double()  # the same weights, float64 arithmetic
    data = batch(kind, 4)
    expected = per_example_grads(reference, data)
    params = list(trainable(model).values())
    with privatize(model, torch.optim.SGD(params, lr=0.1), config=EXACT, num_examples=4, batch_size=4, steps=1,
                   planned_rounds=1) as private:
        example_losses(private.module, data).mean().backward()
        got = {n: p.grad_sample.detach().double() for n, p in trainable(private.model).items()}
    assert set(got) == set(expected)
    worst = 0.0
    for name, ref in expected.items():
        assert got[name].dtype == torch.float64 and ref.abs().max() > 0, name
        for g, r in zip(got[name], ref, strict=True):  # per example
            worst = max(worst, float((g - r).norm() / r.norm()))
    return worst


@pytest.mark.parametrize("kind", ["causal-lm", "sequence-classification"])
def test_per_sample_gradients_on_a_bf16_base_match_float64_within_the_stated_tolerance(kind: str) -> None:
    error = _worst_relative_error("bfloat16", kind)
    assert error <= BF16_TOLERANCE, error
    assert error > 1e-5  # a live check: bf16 does round (float32 below stays under 1e-5)
    assert _worst_relative_error("float32", kind) <= 1e-5
