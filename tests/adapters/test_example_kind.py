"""The example adapter kind (``tests/adapters/example_kind.py``, rsLoRA): importing one module is all it takes.

It is registered, a model builds with it, its payload round-trips (also through PEFT's own save and
load), a two-round FedIT federation trains it on tiny-llama through the real ServerApp and ClientApp,
and no package of Corolla names it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel

import tests.adapters.example_kind as example
from adapters.kind_registry import adapter_kind_of, get_adapter_kind, kind_names, resolve_adapter_kind
from adapters.kinds import BUILTIN_KINDS
from adapters.lora import AdapterSpec, build_adapted_model
from adapters.models import build_base_model
from adapters.payload import extract, layout, load
from adapters.peft_model import adapted_layers

ROOT = Path(__file__).resolve().parents[2]
RANK, ALPHA = 4, 8.0
PACKAGES = ("adapters", "client", "contract", "privacy", "server", "simulations", "strategies")


def build(method: str, seed: int = 0) -> PeftModel:
    spec = AdapterSpec(rank=RANK, alpha=ALPHA, method=method)
    return build_adapted_model("tiny-llama", spec, kind="causal-lm", num_labels=None, init_seed=seed)[0]


def test_importing_the_module_registers_the_kind_after_the_builtins() -> None:
    names = kind_names()
    assert names[: len(BUILTIN_KINDS)] == BUILTIN_KINDS and "rslora" in names[len(BUILTIN_KINDS) :]
    kind = get_adapter_kind("rslora")
    assert isinstance(kind, example.RsLora) and kind.paper == "arXiv 2312.03732"
    # the strategies that aggregate LoRA take it: it has LoRA's layout form
    assert resolve_adapter_kind("rslora", ("lora", "abba"), strategy="fedit") is kind
    with pytest.raises(ValueError, match="has form 'pair'"):
        resolve_adapter_kind("rslora", ("lora-sb",), strategy="fedsb")


def test_a_model_builds_with_the_rank_stabilised_scale() -> None:
    rs, plain = build("rslora"), build("lora")
    assert adapter_kind_of(rs) == "rslora" and adapter_kind_of(plain) == "lora"
    scale = example.rank_stabilised_scale(ALPHA, RANK)
    assert scale == 4.0 and all(entry["scale"] == scale for entry in layout(rs).values())
    assert all(entry["scale"] == ALPHA / RANK for entry in layout(plain).values())
    first, second = extract(rs), extract(plain)  # the same seeded factors: only the scale differs
    assert list(first) == list(second) and all(np.array_equal(first[k], second[k]) for k in first)
    rng = np.random.default_rng(0)
    trained = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in first.items()}
    load(rs, trained)
    load(plain, trained)
    for name, layer in adapted_layers(rs).items():
        delta_rs = layer.get_delta_weight("default")  # s·B A: (m, n)
        delta_plain = adapted_layers(plain)[name].get_delta_weight("default")
        torch.testing.assert_close(delta_rs, delta_plain * (scale / (ALPHA / RANK)), rtol=1e-6, atol=1e-6)


def test_its_payload_round_trips_also_through_peft(tmp_path: Path) -> None:
    model = build("rslora")
    rng = np.random.default_rng(1)
    payload = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in extract(model).items()}
    load(model, payload)
    again = extract(model)
    assert list(again) == list(payload) and all(np.array_equal(again[k], payload[k]) for k in payload)
    get_adapter_kind("rslora").export_adapter(model, tmp_path)
    loaded = PeftModel.from_pretrained(build_base_model("tiny-llama", kind="causal-lm").model, tmp_path)
    assert adapter_kind_of(loaded) == "rslora" and layout(loaded) == layout(model)
    exported = extract(loaded)
    assert all(np.array_equal(exported[k], payload[k]) for k in payload)


def test_a_two_round_fedit_federation_trains_it_on_tiny_llama(tmp_path: Path) -> None:
    from client.app import app as client_app
    from contract import ADAPTER_KIND, parse_run_config
    from server.app import run
    from server.run_folder import read_rounds
    from tests.server.conftest import TINY_RUN
    from tests.strategies.fake_grid import FakeGrid

    values = {**TINY_RUN, "adapter.name": "rslora", "output-dir": str(tmp_path), "run-name": "rslora"}
    grid = FakeGrid(client_app, 3, run_config=values)
    folder = run(grid, parse_run_config(values))
    rows = read_rounds(folder.path / "rounds.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2] and all(r["clients"] == 3 for r in rows[1:])
    assert rows[2]["train_loss"] < rows[1]["train_loss"] and rows[2]["eval_loss"] < rows[0]["eval_loss"]
    assert {str(instruction.content["config"][ADAPTER_KIND]) for instruction, _ in grid.log} == {"rslora"}
    # the exported adapter is a PEFT rsLoRA adapter holding the mean of the round-2 replies
    loaded = PeftModel.from_pretrained(build_base_model("tiny-llama", kind="causal-lm").model, folder.path / "adapter")
    assert adapter_kind_of(loaded) == "rslora"
    replies = [reply for instruction, reply in grid.log if int(instruction.content["config"]["server-round"]) == 2]
    weights = np.array([r.content["metrics"]["num-examples"] for r in replies], dtype=np.float64)
    weights /= weights.sum()
    for key, value in extract(loaded).items():
        expected = sum(w * r.content["arrays"][key].numpy().astype(np.float64) for w, r in zip(weights, replies, strict=True))
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)
    assert json.loads((folder.path / "config.json").read_text())["adapter.name"] == "rslora"


def test_corolla_config_and_adapters_pick_it_up(capsys: pytest.CaptureFixture[str]) -> None:
    from simulations import cli, listings

    assert cli.main(["config", "-c", 'strategy.name="fedit" adapter.name="rslora"']) == 0
    assert cli.main(["config", "-c", 'strategy.name="fedsb" adapter.name="rslora"']) == 2
    assert "`strategy.name` = 'fedsb' needs `adapter.name` in ['lora-sb']" in capsys.readouterr().err
    assert cli.main(["config", "-c", 'strategy.name="fedit" adapter.name="vera"']) == 2
    assert "choose one of abba, ffa, lora, lora-sb, rslora or `auto`" in capsys.readouterr().err
    row = listings.adapters_listing().row("rslora")
    assert row["paper"] == "arXiv 2312.03732" and row["frozen (sent once)"] == "-"
    assert {"fedit", "fedex", "flora"} <= set(row["strategies"].split(", "))


def test_no_package_names_the_example_kind() -> None:
    """Adding the kind touched nothing else: no source file mentions it, and a process that does not import
    the module does not know it."""
    mentions = [
        str(path.relative_to(ROOT)) for package in PACKAGES for path in (ROOT / package).rglob("*.py")
        if "rslora" in path.read_text().replace("use_rslora", "")
    ]
    assert mentions == []
    fresh = subprocess.run(
        [sys.executable, "-c", "from adapters.kind_registry import kind_names; print(','.join(kind_names()))"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )
    assert fresh.stdout.strip().split(",") == list(BUILTIN_KINDS)
