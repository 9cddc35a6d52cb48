"""``guideq``: LoRA sequence classification + occlusion keyword lexica + guided-question evaluation.

The federated loop (``docs/tasks.md §6``):

1. clients train a LoRA classifier (PEFT SEQ_CLS; the head trains via ``modules_to_save``);
2. :meth:`GuidedClassification.client_report`: after training, each client explains up to
   ``guideq.explain-examples`` of its own rows with occlusion (only the ones it classifies right)
   and sends its per-label lexicon, every n-gram kept in at least ``guideq.min-count`` samples. The
   platform gives a client no held-out split, so these are training rows (upstream explains test
   rows); the report is outside DP-SGD's accounting when Opacus is on;
3. :meth:`GuidedClassification.merge_reports` (server) merges them (sum or max), keeps the top
   ``guideq.lexicon-size`` per label and broadcasts the global lexicon with the next round;
4. :meth:`GuidedClassification.apply_broadcast` installs it on every client and on the server's task;
   :meth:`GuidedClassification.evaluate` (central and federated) runs the guided-question metrics.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from client.tasks._batching import (
    attention_mask_for,
    chunks,
    eval_mode,
    logits_of,
    model_device,
    pad_sequences,
    pad_token_id,
    to_device,
)
from client.tasks.base import AdapterUpdate, ClientReport, ModelKind, ReportMerge, Task, TaskMetrics
from client.tasks.guideq import occlusion
from client.tasks.guideq.data import load_labelled_files, synthetic_spec, synthetic_split
from client.tasks.guideq.guided import guided_metrics
from client.tasks.guideq.questioning import (
    Answerer,
    ExtractiveQAAnswerer,
    LLMQuestioner,
    OverlapAnswerer,
    Questioner,
    TemplateQuestioner,
)
from client.tasks.guideq.config import GuideqConfig
from client.tasks.guideq.report import GuideqReport
from client.tasks.registry import register_task
from contract import ConfigError, RunConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


SHORT_TRAIN_TEXTS = 0.3  # synthetic training pool: share of first-half-only texts (data.synthetic_split)


@register_task
class GuidedClassification(Task):
    """GUIDEQ (arXiv 2411.05991) as a federated task; settings in ``guideq.*``
    (``client.tasks.guideq.config.GuideqConfig``; the run config's defaults until
    :meth:`configure`)."""

    name: ClassVar[str] = "guideq"
    model_kind: ClassVar[ModelKind] = "sequence-classification"
    label_column: ClassVar[str | None] = "label"
    main_metric: ClassVar[str] = "accuracy"
    report_schema = GuideqReport
    config_section = GuideqConfig
    summary = "GUIDEQ (arXiv 2411.05991): classification, keyword lexica from occlusion, guided questions"

    def __init__(self, *, seed: int, max_length: int, settings: GuideqConfig | None = None) -> None:
        super().__init__(seed=seed, max_length=max_length)
        self.lexicon: occlusion.Lexicon = {}
        self._questioners: dict[bool, Questioner] = {}
        self._answerer: Answerer | None = None
        self._files: tuple[tuple[str, ...], dict[str, list], dict[str, list]] | None = None
        self._use(settings if settings is not None else GuideqConfig())

    def _use(self, settings: GuideqConfig) -> None:
        self.settings = settings
        self._files = None
        if settings.train_file:
            self._files = load_labelled_files(settings.train_file, settings.test_file,
                                              text_column=settings.text_column, label_column=settings.label_column)
            self.label_names = self._files[0]
        else:
            self.label_names = synthetic_spec(settings.num_labels).labels

    def configure(self, config: RunConfig) -> None:
        """Read ``guideq.*`` (and load the user's files, which fix the label set)."""
        super().configure(config)
        self._use(config.section(GuideqConfig))

    @property
    def num_labels(self) -> int:
        """Number of classes (synthetic: ``guideq.num-labels``; files: distinct training labels)."""
        return len(self.label_names)

    # --- data and training ----------------------------------------------------------------------

    def build_datasets(self) -> DatasetDict:
        """``train``/``test`` with columns ``text``/``label`` (synthetic set or the user's files)."""
        s = self.settings
        if self._files is not None:
            train, test = self._files[1], self._files[2]
        else:
            train = synthetic_split(self.seed, "train", s.num_train, s.num_labels, p_short=SHORT_TRAIN_TEXTS)
            test = synthetic_split(self.seed, "test", s.num_test, s.num_labels)
        features = Features({"text": Value("string"), "label": ClassLabel(names=list(self.label_names))})
        return DatasetDict({"train": Dataset.from_dict(train, features=features),
                            "test": Dataset.from_dict(test, features=features)})

    def collate(self, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Tokenize ``text`` (truncated to ``max_length``), right-pad; adds ``labels``."""
        batch = self._encode(tokenizer, [row["text"] for row in rows])
        batch["labels"] = torch.tensor([int(row["label"]) for row in rows], dtype=torch.long)
        return batch

    def _encode(self, tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return {"input_ids": pad_sequences(encoded, value=pad_token_id(tokenizer)),
                "attention_mask": attention_mask_for(encoded)}

    def example_losses(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-example cross-entropy of the classification logits, shape ``(B,)``."""
        batch = to_device(batch, model_device(model))
        logits = logits_of(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
        return F.cross_entropy(logits.float(), batch["labels"], reduction="none")

    def predictor(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, *,
                  batch_size: int) -> occlusion.Predict:
        """``texts -> (N, K)`` class probabilities of ``model`` (eval mode, no grad, batched)."""
        device = model_device(model)

        def predict(texts: list[str]) -> np.ndarray:
            out = []
            with eval_mode(model):
                for chunk in chunks(texts, batch_size):
                    batch = to_device(self._encode(tokenizer, list(chunk)), device)
                    logits = logits_of(model(**batch)).float()  # (b, K)
                    out.append(torch.softmax(logits, dim=-1).cpu().numpy())
            return np.concatenate(out) if out else np.zeros((0, self.num_labels))

        return predict

    # --- hooks: explanations up, lexicon down ------------------------------------------------------

    @classmethod
    def privacy_gaps(cls, config: RunConfig) -> tuple[str, ...]:
        """The lexicon report quotes training texts verbatim: refused with DP (docs/privacy.md §8)."""
        if config.section(GuideqConfig).report and config.privacy.enabled:
            raise ConfigError(
                "invalid Corolla run config:\n  - `guideq.report` = true with `privacy.enabled` = true: each client's "
                "keyword lexicon is made of word n-grams copied from its training texts, sent outside DP-SGD and "
                "broadcast to every client, so ε would describe nothing; set `guideq.report = false` to train GUIDEQ "
                "with DP (docs/privacy.md §8)"
            )
        return ()


    def client_report(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *,
                      update: AdapterUpdate) -> dict[str, Any] | None:
        """Occlusion lexicon of this client's correctly classified rows (module docstring, step 2)."""
        s = self.settings
        if not s.report or not rows:
            return None
        picked = list(rows)
        random.Random(f"guideq-explain:{self.seed}:{len(rows)}").shuffle(picked)
        picked = picked[: s.explain_examples]
        mask = getattr(tokenizer, "mask_token", None) or getattr(tokenizer, "unk_token", None) or "[MASK]"
        explained = occlusion.explain(
            self.predictor(model, tokenizer, batch_size=64), [r["text"] for r in picked],
            [int(r["label"]) for r in picked], self.label_names, max_n=s.max_ngram, mode=s.occlusion, mask_token=mask,
        )
        lexicon = occlusion.aggregate(explained, how=s.aggregation)
        lexicon = occlusion.truncate(lexicon, top_n=10**9, min_count=s.min_count)  # min-count only
        return {"lexicon": occlusion.to_json(lexicon), "explained": len(explained), "examined": len(picked)}

    def merge_reports(self, server_round: int, reports: list[ClientReport], *,
                      sent: dict[str, np.ndarray]) -> ReportMerge:
        """Merge the clients' lexica, keep the top ``guideq.lexicon-size`` per label, broadcast it."""
        received = [r.report for r in reports if r.report and "lexicon" in r.report]
        if not received:
            return ReportMerge()
        how = self.settings.aggregation
        merged = occlusion.merge((occlusion.from_json(r["lexicon"]) for r in received), how=how)
        top = occlusion.truncate(merged, top_n=self.settings.lexicon_size)
        metrics = {
            "guideq_reports": float(len(received)),
            "guideq_explained": float(sum(int(r.get("explained", 0)) for r in received)),
            "guideq_lexicon_terms": float(sum(len(g) for g in top.values())),
        }
        return ReportMerge(broadcast={"lexicon": occlusion.to_json(top), "round": server_round},
                           metrics=metrics, detail={"merged": occlusion.to_json(merged)})

    def apply_broadcast(self, state: dict[str, Any]) -> None:
        """Install the server's global lexicon."""
        if "lexicon" in state:
            self.lexicon = occlusion.from_json(state["lexicon"])

    # --- guided evaluation --------------------------------------------------------------------------

    def _questioner(self, use_keywords: bool) -> Questioner:
        if use_keywords not in self._questioners:
            s = self.settings
            if s.questioner == "llm":
                from adapters.models import build_base_model

                base = build_base_model(s.questioner_model, kind="causal-lm")
                self._questioners[use_keywords] = LLMQuestioner(base.model, base.tokenizer,
                                                                use_keywords=use_keywords, seed=self.seed)
            else:
                self._questioners[use_keywords] = TemplateQuestioner(per_label=s.keywords_per_label,
                                                                     use_keywords=use_keywords)
        return self._questioners[use_keywords]

    def _answerer_for(self) -> Answerer:
        if self._answerer is None:
            if self.settings.answerer == "qa":
                from transformers import AutoModelForQuestionAnswering, AutoTokenizer

                path = self.settings.answerer_model
                self._answerer = ExtractiveQAAnswerer(AutoModelForQuestionAnswering.from_pretrained(path),
                                                      AutoTokenizer.from_pretrained(path))
            else:
                self._answerer = OverlapAnswerer()
        return self._answerer

    def evaluate(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *,
                 batch_size: int) -> TaskMetrics:
        """Full-text ``loss``/``accuracy`` plus ``f1_full``, ``f1_partial``, ``f1_guided``, ``f1_noKW``,
        ``delta_f1`` and ``top3_recall`` with the current global lexicon (empty before round 1's merge)."""
        n = len(rows)
        if not n:
            return TaskMetrics(values={"loss": float("nan"), "accuracy": float("nan")}, num_examples=0)
        predict = self.predictor(model, tokenizer, batch_size=batch_size)
        texts, labels = [r["text"] for r in rows], np.array([int(r["label"]) for r in rows])
        probs = predict(texts)  # (N, K)
        loss = float(-np.log(np.clip(probs[np.arange(n), labels], 1e-12, None)).mean())
        values = {"loss": loss, "accuracy": float((probs.argmax(axis=1) == labels).mean())}
        metrics, _ = guided_metrics(predict, texts, labels, self.label_names, self.lexicon,
                                    self._questioner(True), self._questioner(False), self._answerer_for(),
                                    turns=self.settings.turns)
        values.update(metrics)
        return TaskMetrics(values=values, num_examples=n)
