"""adapters.precision: device resolution, the build order (device before PEFT before Opacus), float32
training on a low-precision base, gradient checkpointing, and quantized bases (docs/precision.md §1-2)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from flwr.app import RecordDict

import adapters.lora as lora_module
import adapters.models as models_module
from adapters.lora import AdapterSpec, build_adapted_model
from adapters.precision import BasePrecision, DeviceUnavailable, quantization_problem, resolve_device, set_gradient_checkpointing
from client.tasks.registry import build_task
from client.training import PrivateRound, local_train
from privacy import DPConfig

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int = 1) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_is_cpu_without_cuda_and_cuda_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceUnavailable, match="sees no CUDA GPU here; use `model.device = auto`"):
        resolve_device("cuda")
    _fake_cuda(monkeypatch, count=2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceUnavailable, match="only 2 GPU"):
        resolve_device("cuda:2")


def test_the_base_is_on_its_device_before_peft_wraps_it_and_before_opacus(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch/opacus#820: a model moved after Opacus hooked it breaks. The order here is pinned:
    place (on the fake CUDA device) -> PEFT -> Opacus, and nothing moves the model after placement."""
    _fake_cuda(monkeypatch)
    events: list[tuple[str, str]] = []
    real_peft = lora_module.get_peft_model

    def fake_place(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        events.append(("place", str(device)))  # no real CUDA: record the move, keep the model on the CPU
        return model.to(dtype=dtype)

    def recording_peft(model, config):  # type: ignore[no-untyped-def]
        events.append(("peft", ""))
        return real_peft(model, config)

    def no_move(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(isinstance(a, str | torch.device) for a in args) or "device" in kwargs:
            events.append(("moved", str(args or kwargs)))
        return self

    monkeypatch.setattr(models_module, "place", fake_place)
    monkeypatch.setattr(lora_module, "get_peft_model", recording_peft)
    model, tokenizer = build_adapted_model(
        "tiny-llama", AdapterSpec(rank=4), kind="causal-lm", num_labels=None, init_seed=0,
        precision=BasePrecision(device="cuda", dtype="bfloat16"),
    )
    from privacy import _opacus

    real_make_private = _opacus.PrivacyEngine.make_private

    def recording_make_private(self, **kwargs):  # type: ignore[no-untyped-def]
        events.append(("opacus", ""))
        return real_make_private(self, **kwargs)

    monkeypatch.setattr(_opacus.PrivacyEngine, "make_private", recording_make_private)
    monkeypatch.setattr(torch.nn.Module, "to", no_move)  # any later device move is recorded
    task = build_task("arithmetic", seed=0, max_length=48)
    rows = task.build_datasets()["train"].select(range(8)).to_list()
    dp = DPConfig(enabled=True, noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False)
    local_train(model, task, tokenizer, rows, steps=1, batch_size=4, lr=0.01, weight_decay=0.0, seed=0,
                private=PrivateRound(config=dp, planned_rounds=1, state=RecordDict()))
    assert events == [("place", "cuda"), ("peft", ""), ("opacus", "")]


@pytest.mark.parametrize(("name", "kind", "labels", "method"), [
    ("tiny-llama", "causal-lm", None, "lora"),
    ("tiny-llama", "sequence-classification", 3, "lora-sb"),
    ("tiny-llama", "causal-lm", None, "abba"),
    ("minilm-l6", "sequence-classification", 5, "lora"),
])
def test_a_bf16_base_trains_float32_adapters(name: str, kind: str, labels: int | None, method: str) -> None:
    model, tokenizer = build_adapted_model(
        name, AdapterSpec(rank=4, method=method), kind=kind, num_labels=labels, init_seed=0,  # type: ignore[arg-type]
        precision=BasePrecision(dtype="bfloat16"),
    )
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    base = {n: p for n, p in model.named_parameters() if not p.requires_grad and ".lora_" not in n}
    assert trained and {p.dtype for p in trained.values()} == {torch.float32}
    assert {p.dtype for p in base.values()} == {torch.bfloat16}
    batch = tokenizer(["12 + 30 = 42", "a b c"], return_tensors="pt", padding=True)
    model(**batch).logits.float().square().mean().backward()
    for n, p in trained.items():
        assert p.grad is not None and p.grad.dtype == torch.float32, n
    assert any(float(p.grad.abs().max()) > 0 for p in trained.values() if p.grad is not None)


def test_gradient_checkpointing_toggles_and_gives_the_same_gradients() -> None:
    model, tokenizer = build_adapted_model("tiny-llama", AdapterSpec(rank=4), kind="causal-lm", num_labels=None, init_seed=0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    ids = tokenizer(["12 + 30 = 42"], return_tensors="pt")["input_ids"]
    model.train()

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    set_gradient_checkpointing(model, True)
    assert model.get_base_model().is_gradient_checkpointing
    checkpointed = grads()
    set_gradient_checkpointing(model, False)
    assert not model.get_base_model().is_gradient_checkpointing
    for n, g in plain.items():
        torch.testing.assert_close(checkpointed[n], g, rtol=1e-5, atol=1e-7)


def test_a_quantized_base_without_bitsandbytes_is_refused_at_build_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    problem = quantization_problem("nf4", torch.device("cpu"))
    assert problem is not None and "needs bitsandbytes" in problem and '.[quant]' in problem
    assert quantization_problem("none", torch.device("cpu")) is None
    with pytest.raises(RuntimeError, match="needs bitsandbytes"):
        models_module.build_base_model("tiny-llama", kind="causal-lm", precision=BasePrecision(quantization="nf4"))


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes not installed (pip install -e '.[quant]')")
@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_a_quantized_tiny_llama_trains_on_the_cpu(quantization: str) -> None:
    import bitsandbytes as bnb

    from adapters.base_delta import BaseWeights

    assert quantization_problem(quantization, torch.device("cpu")) is None  # bitsandbytes >= 0.46: a CPU backend
    model, tokenizer = build_adapted_model(
        "tiny-llama", AdapterSpec(rank=4), kind="causal-lm", num_labels=None, init_seed=0,
        precision=BasePrecision(dtype="bfloat16", quantization=quantization),  # type: ignore[arg-type]
    )
    layer = model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj").get_base_layer()
    assert isinstance(layer, bnb.nn.Linear4bit if quantization == "nf4" else bnb.nn.Linear8bitLt)
    with pytest.raises(ValueError, match="cannot write into the quantized base"):
        BaseWeights(model, storage="fold")
    from adapters.base_delta import adapted_elements

    assert adapted_elements(model) == 4 * (256 * 256 + 128 * 256)  # q_proj, v_proj of 4 layers (the audit's size)
    ids = tokenizer(["12 + 30 = 42"], return_tensors="pt")["input_ids"]
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)
