"""The FedEx-LoRA fall-back study's restarts keep the global model exact."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.benchmarks.fedex_fallback import VARIANTS, _products, _restart, main

LAYOUT = {"q": {"a_key": "q.lora_A.weight", "b_key": "q.lora_B.weight", "scale": 0.5},
          "v": {"a_key": "v.lora_A.weight", "b_key": "v.lora_B.weight", "scale": 0.5}}


def _mean(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "q.lora_A.weight": rng.standard_normal((4, 9)).astype(np.float32),
        "q.lora_B.weight": rng.standard_normal((7, 4)).astype(np.float32),
        "v.lora_A.weight": rng.standard_normal((4, 9)).astype(np.float32),
        "v.lora_B.weight": rng.standard_normal((5, 4)).astype(np.float32),
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_restart_keeps_the_adapter_plus_fold(variant: str) -> None:
    rng = np.random.default_rng(0)
    mean = _mean(rng)
    start, fold = _restart(variant, mean, LAYOUT, np.random.default_rng(1))
    before, after = _products(mean, LAYOUT), _products(start, LAYOUT)
    for module in LAYOUT:
        total = after[module] + fold.get(module, 0.0)  # s·B'A' + what the base takes on: (m, n)
        np.testing.assert_allclose(total, before[module], rtol=0, atol=1e-5 * np.abs(before[module]).max())
    if variant == "fedex-fresh":
        assert not any(np.any(start[e["b_key"]]) for e in LAYOUT.values())
    if variant == "fedex-balanced":
        for e in LAYOUT.values():  # balanced: the two factors carry equal singular values
            sb = np.linalg.svd(start[e["b_key"]].astype(np.float64), compute_uv=False)
            sa = np.linalg.svd(start[e["a_key"]].astype(np.float64), compute_uv=False)
            np.testing.assert_allclose(sb, sa, rtol=1e-4)


def test_an_unknown_variant_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--variants", "fedex,nope"])
