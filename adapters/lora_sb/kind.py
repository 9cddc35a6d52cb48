"""LoRA-SB (arXiv 2411.19557), the ``lora-sb`` kind: ``W = W0 + s·B R A``, only the ``r × r`` R trains.

``B: (m, r)`` and ``A: (r, n)`` are frozen and sent once; ``s = 1`` (``adapters.lora_sb.layer``). They
MUST come from a gradient estimate (``docs/algorithms.md §8.2``, ``adapters.lora_sb.init``) before round 1: with
``adapter.init = server`` on the server's own calibration sample, with ``federated`` from the nodes'
summed raw gradients (Fed-SB, arXiv 2502.15436; ``docs/algorithms.md §9.2``). The export is the equivalent plain LoRA adapter
with ``B' = s·B R`` (``adapters.lora_sb.export``).
"""

from __future__ import annotations

from collections.abc import Callable
from logging import INFO
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.common import log
from peft import LoraConfig, PeftModel

from adapters.adapter_kind import AdapterKind, Arrays, LayoutEntry, ModuleParams, ProjectedUpdate, ServerSetup
from adapters.kind_registry import register_adapter_kind
from adapters.lora_sb.export import save_as_lora
from adapters.lora_sb.init import effective_lr, init_from_gradients, initialise_lora_sb, install_factors
from adapters.lora_sb.layer import FROZEN_LAYERS, R_LAYER, configure_lora_sb

if TYPE_CHECKING:
    from adapters.lora import AdapterSpec
    from contract import RunConfig

FEDERATED_INIT_GAP = (
    "LoRA-SB's frozen B and A come from the clients' summed raw gradients (adapter.init = federated), "
    "uploaded once without clipping or noise: the reported ε covers the DP-SGD training of R only, not "
    "that one-time upload. Set adapter.init = \"server\" for a guarantee that covers all client data."
)
SERVER_INIT_GAP = (
    "LoRA-SB's frozen B and A come from a gradient estimate on `adapter.init-examples` rows of the task's training "
    "pool on the server (adapter.init = server), without noise; in a simulation the client shards are cut from that "
    "same pool, so those rows can be client examples (a deployment server with its own calibration data touches none)"
)


def _f64(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


@register_adapter_kind
class LoraSB(AdapterKind):
    """``lora-sb``: frozen B, A from a gradient estimate; the r × r R trains."""

    name = "lora-sb"
    paper = "arXiv 2411.19557"
    summary = "LoRA-SB (Fed-SB): W0 + B R A, B and A from a gradient estimate, only r x r R trains"
    trains = "R (+head)"
    frozen_layers = FROZEN_LAYERS
    layout_keys = {"r_key": R_LAYER}
    layout_form = "r-only"

    def configure(self, config: LoraConfig, spec: AdapterSpec) -> LoraConfig:
        return configure_lora_sb(config)

    def server_init(self, setup: ServerSetup) -> None:
        """B, R0, A from the server's calibration sample (``adapter.init = server``) or from the nodes'
        summed gradients (``federated``); R = 0 would be LoRA-XS, not LoRA-SB."""
        config = setup.config
        batch_size = config.train.batch_size
        if config.adapter.init == "server":
            sample = setup.calibration()
            initialise_lora_sb(
                setup.model, sample.batches, sample.loss_fn,
                eta=effective_lr(setup.learning_rate, num_train=sample.examples, batch_size=batch_size), seed=config.seed,
            )
            return
        total = setup.federated_gradients()
        eta = effective_lr(setup.learning_rate, num_train=total.examples, batch_size=batch_size)
        install_factors(setup.model, init_from_gradients(total.gradients, config.adapter.rank, eta=eta, seed=config.seed))
        log(INFO, "LoRA-SB set-up: B and A from the summed gradients of %s examples on %s nodes",
            total.examples, total.nodes)

    def privacy_gaps(self, config: RunConfig) -> tuple[str, ...]:
        """The set-up's gradient estimate is outside DP-SGD: the clients' one-time raw-gradient upload
        (federated), or the server's sample of the training pool (server; docs/privacy.md §8)."""
        return (FEDERATED_INIT_GAP,) if config.adapter.init == "federated" else (SERVER_INIT_GAP,)

    def export_adapter(self, model: PeftModel, directory: Path) -> None:
        """The equivalent plain LoRA adapter, ``B' = s·B R`` (no Corolla code needed to load it)."""
        save_as_lora(model, directory)

    def factored_update(
        self, module: str, entry: LayoutEntry, before: Arrays, after: Arrays, frozen: Arrays
    ) -> tuple[np.ndarray, np.ndarray]:
        """``s B (R1 − R0) A``: ``(m, r)`` and the frozen ``A: (r, n)``."""
        b, a = _f64(frozen[f"{module}.lora_B.weight"]), _f64(frozen[f"{module}.lora_A.weight"])
        return float(entry["scale"]) * b @ (_f64(after[entry["r_key"]]) - _f64(before[entry["r_key"]])), a

    def left_projected(
        self, module: str, entry: LayoutEntry, before: Arrays, after: Arrays, frozen: Arrays,
        project: Callable[[np.ndarray], np.ndarray],
    ) -> ProjectedUpdate:
        """``R' = R0 + B⁺ P B (R1 − R0)``, the least-squares fit (it also projects onto span(B))."""
        b = _f64(frozen[f"{module}.lora_B.weight"])  # B: (m, r)
        r0, r1 = (_f64(p[entry["r_key"]]) for p in (before, after))
        target = project(b @ (r1 - r0))  # (m, r): P B ΔR
        step = np.linalg.lstsq(b, target, rcond=None)[0]
        return ProjectedUpdate({entry["r_key"]: (r0 + step).astype(np.float32)},
                               lost=float(np.sum((b @ step - target) ** 2)), total=float(np.sum(target**2)))

    def module_params(self, m: int, n: int, spec: AdapterSpec) -> ModuleParams:
        """``r²`` trained (R), ``r·(m + n)`` frozen (B and A)."""
        return ModuleParams(trained=spec.rank**2, frozen=spec.rank * (m + n))
