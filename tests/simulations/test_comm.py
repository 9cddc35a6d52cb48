"""``corolla comm``: meta-device shapes match the config formulas, and the Fed-SB paper's
communication numbers (``docs/communication.md §2``, §5) come out of the table."""

from __future__ import annotations

import json
import resource
import time
from functools import cache
from pathlib import Path

import pytest

from simulations import cli
from simulations.comm import (
    PRESETS,
    CommError,
    CommRow,
    build_meta_model,
    comm_table,
    hf_module_shapes,
    load_config,
    module_shapes_from_config,
)

# official total parameter counts (embeddings tied for Llama-3.2): the presets are the real architectures
TOTAL_PARAMS = {
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "mistral-7b-v0.1": 7_241_732_096,
    "gemma-2-9b": 9_241_705_984,
}


@cache
def shapes(preset: str) -> dict[str, tuple[int, int]]:
    return module_shapes_from_config(preset)


def rows(preset: str, **kwargs: int) -> dict[str, CommRow]:
    return {row.strategy: row for row in comm_table(shapes(preset), **kwargs)}


def test_the_four_presets_are_shipped() -> None:
    assert set(PRESETS) == set(TOTAL_PARAMS)


@pytest.mark.parametrize("preset", sorted(TOTAL_PARAMS))
def test_meta_device_shapes_equal_the_config_formulas(preset: str) -> None:
    config = json.loads((PRESETS[preset] / "config.json").read_text())
    # "model.layers.3.self_attn.q_proj" -> "layers.3.q_proj", the keys of hf_module_shapes
    got = {f"layers.{n.split('.')[2]}.{n.rsplit('.', 1)[-1]}": s for n, s in shapes(preset).items()}
    assert got == hf_module_shapes(config)
    assert len(got) == 7 * config["num_hidden_layers"]
    two = module_shapes_from_config(preset.upper(), ("q_proj", "v_proj"))
    assert {n.rsplit(".", 1)[-1] for n in two} == {"q_proj", "v_proj"}
    assert len(two) == 2 * config["num_hidden_layers"]


@pytest.mark.parametrize("preset", sorted(TOTAL_PARAMS))
def test_presets_have_the_official_parameter_counts(preset: str) -> None:
    model = build_meta_model(load_config(preset))
    assert sum(p.numel() for p in model.parameters()) == TOTAL_PARAMS[preset]


def test_a_9b_model_on_meta_allocates_nothing_and_is_quick() -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    model = build_meta_model(load_config("gemma-2-9b"))
    elapsed = time.perf_counter() - start
    assert {p.device.type for p in model.parameters()} == {"meta"}
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 512, f"peak RSS grew {grown_mib:.0f} MiB; 9.2B float32 weights would be 37 GB"
    assert elapsed < 30, f"{elapsed:.1f}s (a few seconds expected, slack for a loaded machine)"


def test_gemma_2_9b_the_230x_figure() -> None:
    """docs/communication.md §5: FLoRA / FedEx-LoRA at r=32, K=25 = 25 x 108.04M = 2,700.9M vs Fed-SB r=200 = 11.76M."""
    got = rows("gemma-2-9b", rank=32, clients=25, fedsb_rank=200)
    assert got["fedit"].download == got["fedit"].upload == 108_036_096  # 108.0M
    assert got["ffa"].download == 59_179_008  # 59.2M
    assert got["flora"].download == got["fedex"].download == 2_700_902_400  # 2,700.9M
    assert got["fedsb"].download == got["fedsb"].upload == 294 * 200**2 == 11_760_000
    assert got["flora"].download / got["fedsb"].download == pytest.approx(229.67, abs=0.01)
    assert got["fedit"].download / got["fedsb"].download == pytest.approx(9.19, abs=0.01)
    assert got["flora"].download_vs_fedit == 25 and got["fedsb"].one_time == 200 * 3_376_128


def test_mistral_7b() -> None:
    got = rows("mistral-7b-v0.1", rank=32, clients=25, fedsb_rank=200)
    assert got["fedit"].download == 83_886_080  # 83.9M
    assert got["ffa"].download == 44_040_192  # 44.0M
    assert got["flora"].download == got["fedex"].download == 2_097_152_000  # 2,097.2M
    assert got["fedsb"].download == 224 * 200**2 == 8_960_000
    assert got["fedsb"].one_time == 524_288_000  # docs/communication.md §4: B and A once, 524.3M = 6.25 LoRA-r32 rounds
    smaller = [rows("mistral-7b-v0.1", fedsb_rank=r)["fedsb"].download for r in (120, 160)]
    assert [round(d / 1e6, 2) for d in smaller] == [3.23, 5.73]


def test_llama_3_2_3b_flora_at_5_clients() -> None:
    """All 7 modules at r=32: 48,627,712 per client (48.63M); 5 clients give 243,138,560 = 243.14M.
    The quoted 243.15M is 5 x the rounded 48.63M, not the exact count."""
    got = rows("llama-3.2-3b", rank=32, clients=5, fedsb_rank=120)
    assert got["fedit"].download == 48_627_712
    assert got["flora"].download == got["fedex"].download == 5 * 48_627_712 == 243_138_560
    assert round(5 * round(got["fedit"].download / 1e6, 2), 2) == 243.15
    assert got["fedsb"].download == 196 * 120**2 == 2_822_400  # 2.82M


def test_totals_per_round_and_per_run() -> None:
    k, n = 4, 3
    got = rows("llama-3.2-1b", rank=8, clients=k, rounds=n, fedsb_rank=16)
    for row in got.values():
        assert row.round_total == k * (row.upload + row.download)
        assert row.run_total == n * row.round_total + k * row.one_time
    assert got["fedsb"].one_time == 16 * 22_544_384 // 32  # B and A at r=16; LoRA r32 is 22,544,384 (docs/communication.md §5)
    assert got["fedit"].one_time == got["flora"].one_time == 0


def test_cli_prints_the_papers_numbers_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "comm.json"
    argv = ["comm", "--model", "Gemma-2-9B", "--rank", "32", "--clients", "25", "--json", str(out_json)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for text in ("M = 294", "2,700.90M", "11.76M", "108.04M", "59.18M", "10.80 GB", "47.04 MB", "flora's 229.7x"):
        assert text in out
    payload = json.loads(out_json.read_text())
    assert {"model", "architecture", "targets", "modules", "clients", "rounds", "rank", "fedsb_rank",
            "bytes_per_param", "definitions", "strategies"} <= set(payload)
    assert payload["architecture"] == "Gemma2ForCausalLM" and payload["modules"] == 294
    by_name = {row["strategy"]: row for row in payload["strategies"]}
    assert list(by_name) == ["fedit", "ffa", "fedex", "flora", "fedsb"]
    assert set(by_name["flora"]) == {"strategy", "rank", "upload", "download", "one_time", "round_total", "run_total",
                                     "download_vs_fedit", "upload_bytes", "download_bytes", "one_time_bytes",
                                     "round_total_bytes", "run_total_bytes"}
    assert by_name["flora"]["download"] == 2_700_902_400 and by_name["fedsb"]["rank"] == 200
    assert by_name["fedsb"]["download_bytes"] == 4 * 11_760_000


def test_cli_accepts_a_config_folder_and_custom_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bert = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 128, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(bert))
    assert cli.main(["comm", "--model", str(tmp_path)]) == 2  # no q_proj in BERT
    err = capsys.readouterr().err
    assert "--targets" in err and "query" in err and "value" in err
    argv = ["comm", "--model", str(tmp_path), "--targets", "query,value", "--rank", "4", "--clients", "3",
            "--strategies", "fedit,fedsb", "--fedsb-rank", "4"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "M = 4 (query, value)" in out and "fedsb" in out and "flora" not in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model", "llama-9000"], "--model 'llama-9000': not a preset"),
        ([], "--model is required"),
        (["--model", "mistral-7b-v0.1", "--strategies", "fedit,fedprox"], "--strategies: unknown fedprox"),
        (["--model", "mistral-7b-v0.1", "--targets", "q_proj,qkv"], "--targets: qkv matches no linear layer"),
        (["--model", "mistral-7b-v0.1", "--rank", "0"], "--rank must be >= 1"),
    ],
)
def test_cli_errors_name_the_flag_and_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["comm", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err
    if "not a preset" in needle:
        assert all(name in err for name in PRESETS) and "config.json" in err


def test_an_unreadable_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "no-such-arch"}')
    with pytest.raises(CommError, match="--model .*cannot read this config"):
        module_shapes_from_config(tmp_path / "config.json")


def test_comm_is_wired_in_the_cli() -> None:
    assert "comm" in cli.COMMANDS
    args = cli.build_parser().parse_args(["comm", "--model", "gemma-2-9b"])
    assert (args.command, args.rank, args.clients, args.rounds, args.fedsb_rank) == ("comm", 32, 25, 1, 200)


def test_the_report_states_the_float32_base_delta_memory() -> None:
    """docs/precision.md §3: 4 bytes per adapted weight element, printed and in the JSON."""
    from simulations.comm import base_delta_bytes, report

    text, payload = report("llama-3.2-1b", targets=("q_proj", "v_proj"))
    # Llama-3.2-1B: 16 layers, q_proj 2048x2048, v_proj 512x2048
    assert payload["base_delta_bytes"] == base_delta_bytes({"q": (2048, 2048), "v": (512, 2048)}) * 16 == 4 * 16 * (2048 * 2048 + 512 * 2048)
    assert "base-delta memory" in text and f"{4 * 16 * (2048 * 2048 + 512 * 2048) / 1e6:,.2f} MB per node" in text
def test_mixed_ranks_give_one_row_per_strategy_and_rank_class() -> None:
    from simulations.comm import comm_table

    shapes = [(64, 32), (48, 32)]  # Σ(m+n) = 176
    rows = comm_table(shapes, ["fedsb", "flora", "fedex", "hetlora", "flexlora"], clients=5, ranks=(2, 4))
    assert {r.strategy for r in rows} == {"flora", "fedex", "hetlora", "flexlora"}  # Fed-SB needs one rank
    by = {(r.strategy, r.rank): r for r in rows}
    client_ranks = [2, 4, 2, 4, 2]
    for name in ("hetlora", "flexlora"):
        for rank, count in ((2, 3), (4, 2)):
            assert by[name, rank].upload == by[name, rank].download == rank * 176  # its own rank each way
            assert by[name, rank].round_total == count * 2 * rank * 176
    assert by["flora", 2].download == sum(client_ranks) * 176  # every client's stacked factors
    columns = sum(client_ranks) + 2  # FedEx-LoRA's mixed-rank residual: Σ r_i + r_min columns (docs/algorithms.md §18.3)
    residual = sum(min(m * n, columns * (m + n)) for m, n in shapes)
    assert by["fedex", 4].download == 4 * 176 + residual
