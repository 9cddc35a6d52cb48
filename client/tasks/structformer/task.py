"""``structformer``: federated structure-aware MLM pre-training on a Longformer-style model.

StructFormer (arXiv 2411.16618; ``docs/tasks.md §7``): documents are trees, flattened with global
attention on heading/title tokens (``structformer.structure = false`` is the text-only ablation on
the same data), masked whole-word, and trained with the MLM loss; LoRA adapts the local and global
query/key/value projections (``adapters.models.DEFAULT_TARGETS["longformer"]``). Clients are document
collections (IID shards: there is no label to skew by). Evaluation reports the ``docs/tasks.md §7`` metrics
(``client.tasks.structformer.metrics``).

Data: ``structformer.docs-path`` = a folder of ``.md``/``.tex``/``.json`` documents (sorted by name,
the last ``test-fraction`` held out), or the synthetic slot documents (``slots``) by default.
Batches are padded to a multiple of 16 tokens; HF Longformer pads further to its own window.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict

from client.tasks._batching import chunks, eval_mode, logits_of, model_device, to_device
from client.tasks.base import ModelKind, Task, TaskMetrics
from client.tasks.registry import register_task
from client.tasks.structformer import docs as documents
from client.tasks.structformer.collator import CollatorSpec, collate, encode
from client.tasks.structformer.config import StructFormerConfig
from client.tasks.structformer.metrics import heading_attention_mass, receptive_field, summarize
from client.tasks.structformer.slots import slot_split
from contract import RunConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PAD_MULTIPLE = 16  # tiny-longformer's window; larger windows are padded by the model itself
MODEL_KEYS = ("input_ids", "attention_mask", "global_attention_mask")
_READERS = {".md": documents.from_markdown, ".markdown": documents.from_markdown,
            ".tex": documents.from_latex, ".json": documents.from_json}


def load_documents(folder: str | Path) -> list[tuple[str, documents.StructuredDoc]]:
    """``(file name, tree)`` of every ``.md``/``.tex``/``.json`` file under ``folder``, sorted by path."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"`structformer.docs-path` = {str(folder)!r} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _READERS)
    if len(files) < 2:
        raise ValueError(f"`structformer.docs-path` = {str(folder)!r} holds {len(files)} .md/.tex/.json files; need >= 2")
    out = []
    for path in files:
        try:
            out.append((str(path), _READERS[path.suffix.lower()](path.read_text(encoding="utf-8"))))
        except Exception as exc:  # noqa: BLE001 - re-raised with the file named
            raise ValueError(f"{path}: cannot parse as {path.suffix} ({exc})") from exc
    return out


@register_task
class StructureMLM(Task):
    """Structure-aware masked-LM pre-training; settings in ``structformer.*``."""

    name: ClassVar[str] = "structformer"
    model_kind: ClassVar[ModelKind] = "masked-lm"
    label_column: ClassVar[str | None] = None
    main_metric: ClassVar[str] = "masked_accuracy"
    config_section = StructFormerConfig

    def __init__(self, *, seed: int, max_length: int, settings: StructFormerConfig | None = None) -> None:
        super().__init__(seed=seed, max_length=max_length)
        self._draws = 0
        self._use(settings if settings is not None else StructFormerConfig())

    def _use(self, settings: StructFormerConfig) -> None:
        self.settings = settings
        self.spec = CollatorSpec(structure=settings.structure, policy=settings.global_policy,
                                 mask_prob=settings.mask_prob, never_mask_global=settings.never_mask_global,
                                 window=PAD_MULTIPLE, max_length=self.max_length)

    def configure(self, config: RunConfig) -> None:
        """Read ``structformer.*``."""
        super().configure(config)
        self._use(config.section(StructFormerConfig))

    def build_datasets(self) -> DatasetDict:
        """``train``/``test`` with one column ``doc`` (the tree as JSON) and ``source``."""
        s = self.settings
        if s.docs_path:
            loaded = load_documents(s.docs_path)
            cut = min(len(loaded) - 1, max(1, round(len(loaded) * (1 - s.test_fraction))))
            splits = {"train": loaded[:cut], "test": loaded[cut:]}
        else:
            splits = {split: [(f"slot-{split}-{i}", d) for i, d in
                              enumerate(slot_split(self.seed, split, size, body_len=s.body_length))]
                      for split, size in (("train", s.num_train), ("test", s.num_test))}
        return DatasetDict({
            split: Dataset.from_dict({"doc": [json.dumps(d.to_dict()) for _, d in rows],
                                      "source": [name for name, _ in rows]})
            for split, rows in splits.items()
        })

    def collate(self, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *,
                rng: random.Random | None = None) -> dict[str, torch.Tensor]:
        """Encode and pad documents; each call draws fresh masks (seeded by ``seed`` and a call counter)
        unless ``rng`` is given. Extra keys (``roles``, ``slot``, ``heading_distance``) feed the metrics."""
        if rng is None:
            rng = random.Random(f"structformer:{self.seed}:{self._draws}")
            self._draws += 1
        examples = [encode(tokenizer, documents.from_json(row["doc"]), self.spec, rng) for row in rows]
        return collate(examples, pad_id=tokenizer.pad_token_id, window=self.spec.window)

    def example_losses(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-document mean cross-entropy over its masked tokens, shape ``(B,)`` (0 with none masked)."""
        batch = to_device(batch, model_device(model))
        logits = logits_of(model(**{k: batch[k] for k in MODEL_KEYS})).float()  # (B, T, V)
        token_loss = F.cross_entropy(logits.transpose(1, 2), batch["labels"], ignore_index=-100, reduction="none")
        counts = (batch["labels"] != -100).sum(dim=1)  # (B,)
        return token_loss.sum(dim=1) / counts.clamp(min=1)

    def evaluate(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *,
                 batch_size: int) -> TaskMetrics:
        """The ``docs/tasks.md §7`` metrics with masks drawn from a fixed seed (the same for every round and model)."""
        device, field = model_device(model), receptive_field(model)
        rng = random.Random(f"structformer-eval:{self.seed}")
        loss_sum, tokens = 0.0, 0
        correct, distance, slot, attention = [], [], [], []
        with eval_mode(model):
            for chunk in chunks(rows, batch_size):
                batch = self.collate(tokenizer, list(chunk), rng=rng)
                out = model(**{k: batch[k].to(device) for k in MODEL_KEYS}, output_attentions=True)
                logits = logits_of(out).float().cpu()  # (B, T, V)
                masked = batch["labels"] != -100  # (B, T)
                loss_sum += F.cross_entropy(logits[masked], batch["labels"][masked], reduction="sum").item()
                tokens += int(masked.sum())
                correct.append(logits.argmax(-1)[masked] == batch["labels"][masked])
                distance.append(batch["heading_distance"][masked])
                slot.append(batch["slot"][masked])
                queries = torch.nonzero(masked)  # (Q, 2) in row-major order, matching the [masked] picks
                attention.append(heading_attention_mass(tuple(a.cpu() for a in out.attentions),
                                                        batch["global_attention_mask"], batch["roles"], queries))
        cat = lambda parts: torch.cat(parts) if parts else torch.zeros(0)  # noqa: E731
        values = summarize(loss_sum, tokens, cat(correct), cat(distance), cat(slot), cat(attention), field=field)
        return TaskMetrics(values=values, num_examples=len(rows))

