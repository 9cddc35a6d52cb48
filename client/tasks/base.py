"""The task-plugin contract: what a client-side task provides to the training loop.

A task owns its data (deterministic generation or loading), how examples become tensors, the
per-example loss and its evaluation metrics. The platform owns everything else: the model and its
adapter (``adapters``), partitioning across clients (``client.tasks.partition``), DP-SGD
(``privacy``) and the federated loop. See ``docs/tasks.md §1``.

The loss is returned **per example** (shape ``(B,)``) so that the training loop can reduce it to a
batch mean and Opacus can clip per sample without the task knowing about either.

Optional hooks (defaults are no-ops) let a paper plugin reach further into the federated loop
(``docs/tasks.md §2``):

- :meth:`Task.configure` receives the whole validated run config (plugin sections included);
- :meth:`Task.transform_update` may replace the payload a client sends (an intervention);
- :meth:`Task.client_report` sends a small JSON report up with the train reply;
- :meth:`Task.merge_reports` runs on the server after aggregation, over every accepted reply;
  what it returns as ``broadcast`` travels down with the next round's messages and is handed to
  :meth:`Task.apply_broadcast` on every client and on the server's own task (central evaluation);
- :meth:`Task.shard_metrics` measures the global model on the client's own *training* shard during
  federated evaluation (memorisation of private data);
- :meth:`Task.privacy_gaps` says which of those send client data outside DP-SGD (``docs/privacy.md §8``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from pydantic import BaseModel

from contract import MetricSpec, RunConfig
from contract.config import Section

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ModelKind = Literal["sequence-classification", "causal-lm", "masked-lm"]


@dataclass(frozen=True)
class TaskMetrics:
    """Metrics of one evaluation pass, keyed ``name -> value``, over ``num_examples`` examples.

    ``samples``: optional JSON-able records of what the model produced (e.g. a few generations);
    central evaluation writes them to ``samples/round-<N>.jsonl`` in the run folder."""

    values: dict[str, float]
    num_examples: int
    samples: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class AdapterUpdate:
    """One client's local round in payload form.

    ``before`` is the global payload the client received, ``after`` what local training produced
    (same keys, shapes, dtypes); ``layout`` is :func:`adapters.payload.layout` of the model: per
    adapted module its payload keys (``a_key``/``b_key``/``r_key``/...), ``scale`` and orientation.
    """

    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]
    layout: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class ClientReport:
    """What the server hands :meth:`Task.merge_reports` per accepted train reply."""

    node: int
    num_examples: int
    report: dict[str, Any] | None
    arrays: dict[str, np.ndarray]


@dataclass(frozen=True)
class ReportMerge:
    """The server-side result of one round's reports.

    ``broadcast``: JSON-able state sent to every client with the next round's messages (and applied
    to the server's task); ``None`` keeps the previous broadcast. ``metrics``: scalars added to the
    round's row in ``rounds.jsonl``. ``detail``: JSON-able, written to ``plugins/round-<N>.json``.
    """

    broadcast: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] | None = None


class Task(ABC):
    """One client-side task. Subclasses are registered by name in ``client.tasks.registry``.

    Attributes
    ----------
    name : str
        Registry name, as the user writes it in ``task.name``.
    model_kind : {"sequence-classification", "causal-lm"}
        Which head the base model needs; ``adapters.build_base_model`` builds it.
    label_column : str or None
        Column that Dirichlet / pathological partitioners split by; ``None`` means only IID works.
    main_metric : str
        The metric reports and the compare pipeline rank strategies by (e.g. ``"accuracy"``).
    adapter_targets : {"attention", "attention-mlp"}
        What ``adapter.target-modules = auto`` adapts (``adapters.models.auto_target_modules``).
    config_section : type[Section] or None
        The task's own keys, registered with :func:`contract.config.register_section` in its
        ``config.py``; :meth:`configure` reads them with ``config.section(...)``. ``None``: core keys only.
    summary : str
        One line for ``corolla tasks``; empty: the first paragraph of the class docstring.
    report_schema : type[pydantic.BaseModel] or None
        The shape of this task's :meth:`client_report` (field types, ranges, sizes). The server
        validates every report against it before :meth:`merge_reports` sees it and skips (counts) a
        report that does not fit (``docs/trust.md §5``). ``None``: any JSON object.
    reply_metrics : tuple[MetricSpec, ...]
        Metrics this task makes clients send beyond the core ones (``contract.reply_schema``); a reply
        carrying an undeclared metric is dropped (``docs/trust.md §1``).
    """

    name: ClassVar[str]
    model_kind: ClassVar[ModelKind]
    label_column: ClassVar[str | None] = "label"
    main_metric: ClassVar[str] = "accuracy"
    # what `adapter.target-modules = auto` adapts: "attention" or "attention-mlp"
    # (adapters.models.auto_target_modules)
    adapter_targets: ClassVar[Literal["attention", "attention-mlp"]] = "attention"
    config_section: ClassVar[type[Section] | None] = None
    summary: ClassVar[str] = ""
    report_schema: ClassVar[type[BaseModel] | None] = None
    reply_metrics: ClassVar[tuple[MetricSpec, ...]] = ()

    def __init__(self, *, seed: int, max_length: int) -> None:
        self.seed = seed
        self.max_length = max_length
        self.config: RunConfig | None = None

    def configure(self, config: RunConfig) -> None:
        """Receive the validated run config (called once by the worker and the server after
        construction, before any data or model is touched). Override to read a plugin section;
        call ``super().configure(config)``."""
        self.config = config

    @classmethod
    def privacy_gaps(cls, config: RunConfig) -> tuple[str, ...]:
        """What this task sends from a client's training data outside DP-SGD under ``config``, one
        sentence each (``summary.json``'s ``privacy.not_covered``; ``docs/privacy.md §8``).

        A task that overrides :meth:`client_report` or :meth:`shard_metrics` must override this too:
        otherwise its report is listed as not covered, unexamined. What is computed only from the sent
        (DP-noised) update is post-processing and covered. Raise :class:`contract.ConfigError` to refuse
        a combination that DP-SGD cannot describe. Default: nothing.
        """
        return ()

    def train_pool(self, datasets: DatasetDict, num_partitions: int) -> Dataset:
        """The rows ``num_partitions`` clients partition: the fixed ``train`` split by default; a task
        that generates its data grows it with the federation (``task.examples-per-client``)."""
        return datasets["train"]

    def pool_rows(self, shard: Dataset) -> list[dict[str, Any]]:
        """The training rows of ``shard``, a partition of :meth:`train_pool`'s pool, in its order: the
        shard's own rows by default; a task whose grown pool holds only what the partitioners read
        generates the rows here (``client.tasks.generated_pool``)."""
        return shard.to_list()

    @property
    def num_labels(self) -> int | None:
        """Number of classes for a classification head; ``None`` for causal LM tasks."""
        return None

    @abstractmethod
    def build_datasets(self) -> DatasetDict:
        """Return ``{"train": ..., "test": ...}``: the pool clients are partitioned from, and the
        held-out global test split used for central evaluation. MUST be deterministic in ``seed``."""

    @abstractmethod
    def collate(self, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Turn dataset rows into a batch of tensors (``input_ids``, ``attention_mask``, and the
        targets the task's ``example_losses`` reads), padded to at most ``max_length`` tokens."""

    @abstractmethod
    def example_losses(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-example loss, shape ``(B,)``. Differentiable; the caller reduces it."""

    @abstractmethod
    def evaluate(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *, batch_size: int
    ) -> TaskMetrics:
        """Evaluate ``model`` (in eval mode, under ``torch.no_grad``) on ``rows``.

        Returns at least ``loss`` and ``main_metric``."""

    # --- optional hooks (module docstring); the defaults do nothing -------------------------------

    def implements(self, hook: str) -> bool:
        """Whether this task overrides the optional ``hook`` (callers skip the work a no-op would waste)."""
        return getattr(type(self), hook) is not getattr(Task, hook)

    def transform_update(self, model: torch.nn.Module, update: AdapterUpdate) -> dict[str, np.ndarray] | None:
        """Client, after local training: a replacement payload to send (same keys, shapes and
        dtypes as ``update.after``), or ``None`` to send ``update.after`` unchanged."""
        return None

    def client_report(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *,
        update: AdapterUpdate,
    ) -> dict[str, Any] | None:
        """Client, after local training on ``rows``: a small JSON-able report sent up with the train
        reply (metered like everything else), or ``None``."""
        return None

    def merge_reports(
        self, server_round: int, reports: list[ClientReport], *, sent: dict[str, np.ndarray]
    ) -> ReportMerge:
        """Server, after aggregation: combine this round's accepted replies (``sent`` is the global
        payload the clients trained from). Each report already fits :attr:`report_schema`. Keep it
        free of side effects: when a report makes it raise, the server calls it again on subsets
        to find and skip that report (``docs/trust.md §5``)."""
        return ReportMerge()

    def apply_broadcast(self, state: dict[str, Any]) -> None:
        """Client before training/evaluating, and server before central evaluation: install the
        state the server's :meth:`merge_reports` broadcast."""

    def shard_metrics(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *, batch_size: int
    ) -> dict[str, float]:
        """Client federated evaluation: metrics of the global model on this client's own training
        shard ``rows`` (e.g. extraction of memorised private data). Reduced by weighted mean."""
        return {}
