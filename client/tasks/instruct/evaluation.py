"""Evaluating the instruct task: response-token loss and perplexity, then generation scores.

* ``loss``: the mean over examples of each example's mean next-token cross-entropy on its response
  tokens (what training minimises); ``perplexity``: ``exp`` of the token-weighted mean of the same
  cross-entropy over every response token of the split. Rows whose response cannot fit
  ``task.max-length`` are left out of both and counted in ``dropped``.
* Generation: the first ``instruct.generate-examples`` rows are greedily decoded in batches
  (``eval.batch-size``) with LEFT padding, so every continuation starts at the same column, for at
  most ``instruct.max-new-tokens`` tokens (stopping at EOS), and scored by
  :mod:`client.tasks.instruct.scoring`: ``score``, ``exact_match``, ``rouge_l``, and
  ``score/<source>`` per source.
* ``samples``: the first ``instruct.samples`` generations with their prompts and references (the
  server writes them to ``samples/round-<N>.jsonl`` in the run folder).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from client.tasks._batching import (
    attention_mask_for,
    generate_ids,
    logits_of,
    model_device,
    pad_sequences,
    pad_token_id,
    to_device,
)
from client.tasks.instruct.prompting import IGNORE_INDEX
from client.tasks.instruct.scoring import Scored, score_generation


def response_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: the summed next-token NLL over its response tokens and their count, both ``(B,)``.

    Only the logits at response positions are upcast and scored, so memory stays
    ``O(#response tokens x vocab)`` rather than ``O(B x T x vocab)`` in float32."""
    batch = to_device(batch, model_device(model))
    logits = logits_of(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]))  # (B, T, V)
    targets = batch["labels"][:, 1:]  # (B, T-1): token t+1 is predicted at position t
    mask = targets != IGNORE_INDEX
    token_nll = F.cross_entropy(logits[:, :-1][mask].float(), targets[mask], reduction="none")  # (#response,)
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)[mask]
    sums = torch.zeros(targets.shape[0], dtype=token_nll.dtype, device=token_nll.device).index_add(0, rows, token_nll)
    return sums, mask.sum(dim=1)


def generate(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[list[int]], *,
             max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy continuations of ``prompts`` (token ids), decoded without special tokens.

    The caller provides eval mode and ``no_grad``."""
    pad = pad_token_id(tokenizer)
    eos = getattr(tokenizer, "eos_token_id", None)
    device = model_device(model)
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        input_ids = pad_sequences(chunk, value=pad, side="left").to(device)  # (b, P)
        attention_mask = attention_mask_for(chunk, side="left").to(device)
        out = generate_ids(model, input_ids=input_ids, attention_mask=attention_mask,
                           max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=eos)
        texts += tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)  # (b, <= new)
    return texts


def loss_metrics(nll_sums: Sequence[float], counts: Sequence[int], dropped: int) -> dict[str, float]:
    """``loss``, ``perplexity`` and ``dropped`` from per-example NLL sums and response token counts."""
    kept = [(s, c) for s, c in zip(nll_sums, counts, strict=True) if c > 0]
    if not kept:
        return {"loss": float("nan"), "perplexity": float("nan"), "dropped": float(dropped)}
    loss = sum(s / c for s, c in kept) / len(kept)
    token_mean = sum(s for s, _ in kept) / sum(c for _, c in kept)
    return {"loss": loss, "perplexity": math.exp(min(token_mean, 700.0)), "dropped": float(dropped)}


def score_rows(rows: Sequence[dict[str, Any]], generations: Sequence[str]) -> tuple[dict[str, float], list[Scored]]:
    """Generation metrics of ``rows`` (``response``, ``source``, ``entry``) given their generations."""
    scored = [score_generation(text, reference=row["response"], source=row["source"], entry=row["entry"])
              for row, text in zip(rows, generations, strict=True)]
    if not scored:
        return {}, []
    n = len(scored)
    values = {"score": sum(s.score for s in scored) / n,
              "exact_match": sum(s.exact_match for s in scored) / n,
              "rouge_l": sum(s.rouge_l for s in scored) / n}
    per_source: dict[str, list[float]] = defaultdict(list)
    for row, s in zip(rows, scored, strict=True):
        per_source[row["source"]].append(s.score)
    values.update({f"score/{name}": sum(v) / len(v) for name, v in sorted(per_source.items())})
    return values, scored


def sample_records(rows: Sequence[dict[str, Any]], generations: Sequence[str], scored: Sequence[Scored],
                   prompts: Sequence[str], limit: int) -> tuple[dict[str, Any], ...]:
    """The first ``limit`` generations as JSON-able records."""
    return tuple(
        {"source": row["source"], "prompt": prompt, "reference": row["response"], "generation": text,
         "answer": s.answer, "score": s.score}
        for row, text, s, prompt in zip(rows[:limit], generations[:limit], scored[:limit], prompts[:limit], strict=True)
    )
