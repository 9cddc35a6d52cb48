"""Benchmark training throughput: response tokens per second of Corolla's local round on the
``instruct`` task against a plain transformers + PEFT loop, same model, batch and sequence length,
in one process.

* Corolla: :func:`client.training.local_train` on the task's rows (the task collates each batch:
  chat template, response-only labels), the model from :func:`adapters.lora.build_adapted_model`
  with LoRA on the attention and MLP projections.
* Plain: the same base model loaded with ``AutoModelForCausalLM``, ``peft.get_peft_model`` with the
  same ``LoraConfig`` targets and rank, batches tokenized up front (the same ids and labels), and
  ``model(input_ids, attention_mask, labels).loss`` -> ``backward`` -> ``AdamW.step``.

Both run ``--steps`` steps after ``--warmup`` untimed ones, alternating ``--repeats`` times; tokens/s
counts the response tokens (labels != -100) of the timed steps. Usage:
``python -m simulations.benchmarks.instruct_throughput [--model smollm2-135m] [--batch 16]
[--max-length 128] [--steps 4] [--out runs/benchmarks/instruct_throughput.json]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from adapters.lora import AdapterSpec, build_adapted_model
from adapters.models import auto_target_modules, build_base_model
from client.tasks.instruct import InstructConfig, InstructionTuning
from client.training import batch_indices, local_train
from simulations.benchmarks._output import write_result


def _rows(args: argparse.Namespace) -> tuple[InstructionTuning, list[dict[str, Any]]]:
    task = InstructionTuning(seed=0, max_length=args.max_length, settings=InstructConfig(source=args.source, num_examples=200))
    return task, task.build_datasets()["train"].to_list()


def _batches(task: InstructionTuning, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]],
             args: argparse.Namespace, seed: int) -> list[dict[str, torch.Tensor]]:
    """The batches local_train draws with ``seed``, collated once (the plain loop's pre-tokenized data)."""
    idx = batch_indices(len(rows), steps=args.steps, batch_size=args.batch, seed=seed)
    return [task.collate(tokenizer, [rows[i] for i in batch]) for batch in idx]


def response_tokens(batches: list[dict[str, torch.Tensor]]) -> int:
    """Label positions that are scored (next-token targets), summed over ``batches``."""
    return int(sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches))


def corolla_round(model: torch.nn.Module, task: InstructionTuning, tokenizer: PreTrainedTokenizerBase,
                  rows: list[dict[str, Any]], args: argparse.Namespace, seed: int) -> float:
    started = time.perf_counter()
    local_train(model, task, tokenizer, rows, steps=args.steps, batch_size=args.batch, lr=args.lr, weight_decay=0.0, seed=seed)
    return time.perf_counter() - started


def plain_round(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], args: argparse.Namespace) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    model.train()
    started = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--source", default="reasoning-gym:basic_arithmetic,leg_counting,word_sorting")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/instruct_throughput.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    task, rows = _rows(args)
    spec = AdapterSpec(rank=args.rank, alpha=2.0 * args.rank, default_targets="attention-mlp")
    corolla_model, tokenizer = build_adapted_model(args.model, spec, kind="causal-lm", num_labels=None, init_seed=0)
    from peft import LoraConfig, get_peft_model

    base = build_base_model(args.model, kind="causal-lm")
    targets = auto_target_modules(base.model_type, "attention-mlp")
    plain_model = get_peft_model(base.model, LoraConfig(r=args.rank, lora_alpha=2.0 * args.rank, target_modules=targets,
                                                        task_type="CAUSAL_LM"))
    warm = argparse.Namespace(**{**vars(args), "steps": args.warmup})
    corolla_round(corolla_model, task, tokenizer, rows, warm, seed=999)
    plain_round(plain_model, _batches(task, tokenizer, rows, warm, seed=999), warm)
    timings: dict[str, list[float]] = {"corolla": [], "plain": []}
    tokens = 0
    for repeat in range(args.repeats):
        batches = _batches(task, tokenizer, rows, args, seed=repeat)
        tokens = response_tokens(batches)  # the same batches local_train draws with this seed
        timings["corolla"].append(tokens / corolla_round(corolla_model, task, tokenizer, rows, args, seed=repeat))
        timings["plain"].append(tokens / plain_round(plain_model, batches, args))
        print(f"repeat {repeat}: corolla {timings['corolla'][-1]:.1f} tok/s, plain {timings['plain'][-1]:.1f} tok/s "
              f"({tokens} response tokens in {args.steps} steps of {args.batch})", flush=True)
    corolla = sum(timings["corolla"]) / len(timings["corolla"])
    plain = sum(timings["plain"]) / len(timings["plain"])
    result = {"model": args.model, "batch": args.batch, "max_length": args.max_length, "rank": args.rank,
              "steps": args.steps, "repeats": args.repeats, "targets": targets, "torch_threads": torch.get_num_threads(),
              "response_tokens_per_round": tokens, "corolla_tokens_per_s": corolla, "plain_tokens_per_s": plain,
              "overhead": plain / corolla, "per_repeat": timings}
    print(f"corolla {corolla:.1f} tok/s, plain transformers+PEFT {plain:.1f} tok/s: overhead x{plain / corolla:.3f}", flush=True)
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
