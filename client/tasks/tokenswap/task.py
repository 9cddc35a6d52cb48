"""``memorization``: a causal-LM task over text with planted canaries, measured plain and with TokenSwap.

Training text is :mod:`client.tasks.tokenswap.data`'s background sentences plus ``tokenswap.canaries``
canaries, each repeated ``tokenswap.canary-repeats`` times, shuffled into one pool (IID partitions
spread the copies over the clients). It needs a word- or subword-level model, e.g. the word-level
Llama of :func:`~client.tasks.tokenswap.wordlm.save_word_model` via ``model.name = <folder>``; on a
byte-level model G collapses to the space byte and TokenSwap is the identity (``words`` module).

- :meth:`shard_metrics` (federated evaluation, each client on its **own training shard**, ``docs/tasks.md §4``):
  ``tokenswap.eval-pairs`` (prefix, suffix) pairs, canaries first; greedy extraction plain and with
  TokenSwap; ``mem_plain_<m>``, ``mem_swap_<m>`` for every memorisation metric, ``mem_reduction_x``.
- :meth:`evaluate` (held-out text, central evaluation): ``loss``/``perplexity``/``token_accuracy`` of
  the model and ``swap_loss``/``swap_perplexity`` of the TokenSwap distribution (teacher forced).
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict, Features, Value

from client.tasks._batching import chunks, eval_mode, logits_of, model_device, pad_token_id, to_device
from client.tasks.base import ModelKind, Task, TaskMetrics
from client.tasks.registry import register_task
from client.tasks.tokenswap.aux import load_aux
from client.tasks.tokenswap.config import TokenSwapConfig
from client.tasks.tokenswap.data import background, make_canaries
from client.tasks.tokenswap.metrics import METRIC_NAMES, mean_metrics, reduction_factor
from client.tasks.tokenswap.processor import TokenSwapProcessor, generate_greedy, positions_from_mask
from client.tasks.tokenswap.swap import swap_distribution
from client.tasks.tokenswap.words import parse_words
from contract import RunConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@register_task
class Memorization(Task):
    """Canary memorisation and the TokenSwap defence (``tokenswap.*``; module docstring)."""

    name: ClassVar[str] = "memorization"
    model_kind: ClassVar[ModelKind] = "causal-lm"
    label_column: ClassVar[str | None] = None  # IID partitions only
    main_metric: ClassVar[str] = "token_accuracy"
    config_section = TokenSwapConfig

    def __init__(self, *, seed: int, max_length: int) -> None:
        super().__init__(seed=seed, max_length=max_length)
        self._processor: TokenSwapProcessor | None = None
        self._processor_for: int | None = None

    def configure(self, config: RunConfig) -> None:
        super().configure(config)
        ts = config.section(TokenSwapConfig)
        if config.data.partitioner != "iid":
            raise ValueError("task `memorization` has no label column: set `data.partitioner = \"iid\"`")
        if ts.prefix_tokens + ts.suffix_tokens >= config.task.max_length:
            raise ValueError(f"`tokenswap.prefix-tokens` + `tokenswap.suffix-tokens` must be below `task.max-length` "
                             f"({config.task.max_length})")

    @property
    def ts(self) -> TokenSwapConfig:
        if self.config is None:
            raise RuntimeError("task `memorization` must be configured (Task.configure) before use")
        return self.config.section(TokenSwapConfig)

    def build_datasets(self) -> DatasetDict:
        """``train``: background + repeated canaries (``text``, ``canary``: index or -1, ``control``);
        ``test``: held-out background."""
        ts = self.ts
        canaries = make_canaries(self.seed, count=ts.canaries, controls=ts.controls,
                                 length=ts.prefix_tokens + ts.suffix_tokens, suffix=ts.suffix_tokens)
        rows = [(text, -1, False) for text in background(self.seed, "train", ts.num_background)]
        rows += [(c.text, i, c.control) for i, c in enumerate(canaries)] * ts.canary_repeats
        random.Random(f"corolla-memorization:{self.seed}").shuffle(rows)
        features = Features({"text": Value("string"), "canary": Value("int32"), "control": Value("bool")})
        test = background(self.seed, "test", ts.num_test)
        return DatasetDict({
            "train": Dataset.from_dict({"text": [r[0] for r in rows], "canary": [r[1] for r in rows],
                                        "control": [r[2] for r in rows]}, features=features),
            "test": Dataset.from_dict({"text": test, "canary": [-1] * len(test), "control": [False] * len(test)},
                                      features=features),
        })

    def encode(self, tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
        """BOS (when the tokenizer has one) + the text's ids, at most ``max_length``."""
        bos = getattr(tokenizer, "bos_token_id", None)
        ids = ([int(bos)] if bos is not None else []) + list(tokenizer(text, add_special_tokens=False)["input_ids"])
        return ids[: self.max_length]

    def collate(self, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``/``attention_mask``; ``labels`` = ids, ``-100`` on padding."""
        ids = [self.encode(tokenizer, row["text"]) for row in rows]
        width = max(map(len, ids))
        pad = pad_token_id(tokenizer)
        input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in ids])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
        return {"input_ids": input_ids, "attention_mask": mask, "labels": input_ids.masked_fill(mask == 0, IGNORE_INDEX)}

    def example_losses(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy per example, shape ``(B,)``."""
        batch = to_device(batch, model_device(model))
        logits = logits_of(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))[:, :-1]
        targets = batch["labels"][:, 1:]
        losses = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        return losses.sum(dim=1) / (targets != IGNORE_INDEX).sum(dim=1).clamp(min=1)

    def processor(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> TokenSwapProcessor:
        """The TokenSwap processor for ``model`` (built once per model; the aux model is loaded then)."""
        if self._processor is None or self._processor_for != id(model):
            aux, aux_tokenizer = load_aux(self.ts.aux_model, model, tokenizer)
            self._processor = TokenSwapProcessor(aux, tokenizer, aux_tokenizer, words=parse_words(self.ts.words),
                                                 mode=self.ts.mode)
            self._processor_for = id(model)
        return self._processor

    def _swap_probs(self, processor: TokenSwapProcessor, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Teacher-forced swapped distributions ``(B, T, V)`` at every position."""
        p_main = torch.softmax(logits.float(), dim=-1)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if processor.aux_tokenizer is None:  # one aux pass over the whole batch
            out = processor.aux_model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask))
            p_aux = torch.softmax(logits_of(out).float(), dim=-1)
        else:  # re-tokenised: one aux call per prefix length
            columns = []
            for t in range(ids.shape[1]):
                processor.begin(mask[:, : t + 1])
                columns.append(processor.aux_probs(ids[:, : t + 1]))
            p_aux = torch.stack(columns, dim=1)
        return swap_distribution(p_main, p_aux, processor.g_main, processor.g_aux, processor.mode)

    def evaluate(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *,
                 batch_size: int) -> TaskMetrics:
        """Plain and swapped next-token loss/perplexity and plain token accuracy on ``rows``."""
        device = model_device(model)
        processor = self.processor(model, tokenizer)
        plain = swapped = 0.0
        correct = tokens = 0
        with eval_mode(model):
            for chunk in chunks(rows, batch_size):
                batch = to_device(self.collate(tokenizer, list(chunk)), device)
                logits = logits_of(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))
                targets = batch["labels"][:, 1:]
                keep = targets != IGNORE_INDEX
                step = logits[:, :-1]
                plain += F.cross_entropy(step[keep].float(), targets[keep], reduction="sum").item()
                p_swap = self._swap_probs(processor, logits, batch)[:, :-1]
                picked = p_swap.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                swapped += -torch.log(picked[keep].clamp_min(1e-10)).sum().item()
                correct += int((step.argmax(-1)[keep] == targets[keep]).sum())
                tokens += int(keep.sum())
        if not tokens:
            return TaskMetrics(values={"loss": float("nan"), "token_accuracy": float("nan")}, num_examples=len(rows))
        values = {"loss": plain / tokens, "swap_loss": swapped / tokens, "token_accuracy": correct / tokens}
        values["perplexity"], values["swap_perplexity"] = math.exp(values["loss"]), math.exp(values["swap_loss"])
        return TaskMetrics(values=values, num_examples=len(rows))

    def extraction_pairs(self, tokenizer: PreTrainedTokenizerBase,
                         rows: list[dict[str, Any]]) -> list[tuple[list[int], list[int]]]:
        """Up to ``eval-pairs`` distinct (prefix, suffix) id pairs from ``rows``: canaries (not controls) first."""
        ts = self.ts
        ordered = sorted(rows, key=lambda r: (r.get("canary", -1) < 0, bool(r.get("control", False))))
        pairs, seen = [], set()
        for row in ordered:
            ids = self.encode(tokenizer, row["text"])
            cut = len(ids) - ts.suffix_tokens  # the prompt ends where the last suffix-tokens begin
            if row["text"] in seen or cut < 1:
                continue
            seen.add(row["text"])
            pairs.append((ids[max(0, cut - ts.prefix_tokens - 1) : cut], ids[cut:]))
            if len(pairs) == ts.eval_pairs:
                break
        return pairs

    @classmethod
    def privacy_gaps(cls, config: RunConfig) -> tuple[str, ...]:
        """Federated evaluation measures extraction on each client's own training shard (docs/privacy.md §8)."""
        if config.fraction_evaluate <= 0:
            return ()
        return (
            "memorization: in federated evaluation (`fraction-evaluate` > 0) each client runs the extraction probe on "
            "its own training shard and reports the extraction rates, computed from its training rows without noise",
        )

    def shard_metrics(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], *,
                      batch_size: int) -> dict[str, float]:
        """Extraction from this client's own shard, plain and with TokenSwap (module docstring)."""
        pairs = self.extraction_pairs(tokenizer, rows)
        if not pairs:
            return {}
        processor = self.processor(model, tokenizer)
        pad = pad_token_id(tokenizer)
        device = model_device(model)
        out: dict[str, list[list[int]]] = {"plain": [], "swap": []}
        with eval_mode(model):
            for chunk in chunks(pairs, batch_size):
                width = max(len(p) for p, _ in chunk)
                ids = torch.tensor([[pad] * (width - len(p)) + p for p, _ in chunk], device=device)
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in chunk], device=device)
                for name, proc in (("plain", None), ("swap", processor)):
                    gen = generate_greedy(model, ids, mask, max_new_tokens=self.ts.suffix_tokens, pad_token_id=pad,
                                          processor=proc)
                    out[name] += gen.tolist()
        refs = [s for _, s in pairs]
        metrics: dict[str, float] = {"mem_pairs": float(len(pairs))}
        for name in ("plain", "swap"):
            values = mean_metrics(out[name], refs)
            metrics.update({f"mem_{name}_{m}": values[m] for m in METRIC_NAMES})
        metrics["mem_reduction_x"] = reduction_factor(metrics["mem_plain_exact_match"], metrics["mem_swap_exact_match"], len(pairs))
        return metrics
