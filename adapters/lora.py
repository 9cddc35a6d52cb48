"""LoRA through PEFT: wrap a frozen base model so that only the adapter (and a task head) train.

``W = W0 + s·B A`` with ``B: (m, r)`` (``lora_B``), ``A: (r, n)`` (``lora_A``) and ``s = alpha / r``
(Hu et al. 2021, arXiv 2106.09685 §4.1). PEFT initialises A Kaiming-uniform and B = 0, so the
adapted model starts equal to the base.

``AdapterSpec.method`` picks the adapter kind (``adapters.kind_registry``; ``corolla adapters`` lists
them): ``lora`` (the default, unchanged), ``ffa`` (FFA-LoRA: A frozen), ``lora-sb`` (LoRA-SB: frozen A,
B and a trainable r×r R; s = 1, so ``alpha`` is ignored; its B, A and R0 MUST then be installed, see
``adapters.lora_sb``), ``abba`` (ABBA: ``s·(B1 A1) ⊙ (B2 A2)``, ranks ``rank1``/``rank2``, ``s = alpha``;
see ``adapters.abba``) or any other registered kind. The kind edits the ``LoraConfig``
(``AdapterKind.configure``) and the wrapped model (``AdapterKind.finalize``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedTokenizerBase

from adapters.kind_registry import get_adapter_kind
from adapters.models import BaseModel, ModelKind, TargetScope, auto_target_modules, build_base_model
from adapters.precision import BasePrecision, train_in_float32

# PEFT has no masked-LM task type: None wraps the bare model (the MLM head stays frozen)
_TASK_TYPES = {"sequence-classification": "SEQ_CLS", "causal-lm": "CAUSAL_LM", "masked-lm": None}


@dataclass(frozen=True)
class AdapterSpec:
    """What to adapt and how; mirrors ``adapter.*`` in the run config."""

    rank: int = 8
    alpha: float = 16.0
    target_modules: tuple[str, ...] | None = None  # None: the architecture's default
    dropout: float = 0.0
    method: str = "lora"  # a registered adapter kind (adapters.kind_registry)
    rank1: int = 0  # ABBA's r1; 0: derived from rank (see ranks())
    rank2: int = 0  # ABBA's r2; 0: derived from rank
    default_targets: TargetScope = "attention"  # what target_modules=None adapts (auto_target_modules)

    def __post_init__(self) -> None:
        get_adapter_kind(self.method)  # an unknown kind fails here, listing the known ones
        if self.rank1 < 0 or self.rank2 < 0:
            raise ValueError(f"`adapter.rank1` = {self.rank1} and `adapter.rank2` = {self.rank2} must be >= 0")

    def ranks(self) -> tuple[int, int]:
        """ABBA's ``(r1, r2)``: the ``rank1``/``rank2`` set, the unset (0) ones derived from ``rank``.

        Both unset: ``r1 = rank // 2``, ``r2 = rank - r1``, so ``r1 + r2 = rank`` and ABBA costs what
        LoRA rank ``rank`` costs (the paper's ``r1 = r2 = r/2`` budget,
        ``docs/algorithms.md §10.1``). One unset: it is ``rank`` minus the other. Every result must be >= 1.
        """
        r1, r2 = self.rank1, self.rank2
        if not r1 and not r2:
            r1 = self.rank // 2
            r2 = self.rank - r1
        elif not r1:
            r1 = self.rank - r2
        elif not r2:
            r2 = self.rank - r1
        if r1 < 1 or r2 < 1:
            raise ValueError(
                f"ABBA ranks r1 = {r1}, r2 = {r2} from `adapter.rank` = {self.rank}, `adapter.rank1` = "
                f"{self.rank1}, `adapter.rank2` = {self.rank2} must both be >= 1; set rank1 and rank2"
            )
        return r1, r2

    @classmethod
    def from_config(cls, section: Any, *, method: str = "lora", default_targets: TargetScope = "attention") -> AdapterSpec:
        """Build from the run config's ``adapter.*`` section (anything with those attributes), the
        resolved adapter kind ``method`` and what ``target-modules = auto`` means for the task."""
        targets = section.target_list()
        return cls(
            rank=section.rank,
            alpha=section.alpha,
            target_modules=tuple(targets) if targets else None,
            dropout=section.dropout,
            method=method,
            rank1=getattr(section, "rank1", 0),
            rank2=getattr(section, "rank2", 0),
            default_targets=default_targets,
        )


def lora_config(spec: AdapterSpec, *, kind: ModelKind, model_type: str) -> LoraConfig:
    """The PEFT ``LoraConfig`` for ``spec`` on a ``model_type`` model."""
    targets = list(spec.target_modules) if spec.target_modules else auto_target_modules(model_type, spec.default_targets)
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,  # type: ignore[arg-type]  # PEFT annotates int; its scale lora_alpha / r takes a float
        lora_dropout=spec.dropout,
        target_modules=targets,
        task_type=_TASK_TYPES[kind],
    )
    return get_adapter_kind(spec.method).configure(config, spec)


def wrap_with_lora(base: BaseModel, spec: AdapterSpec, *, kind: ModelKind, init_seed: int) -> PeftModel:
    """Wrap ``base.model`` with LoRA (plus PEFT's trainable head for classification).

    The adapter's random initialisation (LoRA A, the head) is drawn from ``init_seed`` inside a
    forked RNG: the same seed gives the same initial payload in any process, and the caller's global
    RNG is left as it was. ``base.model`` is already on its device and in its dtype
    (``adapters.precision``); the adapter and head are made float32 whatever that dtype is.
    """
    config = lora_config(spec, kind=kind, model_type=base.model_type)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            # the task head (e.g. BERT's classifier) is re-drawn here so that it, too, follows the seed
            for name, module in base.model.named_children():
                reset = getattr(module, "reset_parameters", None)
                if name in ("classifier", "score") and callable(reset):
                    reset()
            model = get_peft_model(base.model, config)
            train_in_float32(model)
            get_adapter_kind(spec.method).finalize(model)
    except ValueError as exc:
        if "Target modules" in str(exc):
            names = sorted({n.rsplit(".", 1)[-1] for n, m in base.model.named_modules() if isinstance(m, torch.nn.Linear)})
            raise ValueError(
                f"`adapter.target-modules` = {','.join(spec.target_modules or [])!r} matches no layer of "
                f"this {base.model_type} model; linear layers it has: {', '.join(names)}"
            ) from exc
        raise
    return model


def build_adapted_model(
    model_name: str,
    spec: AdapterSpec,
    *,
    kind: ModelKind,
    num_labels: int | None,
    init_seed: int,
    precision: BasePrecision | None = None,
) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """Base model ``model_name`` (placed and cast per ``precision``, then) wrapped with ``spec.method``'s
    adapter; returns ``(peft_model, tokenizer)``."""
    base = build_base_model(model_name, kind=kind, num_labels=num_labels, precision=precision)
    return wrap_with_lora(base, spec, kind=kind, init_seed=init_seed), base.tokenizer
