"""Benchmark the cost of DP-SGD: one DP step's time over one plain step's, per adapter kind and model.

A plain step is forward, backward and AdamW on the adapter (what ``client.training`` runs). A DP step
is the same through ``privacy.privatize`` (Opacus hooks mode): per-example gradients of the trainable
tensors, flat clipping, Gaussian noise, then AdamW. Both are measured in the same process on the
same batches (fixed-size batches, no Poisson sampling, so both see the same work), interleaved, and
the median of the timed steps is reported; the ratio is what matters, not the seconds.

Models and tasks are the ones Corolla runs: ``tiny-llama`` on ``arithmetic`` (causal LM) and
``minilm-l6`` on ``topics`` (classification head trained). LoRA-SB gets random orthonormal B, A
(timing does not depend on how they were derived); LoRA's B is random so every factor has a
gradient. The LoRA-SB aim (issue 4): at most 1.5x, as only r² numbers per module need per-example
gradients.

Usage: ``python -m simulations.benchmarks.dp_step [--quick] [--steps N] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapters.lora import AdapterSpec, build_adapted_model
from adapters.lora_sb import adapted_layers, install_factors
from client.tasks import Task, build_task
from privacy import DPConfig, privatize
from simulations.benchmarks._output import write_result

MODELS = {"tiny-llama": "arithmetic", "minilm-l6": "topics"}
KINDS = ("lora", "ffa", "lora-sb")
DP = DPConfig(enabled=True, noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False)


def _model(name: str, task: Task, kind: str, rank: int) -> torch.nn.Module:
    model, _ = build_adapted_model(name, AdapterSpec(rank=rank, method=kind), kind=task.model_kind,
                                   num_labels=task.num_labels, init_seed=0)
    rng = np.random.default_rng(0)
    if kind == "lora-sb":
        factors = {}
        for module, layer in adapted_layers(model).items():
            m = layer.lora_B["default"].get_parameter("weight").shape[0]  # B: (m, r)
            n = layer.lora_A["default"].get_parameter("weight").shape[1]  # A: (r, n)
            factors[module] = (np.linalg.qr(rng.standard_normal((m, rank)))[0], 0.01 * rng.standard_normal((rank, rank)),
                               np.linalg.qr(rng.standard_normal((n, rank)))[0].T)
        install_factors(model, factors)
    else:
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "lora_B" in pname and p.requires_grad:
                    p.copy_(torch.as_tensor(0.01 * rng.standard_normal(tuple(p.shape)), dtype=p.dtype))
    return model.train()


def _time_steps(module: torch.nn.Module, optimizer: torch.optim.Optimizer, task: Task,
                batches: list[dict[str, torch.Tensor]]) -> list[float]:
    times = []
    for batch in batches:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        task.example_losses(module, batch).mean().backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def measure(name: str, kind: str, *, steps: int, batch_size: int, rank: int) -> dict[str, Any]:
    """Median plain and DP step seconds (after one warm-up step each) and their ratio."""
    task = build_task(MODELS[name], seed=0, max_length=64)
    rows = task.build_datasets()["train"].select(range(batch_size * (steps + 1))).to_list()
    tokenizer = build_adapted_model(name, AdapterSpec(rank=rank), kind=task.model_kind, num_labels=task.num_labels,
                                    init_seed=0)[1]
    batches = [task.collate(tokenizer, rows[i * batch_size:(i + 1) * batch_size]) for i in range(steps + 1)]
    plain_model, dp_model = _model(name, task, kind, rank), _model(name, task, kind, rank)
    plain_opt = torch.optim.AdamW([p for p in plain_model.parameters() if p.requires_grad], lr=1e-3)
    dp_opt = torch.optim.AdamW([p for p in dp_model.parameters() if p.requires_grad], lr=1e-3)
    trainable = sum(p.numel() for p in dp_model.parameters() if p.requires_grad)
    with privatize(dp_model, dp_opt, config=DP, num_examples=len(rows), batch_size=batch_size, steps=steps + 1,
                   planned_rounds=1) as private:
        plain, dp = [], []
        for batch in batches:  # interleaved, so load on the machine hits both alike
            plain += _time_steps(plain_model, plain_opt, task, [batch])
            dp += _time_steps(private.module, private.optimizer, task, [batch])
    plain_s, dp_s = statistics.median(plain[1:]), statistics.median(dp[1:])
    return {"model": name, "adapter": kind, "rank": rank, "batch_size": batch_size, "steps": steps,
            "trainable_params": trainable, "plain_s": plain_s, "dp_s": dp_s, "ratio": dp_s / plain_s}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny-llama only, 2 timed steps (for tests)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per path")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/dp_step.json"))
    args = parser.parse_args(argv)
    models = ["tiny-llama"] if args.quick else list(MODELS)
    steps = 2 if args.quick else args.steps
    rows = []
    print(f"{'model':>11} {'adapter':>8} {'trainable':>10} {'plain ms':>9} {'DP ms':>9} {'DP/plain':>9}")
    for name in models:
        for kind in KINDS:
            row = measure(name, kind, steps=steps, batch_size=args.batch_size, rank=args.rank)
            rows.append(row)
            print(f"{name:>11} {kind:>8} {row['trainable_params']:>10} {1e3 * row['plain_s']:>9.1f} "
                  f"{1e3 * row['dp_s']:>9.1f} {row['ratio']:>9.2f}", flush=True)
    result = {"benchmark": "dp_step", "quick": args.quick, "torch_threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "rows": rows}
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
