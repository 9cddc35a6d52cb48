"""``safety-arithmetic``: the ``arithmetic`` task with the safety-subspace analysis around it.

Design: the analysis is a mixin (:class:`SafetySubspaces`) that only uses the task-plugin hooks, so
it wraps any training task without touching its data or loss; ``safety-arithmetic`` is that mixin on
:class:`~client.tasks.arithmetic.ArithmeticWordProblems` (one more line gives ``safety-<task>`` for
another task). Per round:

1. (optional, ``safety.project`` != ``none``) :meth:`transform_update` replaces the client's payload
   by the ``same``/``orth``/``opp`` projection of its update (``client.tasks.safety.updates``);
2. :meth:`client_report` measures the update actually sent against the reference
   (``client.tasks.safety.analysis``) and sends the metrics, the per-module detail and a few basis
   vectors per module;
3. :meth:`merge_reports` (server) averages the metrics into ``rounds.jsonl`` (``safety_*``), adds the
   inter-client MSO and writes the per-client, per-module detail to ``plugins/round-<N>.json``;
4. :meth:`evaluate` adds the activation-space MSO of two prompt sets (``safety_act_*``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from adapters.adapter_kind import AdapterKind
from adapters.kind_registry import adapter_kind_of, get_adapter_kind
from adapters.payload import frozen_state
from client.tasks.arithmetic import ArithmeticWordProblems
from client.tasks.base import AdapterUpdate, ClientReport, ReportMerge, Task, TaskMetrics
from client.tasks.registry import register_task
from client.tasks.safety.activations import (
    OFF_TASK_PROMPTS,
    activation_overlap,
    last_token_states,
    layer_range,
    num_blocks,
)
from client.tasks.safety.analysis import analyse_update, merge_client_reports, ref_basis
from client.tasks.safety.config import SafetyConfig
from client.tasks.safety.reference import Reference, base_weights, load_reference, module_key
from client.tasks.safety.report import SafetyReport
from client.tasks.safety.updates import projected_payload, update_factors
from contract import RunConfig
from contract.config import parse_fractions

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def _prompts(path: str, key: str) -> list[str]:
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise ValueError(f"`safety.{key}` = {path!r} cannot be read ({exc}); give a text file, one prompt a line") from exc
    if len(lines) < 2:
        raise ValueError(f"`safety.{key}` = {path!r} needs at least 2 prompts")
    return lines


class SafetySubspaces(Task):
    """Mixin: the safety-subspace analysis through the task-plugin hooks (module docstring).

    Put it before the wrapped task in the bases: ``class X(SafetySubspaces, SomeTask)``.
    """

    config_section = SafetyConfig
    report_schema = SafetyReport
    _reference: Reference | None = None
    _sent: dict[str, np.ndarray] | None = None
    _refactor_loss: float | None = None

    def configure(self, config: RunConfig) -> None:
        super().configure(config)
        safety = config.section(SafetyConfig)
        if not safety.reference_path:
            raise ValueError(f"task `{self.name}` needs `safety.reference-path` (a basis file, PEFT adapter folder "
                             "or aligned checkpoint folder, per `safety.reference-kind`)")
        if not Path(safety.reference_path).exists():
            raise ValueError(f"`safety.reference-path` = {safety.reference_path!r} does not exist")
        self.rhos, self.etas = parse_fractions(safety.rhos), parse_fractions(safety.etas)

    @property
    def safety(self) -> SafetyConfig:
        assert self.config is not None, "configure() first"
        return self.config.section(SafetyConfig)

    def reference(self, model: torch.nn.Module) -> Reference:
        """The reference subspace, loaded on first use (it needs the model's base weights)."""
        if self._reference is None:
            self._reference = load_reference(self.safety.reference_kind, self.safety.reference_path,
                                             base=base_weights(model), max_rank=self.safety.max_reference_rank)
        return self._reference

    @staticmethod
    def _frozen(model: torch.nn.Module) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in frozen_state(model).items()}

    @staticmethod
    def _kind(model: torch.nn.Module) -> AdapterKind:
        return get_adapter_kind(adapter_kind_of(model))  # its factored update and projection

    def transform_update(self, model: torch.nn.Module, update: AdapterUpdate) -> dict[str, np.ndarray] | None:
        self._sent, self._refactor_loss = None, None
        if self.safety.project == "none":
            return None
        reference = self.reference(model)
        shapes = {m: w.shape for m, w in base_weights(model).items()}
        bases = {m: ref_basis(reference[module_key(m)], self.safety.project_rho, shapes[m]) for m in update.layout}
        self._sent, self._refactor_loss = projected_payload(update.layout, update.before, update.after,
                                                            self._frozen(model), bases, self.safety.project,
                                                            self._kind(model))
        return self._sent

    @classmethod
    def privacy_gaps(cls, config: RunConfig) -> tuple[str, ...]:
        """Nothing: the report (subspace overlaps and up to ``safety.report-rank`` basis columns per module)
        is computed from the sent update and the reference alone, never from training rows, so with DP it
        is post-processing of the noised update (docs/privacy.md §8)."""
        return ()

    def client_report(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *,
                      update: AdapterUpdate) -> dict[str, Any] | None:
        sent = self._sent if self._sent is not None else update.after
        factors = update_factors(update.layout, update.before, sent, self._frozen(model), self._kind(model))
        report = analyse_update(factors, self.reference(model), rhos=self.rhos, etas=self.etas,
                                report_rank=self.safety.report_rank)
        if self._refactor_loss is not None:
            report["metrics"]["project_refactor_loss"] = self._refactor_loss
        self._sent = None
        return report

    def merge_reports(self, server_round: int, reports: list[ClientReport], *,
                      sent: dict[str, np.ndarray]) -> ReportMerge:
        metrics, detail = merge_client_reports([(r.node, r.num_examples, r.report or {}) for r in reports],
                                               etas=self.etas)
        detail["round"] = server_round
        return ReportMerge(metrics=metrics, detail=detail)

    def activation_prompts(self, rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
        """The two prompt sets: files from ``safety.prompts-a``/``-b``, else the task's own prompts
        (:meth:`task_prompts`) against :data:`OFF_TASK_PROMPTS`."""
        a = _prompts(self.safety.prompts_a, "prompts-a") if self.safety.prompts_a else self.task_prompts(rows)
        b = _prompts(self.safety.prompts_b, "prompts-b") if self.safety.prompts_b else list(OFF_TASK_PROMPTS)
        return a, b

    def task_prompts(self, rows: list[dict[str, Any]]) -> list[str]:
        """Up to 32 prompts of the wrapped task (override for tasks without a ``question`` column)."""
        # the wrapped task (after this mixin in the MRO) provides prompt(); the mixin cannot name it
        return [self.prompt(row["question"]) for row in rows[:32]]  # type: ignore[attr-defined]  # see above

    def evaluate(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *,
                 batch_size: int) -> TaskMetrics:
        # the wrapped task, after this mixin in the MRO, implements evaluate() (abstract in Task)
        result = super().evaluate(  # type: ignore[safe-super]  # see above
            model, tokenizer, rows, batch_size=batch_size)
        if not self.safety.activation or len(rows) < 2:
            return result
        prompts_a, prompts_b = self.activation_prompts(rows)
        layers = layer_range(num_blocks(model))
        states_a = last_token_states(model, tokenizer, prompts_a, layers, batch_size=batch_size)
        states_b = last_token_states(model, tokenizer, prompts_b, layers, batch_size=batch_size)
        extra = {f"safety_{k}": v for k, v in activation_overlap(states_a, states_b, self.etas).items()}
        return TaskMetrics(values={**result.values, **extra}, num_examples=result.num_examples)


@register_task
class SafetyArithmetic(SafetySubspaces, ArithmeticWordProblems):
    """``arithmetic`` with the safety-subspace analysis (``safety.*``)."""

    name: ClassVar[str] = "safety-arithmetic"
