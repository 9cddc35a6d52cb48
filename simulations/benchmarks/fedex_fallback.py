"""Why FedEx-LoRA falls back at a high learning rate, and what restarts the clients well.

The study runs the federated loop's maths directly on one built model (no Flower messages; the
exact same client training, ``client.training.local_train``, and the same aggregation maths as the
strategies) for a few ways of restarting the clients each round:

- ``fedex``: FedEx-LoRA (arXiv 2410.09432): clients start from the averaged ``(B̄, Ā)`` over the
  base ``W0 + D`` with the exact residual folded into ``D`` (``docs/algorithms.md §4``);
- ``fedex-balanced``: the same exact global model, but the clients start from the balanced
  re-factorisation of every module's ``s·B̄Ā = (U√Σ)(√ΣVᵀ)`` (same product, so still exact);
- ``fedex-fresh``: the whole round's mean update folded into the base and the clients restarted
  from ``B = 0`` and a fresh ``A`` (FLoRA's restart, arXiv 2409.05976 §3; still exact).

Per round it records, over all adapted modules (Frobenius norms, float64): the clients' mean update
``‖ΔW_i‖ = ‖s(B_i A_i − B_0 A_0)‖`` from the adapter they started from, the norm of the starting
adapter ``‖s B_0 A_0‖`` and its factors, the residual FedEx-LoRA folds ``‖s(Σ p_i B_i A_i − B̄Ā)‖``,
and the central accuracy. Every client restarts AdamW each round (fresh moments), as Corolla's
clients do.

Run (heavy; one at a time on a small box)::

    flock /tmp/corolla-heavy.lock nice python -m simulations.benchmarks.fedex_fallback \\
        --variants fedex,fedex-fresh --lrs 0.02 --out runs/fedex_fallback.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import client.worker as worker_module
from adapters.payload import extract, layout, load
from client.training import local_train
from contract import parse_run_config
from simulations.benchmarks._output import write_result

VARIANTS = ("fedex", "fedex-balanced", "fedex-fresh")
DEFAULT_TASK = {  # the README's default set-up: minilm-l6 on topics, 10 clients, Dirichlet 0.5, r = 32
    "strategy.name": "fedex", "adapter.name": "lora", "model.name": "minilm-l6", "task.name": "topics",
    "adapter.rank": 32, "train.local-steps": 10, "train.batch-size": 16, "data.partitioner": "dirichlet",
    "data.alpha": 0.5, "seed": 42,
}


def _products(arrays: dict[str, np.ndarray], lay: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """``s·B A`` per module, float64 ``(m, n)``."""
    return {
        module: float(e["scale"]) * arrays[e["b_key"]].astype(np.float64) @ arrays[e["a_key"]].astype(np.float64)
        for module, e in lay.items()
    }


def _norm(mats: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.sum(m * m)) for m in mats.values())))


def _restart(variant: str, mean: dict[str, np.ndarray], lay: dict[str, dict[str, Any]],
             rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The adapter the clients start from next round, and what the base takes on besides the residual."""
    start, fold = dict(mean), {}
    for module, e in lay.items():
        b, a, s = mean[e["b_key"]].astype(np.float64), mean[e["a_key"]].astype(np.float64), float(e["scale"])
        if variant == "fedex-balanced":  # B̄Ā = Q_b U Σ Vᵀ Q_aᵀ = (Q_b U √Σ)(√Σ Vᵀ Q_aᵀ): same product
            q_b, r_b = np.linalg.qr(b)  # B̄ = Q_b R_b: (m, r), (r, r)
            q_a, r_a = np.linalg.qr(a.T)  # Āᵀ = Q_a R_a: (n, r), (r, r)
            u, sig, vt = np.linalg.svd(r_b @ r_a.T)  # (r, r)
            root = np.sqrt(sig)
            start[e["b_key"]] = ((q_b @ u) * root).astype(np.float32)  # (m, r)
            start[e["a_key"]] = (root[:, None] * (vt @ q_a.T)).astype(np.float32)  # (r, n)
        elif variant == "fedex-fresh":  # fold s·B̄Ā too, restart from B = 0 and a fresh A
            fold[module] = s * b @ a
            bound = 1.0 / np.sqrt(a.shape[1])  # PEFT's kaiming_uniform(a=√5) for A: (r, n)
            start[e["a_key"]] = rng.uniform(-bound, bound, size=a.shape).astype(np.float32)
            start[e["b_key"]] = np.zeros_like(mean[e["b_key"]])
    return start, fold


def run_variant(variant: str, lr: float, *, clients: int, rounds: int, values: dict[str, Any]) -> dict[str, Any]:
    """One federated run of ``variant`` at ``lr``: per-round norms and the central accuracy."""
    config = parse_run_config({**values, "train.lr": lr, "num-server-rounds": rounds})
    worker_module._CACHE.clear()
    worker = worker_module.get_worker(config, "lora")
    model, task, tok = worker.model, worker.task, worker.tokenizer
    lay = layout(model)
    test_rows = worker.datasets["test"].to_list()
    shards = [worker.train_rows(config, partition_id=i, num_partitions=clients) for i in range(clients)]
    weights = np.array([len(s) for s in shards], dtype=np.float64) / sum(len(s) for s in shards)  # (K,)
    rng = np.random.default_rng(config.seed)
    start = extract(model)
    base: dict[str, np.ndarray] = {}
    rows = []
    for server_round in range(1, rounds + 1):
        worker.base.set({k: v.astype(np.float32) for k, v in base.items()})
        started = _products(start, lay)
        trained, updates = [], []
        for i, shard in enumerate(shards):
            load(model, start)
            local_train(model, task, tok, shard, steps=config.train.local_steps, batch_size=config.train.batch_size,
                        lr=lr, weight_decay=config.train.weight_decay, seed=config.seed * 1_000_003 + server_round * 10_007 + i)
            after = extract(model)
            trained.append(after)
            updates.append(_norm({m: p - started[m] for m, p in _products(after, lay).items()}))
        mean = {k: sum(w * t[k].astype(np.float64) for w, t in zip(weights, trained)).astype(np.float32) for k in start}
        exact = {m: sum(w * p[m] for w, p in zip(weights, (_products(t, lay) for t in trained))) for m in lay}
        at_mean = _products(mean, lay)
        residual = {m: exact[m] - at_mean[m] for m in lay}  # s(Σ p_i B_i A_i − B̄Ā): (m, n)
        start, fold = _restart(variant, mean, lay, rng)
        for m in lay:
            base[m] = base.get(m, 0) + residual[m] + fold.get(m, 0)
        worker.base.set({k: v.astype(np.float32) for k, v in base.items()})
        load(model, start)
        result = task.evaluate(model, tok, test_rows, batch_size=config.eval.batch_size)
        a_norm = float(np.sqrt(sum(float(np.sum(start[e["a_key"]].astype(np.float64) ** 2)) for e in lay.values())))
        b_norm = float(np.sqrt(sum(float(np.sum(start[e["b_key"]].astype(np.float64) ** 2)) for e in lay.values())))
        rows.append({
            "round": server_round, "accuracy": float(result.values[task.main_metric]),
            "update_norm_mean": float(np.mean(updates)), "update_norm_max": float(np.max(updates)),
            "start_adapter_norm": _norm(started), "residual_norm": _norm(residual), "mean_update_norm": _norm(exact),
            "next_a_norm": a_norm, "next_b_norm": b_norm, "base_delta_norm": _norm(base),
        })
        print(f"{variant} lr={lr} round {server_round}: " + ", ".join(f"{k}={v:.4g}" for k, v in rows[-1].items() if k != "round"), flush=True)
    return {"variant": variant, "lr": lr, "rounds": rows}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--variants", default="fedex,fedex-balanced,fedex-fresh")
    parser.add_argument("--lrs", default="0.02,0.005")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/fedex_fallback.json"))
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    started = time.perf_counter()
    runs = [run_variant(v, float(lr), clients=args.clients, rounds=args.rounds, values=DEFAULT_TASK)
            for lr in args.lrs.split(",") for v in variants]
    result = {"set_up": {**DEFAULT_TASK, "clients": args.clients, "rounds": args.rounds}, "runs": runs,
              "wall_s": round(time.perf_counter() - started, 1)}
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
