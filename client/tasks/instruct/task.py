"""``instruct``: supervised instruction tuning of a causal LM, loss on response tokens only.

Settings in ``instruct.*`` (:class:`~client.tasks.instruct.config.InstructConfig`). The pipeline:
``sources`` (read ``instruct.source``) -> ``formats`` (rows -> prompt turns + response) ->
``splits`` (pool and held-out test split, partition label) -> ``prompting`` (chat or plain template,
labels ``-100`` on the prompt, truncation) -> ``evaluation`` (loss, perplexity, generation score).

Rows whose response does not fit ``task.max-length`` are kept in the tables (the pool must be the
same on every node whatever its tokenizer) but carry no loss: :meth:`collate` gives them labels
``-100`` throughout, so they add nothing to the loss or its gradient (their per-example loss is 0,
which DP-SGD clips and noises like any other example). Evaluation leaves them out of the loss and
reports ``dropped`` (test rows) and ``train_dropped`` (pool rows, counted once per process).
"""

from __future__ import annotations

from logging import WARNING
from typing import Any, ClassVar, Literal

import torch
from datasets import DatasetDict
from flwr.common.logger import log

from client.tasks._batching import attention_mask_for, chunks, eval_mode, model_device, pad_sequences, pad_token_id, to_device
from client.tasks.base import ModelKind, Task, TaskMetrics
from client.tasks.instruct import evaluation, prompting
from client.tasks.instruct.config import InstructConfig
from client.tasks.instruct.formats import FormatOptions, to_examples
from client.tasks.instruct.scoring import require_rouge
from client.tasks.instruct.sources import load_source
from client.tasks.instruct.splits import row_turns, split_examples, to_datasets
from client.tasks.registry import register_task
from contract import RunConfig


@register_task
class InstructionTuning(Task):
    """Instruction tuning on the user's data or reasoning-gym; ranked by the generation ``score``.

    Parameters
    ----------
    seed : int
        Seeds generation (reasoning-gym), the held-out split and the test order.
    max_length : int
        Tokens per example (prompt + response + EOS); prompts are cut from their start to fit.
    settings : InstructConfig, optional
        ``instruct.*``; defaults until :meth:`configure` receives the run config.
    """

    name: ClassVar[str] = "instruct"
    model_kind: ClassVar[ModelKind] = "causal-lm"
    label_column: ClassVar[str | None] = "label"
    main_metric: ClassVar[str] = "score"
    # LoRA on the attention and MLP projections (adapters.models.auto_target_modules)
    adapter_targets: ClassVar[Literal["attention", "attention-mlp"]] = "attention-mlp"
    config_section = InstructConfig
    summary = "instruction tuning of a causal LM (files, HF datasets, reasoning-gym); response-only loss, generation score"

    def __init__(self, *, seed: int, max_length: int, settings: InstructConfig | None = None) -> None:
        super().__init__(seed=seed, max_length=max_length)
        self.settings = settings if settings is not None else InstructConfig()
        self._templates: dict[int, str] = {}
        self._train_dropped: int | None = None
        self._pool: list[dict[str, Any]] = []
        self._warned_dropped = False
        require_rouge()

    def configure(self, config: RunConfig) -> None:
        """Read ``instruct.*``."""
        super().configure(config)
        self.settings = config.section(InstructConfig)

    # --- data ---------------------------------------------------------------------------------------

    def build_datasets(self) -> DatasetDict:
        """``train``/``test`` with columns ``turns``, ``response``, ``source``, ``entry``, ``label``."""
        s = self.settings
        options = FormatOptions(format=s.format, prompt_column=s.prompt_column, response_column=s.response_column,
                                label_column=s.label_column, system_prompt=s.system_prompt)
        parts = load_source(s.source, seed=self.seed, num_examples=s.num_examples, max_rows=s.max_rows)
        pool, test = split_examples([(p.split, to_examples(p, options)) for p in parts], seed=self.seed,
                                    test_fraction=s.test_fraction)
        datasets = to_datasets(pool, test)
        self._pool = datasets["train"].to_list()
        self._train_dropped = None
        return datasets

    def template(self, tokenizer: Any) -> str:
        """``chat`` or ``plain`` for this tokenizer (``instruct.template``)."""
        key = id(tokenizer)
        if key not in self._templates:
            self._templates[key] = prompting.resolve_template(tokenizer, self.settings.template)
        return self._templates[key]

    def encode(self, tokenizer: Any, row: dict[str, Any]) -> prompting.Encoded | None:
        """One row's ids and labels, or ``None`` when its response cannot fit (``prompting.encode``)."""
        return prompting.encode(tokenizer, row_turns(row), row["response"], template=self.template(tokenizer),
                                max_length=self.max_length)

    # --- training -----------------------------------------------------------------------------------

    def collate(self, tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``/``attention_mask`` of prompt + response + EOS and ``labels``
        (``-100`` on the prompt, on padding, and on every token of a row whose response cannot fit)."""
        ids, labels = [], []
        dropped = 0
        for row in rows:
            encoded = self.encode(tokenizer, row)
            if encoded is None:
                dropped += 1
                prompt = prompting.prompt_ids(tokenizer, row_turns(row), template=self.template(tokenizer))
                prompt = prompt[-self.max_length:]
                encoded = prompting.Encoded(input_ids=prompt, labels=[prompting.IGNORE_INDEX] * len(prompt))
            ids.append(encoded.input_ids)
            labels.append(encoded.labels)
        if dropped and not self._warned_dropped:
            log(WARNING, "instruct: %d of %d rows in a batch have a response longer than task.max-length = %d "
                "tokens allows; they carry no loss (raise task.max-length)", dropped, len(rows), self.max_length)
            self._warned_dropped = True
        return {
            "input_ids": pad_sequences(ids, value=pad_token_id(tokenizer)),
            "attention_mask": attention_mask_for(ids),
            "labels": pad_sequences(labels, value=prompting.IGNORE_INDEX),
        }

    def example_losses(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy over each example's response tokens, shape ``(B,)`` (0 for a
        row without any)."""
        sums, counts = evaluation.response_nll(model, batch)
        return sums / counts.clamp(min=1).to(sums.dtype)

    # --- evaluation ---------------------------------------------------------------------------------

    def _count_train_dropped(self, tokenizer: Any) -> int:
        if self._train_dropped is None:
            self._train_dropped = sum(1 for row in self._pool if self.encode(tokenizer, row) is None)
        return self._train_dropped

    def evaluate(self, model: torch.nn.Module, tokenizer: Any, rows: list[dict[str, Any]], *,
                 batch_size: int) -> TaskMetrics:
        """``loss``, ``perplexity``, ``dropped``, ``train_dropped`` and the generation scores
        (``score``, ``exact_match``, ``rouge_l``, ``score/<source>``) with a few ``samples``."""
        s = self.settings
        template = self.template(tokenizer)
        sums: list[float] = []
        counts: list[int] = []
        dropped = 0
        device = model_device(model)
        with eval_mode(model):
            for chunk in chunks(rows, batch_size):
                batch = self.collate(tokenizer, list(chunk))
                nll, n = evaluation.response_nll(model, to_device(batch, device))
                sums += nll.tolist()
                counts += [int(c) for c in n.tolist()]
            dropped = sum(1 for c in counts if c == 0)
            scored_rows = rows[: s.generate_examples] if s.generate_examples else rows
            prompts = [prompting.generation_prompt(tokenizer, row_turns(r), template=template,
                                                   max_length=self.max_length, max_new_tokens=s.max_new_tokens)
                       for r in scored_rows]
            texts = evaluation.generate(model, tokenizer, prompts, max_new_tokens=s.max_new_tokens,
                                        batch_size=batch_size)
        values = evaluation.loss_metrics(sums, counts, dropped)
        values["train_dropped"] = float(self._count_train_dropped(tokenizer))
        generation_values, scored = evaluation.score_rows(scored_rows, texts)
        values.update(generation_values)
        if not scored:
            values["score"] = float("nan")
        shown = [row_turns(r)[-1][1] for r in scored_rows[: s.samples]]
        samples = evaluation.sample_records(scored_rows, texts, scored, shown, s.samples)
        return TaskMetrics(values=values, num_examples=len(rows), samples=samples)
