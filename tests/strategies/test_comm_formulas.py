"""Communication counts (each strategy's formula via simulations.comm.comm_params) against ``docs/communication.md §5``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.comm import comm_params, hf_module_shapes

# the fields of tests/data/model-configs/*.json that the shapes depend on
CONFIGS = {
    name: dict(
        zip(
            ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
             "intermediate_size", "num_hidden_layers"),
            values,
            strict=True,
        )
    )
    for name, values in {
        "mistral-7b-v0.1": (4096, 32, 8, None, 14336, 32),
        "gemma-2-9b": (3584, 16, 8, 256, 14336, 42),
        "llama-3.2-3b": (3072, 24, 8, 128, 8192, 28),
        "llama-3.2-1b": (2048, 32, 8, 64, 8192, 16),
    }.items()
}
# docs/communication.md §5 table: M, LoRA r32, FFA r32, (K, FLoRA/FedEx at K in millions), Fed-SB r120/160/200 in millions
TABLE = {
    "mistral-7b-v0.1": (224, 83_886_080, 44_040_192, (25, 2_097.2), (3.23, 5.73, 8.96)),
    "gemma-2-9b": (294, 108_036_096, 59_179_008, (25, 2_700.9), (4.23, 7.53, 11.76)),
    "llama-3.2-3b": (196, 48_627_712, 24_772_608, (5, 243.1), (2.82, 5.02, 7.84)),
    "llama-3.2-1b": (112, 22_544_384, 12_058_624, None, (1.61, 2.87, 4.48)),
}
MODEL_CONFIGS = Path(__file__).parents[1] / "data" / "model-configs"  # the models' config.json


@pytest.mark.parametrize("model", sorted(TABLE))
def test_section5_table(model: str) -> None:
    shapes = hf_module_shapes(CONFIGS[model])
    modules, lora, ffa, flora, fedsb = TABLE[model]
    assert len(shapes) == modules
    assert comm_params("fedit", shapes, 32) == (lora, lora, 0)
    assert comm_params("ffa", shapes, 32) == (ffa, ffa, 0)
    if flora is not None:
        k, millions = flora
        for method in ("flora", "fedex"):
            cost = comm_params(method, shapes, 32, K=k)
            assert cost.upload == lora
            assert round(cost.download / 1e6, 1) == millions, method
            assert cost.download == k * lora  # the pivot residual is (K−1)·r wide
    for r, millions in zip((120, 160, 200), fedsb, strict=True):
        cost = comm_params("fedsb", shapes, r, K=25)
        assert cost.upload == cost.download == modules * r * r
        assert round(cost.download / 1e6, 2) == millions
        assert cost.one_time == r * sum(m + n for m, n in shapes.values())


def test_section36_ratio_and_one_time_download() -> None:
    gemma = hf_module_shapes(CONFIGS["gemma-2-9b"])
    assert comm_params("fedsb", gemma, 200).download == 294 * 200**2 == 11_760_000
    fedex = comm_params("fedex", gemma, 32, K=25).download
    ratio = fedex / comm_params("fedsb", gemma, 200).download
    assert round(ratio, 1) == 229.7
    mistral = hf_module_shapes(CONFIGS["mistral-7b-v0.1"])
    assert round(comm_params("fedsb", mistral, 200).one_time / 1e6, 1) == 524.3  # docs/communication.md §4


@pytest.mark.parametrize("model", sorted(TABLE))
def test_shapes_match_the_hf_configs(model: str) -> None:
    path = MODEL_CONFIGS / f"{model}.json"
    assert hf_module_shapes(json.loads(path.read_text())) == hf_module_shapes(CONFIGS[model])


def test_small_models_of_section5() -> None:
    bert = [(768, 768)] * 24  # BERT-base q and v
    assert comm_params("fedit", bert, 32).upload == 1_179_648
    assert comm_params("ffa", bert, 32).upload == 589_824
    assert comm_params("flora", bert, 32, K=3).download == 3_538_944
    assert comm_params("fedex", bert, 32, K=3).download == 3_538_944
    assert [comm_params("fedsb", bert, r).upload for r in (32, 48, 64)] == [24_576, 55_296, 98_304]
    gpt2 = [(2304, 768), (768, 768), (768, 3072)] * 12  # c_attn, attention c_proj, MLP c_proj
    assert comm_params("fedit", gpt2, 4).upload == 405_504
    roberta_large = [(1024, 1024)] * 72 + [(1024, 4096)] * 24
    assert comm_params("fedit", roberta_large, 8).upload == 2_162_688
    assert comm_params("fedsb", roberta_large, 24).upload == 55_296


def test_fedex_residual_charges_and_head() -> None:
    shapes = {"a": (48, 32), "b": (32, 32)}
    lora = 4 * (80 + 64)
    # K = 5, r = 4: pivot 16 columns -> min(1536, 1280) + min(1024, 1024)
    assert comm_params("fedex", shapes, 4, K=5).download == lora + 1280 + 1024
    assert comm_params("fedex", shapes, 4, K=5, residual="centred").download == lora + 1536 + 1024
    assert comm_params("fedex", shapes, 4, K=5, residual="stacked").download == lora + 1536 + 1024
    assert comm_params("fedex", shapes, 4, K=5, residual="dense").download == lora + 1536 + 1024
    assert comm_params("fedex", shapes, 4, K=5, truncated_rank=2).download == lora + 160 + 128
    assert comm_params("fedex", shapes, 4, K=1).download == lora  # one client: no residual
    assert comm_params("full", shapes, 4, head=7) == (1536 + 1024 + 7, 1536 + 1024 + 7, 0)
    assert comm_params("ffa", shapes, 4, a_by_seed=False).one_time == 4 * 64
    assert comm_params("flora", shapes, 4, K=3, client_ranks=[2, 4, 8]).download == 14 * 144
    with pytest.raises(ValueError, match="unknown method"):
        comm_params("fedavg", shapes, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        comm_params("fedit", [], 4)
