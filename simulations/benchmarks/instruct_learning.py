"""Benchmark federated instruction tuning on real data: SmolLM2-135M-Instruct on three
reasoning-gym skills split by skill across clients, one real ``flwr run`` per strategy.

Every strategy runs the same set-up and seed: ``instruct`` on
``reasoning-gym:basic_arithmetic,leg_counting,word_sorting``, Dirichlet partition over the skill
(``data.alpha`` 0.2: clients hold 9 to 141 rows, half of them one or two skills), LoRA on the attention and MLP projections.
Reported per strategy: the generation score (each skill's own reasoning-gym scorer, greedy decoding)
overall and per skill at round 0 (the base model) and after every round, the held-out loss, and
the bytes moved (per round and in total). Sized for a 2-core CPU (about 4 s per local step of 16
SmolLM2 examples there): ``--steps``, ``--batch``, ``--max-new-tokens`` and ``--examples`` set the
cost; ``--fraction-train`` (default 0.5) samples 5 of the 10 clients each round. Usage: ``python -m simulations.benchmarks.instruct_learning [--strategies fedit fedsb fedex ffa]
[--rounds 5] [--clients 10] [--out runs/benchmarks/instruct_learning.json]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from server.run_folder import read_rounds
from simulations.benchmarks._output import write_result
from simulations.launch import find_app_dir, launch, resolve_config, toml_overrides

SKILLS = ("basic_arithmetic", "leg_counting", "word_sorting")
# Fed-SB trains only an r x r matrix per module (LoRA-SB, arXiv 2502.15436), so it takes a higher rank and step
STRATEGY_SETTINGS: dict[str, dict[str, Any]] = {"fedsb": {"adapter.rank": 32}}


def overrides_for(strategy: str, args: argparse.Namespace) -> dict[str, Any]:
    """The run-config overrides of one strategy's run."""
    return {
        "strategy.name": strategy, "model.name": args.model, "task.name": "instruct",
        "fraction-train": args.fraction_train,
        "task.max-length": args.max_length, "num-server-rounds": args.rounds, "seed": args.seed,
        "train.local-steps": args.steps, "train.batch-size": args.batch, "train.lr": args.lr,
        "adapter.rank": args.rank, "adapter.alpha": 2.0 * args.rank,
        "data.partitioner": "dirichlet", "data.alpha": args.alpha,
        "eval.batch-size": args.eval_batch, "eval.max-examples": 0,
        "instruct.source": "reasoning-gym:" + ",".join(SKILLS), "instruct.num-examples": args.examples,
        "instruct.test-fraction": args.test_fraction, "instruct.max-new-tokens": args.max_new_tokens,
        "instruct.generate-examples": 0, "instruct.samples": 6,
        **STRATEGY_SETTINGS.get(strategy, {}),
    }


def run_strategy(app: Path, out: Path, strategy: str, args: argparse.Namespace) -> dict[str, Any]:
    """One simulation; its per-round, per-skill scores and bytes (raises if the run failed)."""
    values = {**overrides_for(strategy, args), "output-dir": str(out), "run-name": strategy}
    _, flat = resolve_config(app, [toml_overrides(values)])
    started = time.perf_counter()
    result = launch(app, flat, num_supernodes=args.clients, echo=False)
    if not result.ok:
        raise RuntimeError(f"{strategy}: run {result.run_id} ended {result.status}\n{result.output[-3000:]}")
    rows = read_rounds(out / strategy / "rounds.jsonl")
    return {
        "strategy": strategy,
        "settings": {k: v for k, v in values.items() if k.startswith(("adapter.", "train."))},
        "score_per_round": [r["eval_score"] for r in rows],
        "score_per_skill_per_round": {s: [r.get(f"eval_score/{s}") for r in rows] for s in SKILLS},
        "eval_loss_per_round": [r["eval_loss"] for r in rows],
        "train_loss_per_round": [r.get("train_loss") for r in rows],
        "bytes_per_round": [r["bytes_up"] + r["bytes_down"] for r in rows],
        "bytes_total": rows[-1]["bytes_up_total"] + rows[-1]["bytes_down_total"],
        "samples_last_round": (out / strategy / "samples" / f"round-{args.rounds:03d}.jsonl").read_text().splitlines(),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", nargs="+", default=["fedit", "fedsb", "fedex", "ffa"])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--fraction-train", type=float, default=0.5, help="clients sampled per round (0.5: 5 of 10)")
    parser.add_argument("--steps", type=int, default=3, help="local steps per client per round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=0.2, help="Dirichlet concentration over the skills (0.1 cannot give 10 clients 2 rows each)")
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--examples", type=int, default=160, help="reasoning-gym examples per skill")
    parser.add_argument("--test-fraction", type=float, default=0.125, help="held out per skill (scored every round)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/instruct_learning.json"))
    args = parser.parse_args(argv)
    app = find_app_dir()
    runs: list[dict[str, Any]] = []
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies:
            try:
                cell = run_strategy(app, Path(tmp), strategy, args)
            except RuntimeError as exc:  # one failed run must not lose the others' hour of results
                runs.append({"strategy": strategy, "error": str(exc)[-2000:]})
                print(f"{strategy:>6}: FAILED\n{exc}", flush=True)
                write_result(args.out, {"config": config, "runs": runs})
                continue
            runs.append(cell)
            write_result(args.out, {"config": config, "runs": runs})  # after every strategy: partial results survive
            skills = " ".join(f"{s}={cell['score_per_skill_per_round'][s][0]:.3f}->{cell['score_per_skill_per_round'][s][-1]:.3f}"
                              for s in SKILLS)
            print(f"{strategy:>6}: score {cell['score_per_round'][0]:.3f} -> {cell['score_per_round'][-1]:.3f} ({skills}); "
                  f"{cell['bytes_total'] / 1e6:.2f} MB; {cell['wall_s']:.0f} s", flush=True)
    return {"config": config, "runs": runs}


if __name__ == "__main__":
    main()
