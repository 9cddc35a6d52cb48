"""Auxiliary models for TokenSwap: the run's frozen base, a named checkpoint, or a bigram LM.

The auxiliary model must not have seen the clients' data (``docs/tasks.md §4``). In federated fine-tuning the
natural choice is the public base checkpoint every client starts from: ``tokenswap.aux-model =
"base"`` runs the global model with its adapter disabled (same tokenizer, KV cache; as large as the
main model). Any other name is built like ``model.name`` (``tiny-llama``, ``smollm2-135m``, a local
folder or HF id); when its vocabulary differs, the processor takes the re-tokenising path.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutput

from adapters.models import build_base_model
from client.tasks.tokenswap.processor import CausalLM


class AdapterDisabled:
    """Call a PEFT model with its adapter switched off: the frozen public base as auxiliary model."""

    def __init__(self, peft_model: torch.nn.Module) -> None:
        self.peft_model = peft_model

    @property
    def forward_owner(self) -> torch.nn.Module:
        """The HF model whose ``forward`` signature applies (see ``processor.cache_keyword``)."""
        get_base = getattr(self.peft_model, "get_base_model", None)
        return get_base() if get_base is not None else self.peft_model

    def __call__(self, **kwargs: Any) -> Any:
        disable = getattr(self.peft_model, "disable_adapter", None)
        with disable() if disable is not None else nullcontext():
            return self.peft_model(**kwargs)


class BigramLM(torch.nn.Module):
    """A count-based bigram LM (add-``smoothing``) with the HF causal-LM call signature.

    ``logits[b, t] = log p(next | input_ids[b, t])``; it never caches (the last token is all it reads).
    """

    table: torch.Tensor  # (V, V) log p(next | prev), a buffer

    def __init__(self, vocab_size: int, sequences: Sequence[Sequence[int]], *, smoothing: float = 0.01) -> None:
        super().__init__()
        counts = torch.full((vocab_size, vocab_size), smoothing, dtype=torch.float64)
        for seq in sequences:
            for prev, nxt in zip(seq[:-1], seq[1:]):
                counts[prev, nxt] += 1.0
        self.register_buffer("table", torch.log(counts / counts.sum(dim=1, keepdim=True)).float())  # (V, V)

    def forward(self, input_ids: torch.Tensor, **_: Any) -> CausalLMOutput:
        return CausalLMOutput(logits=self.table[input_ids])  # (B, T, V)


def load_aux(name: str, main_model: torch.nn.Module,
             main_tokenizer: PreTrainedTokenizerBase) -> tuple[CausalLM, PreTrainedTokenizerBase | None]:
    """``(aux_model, aux_tokenizer)`` for ``tokenswap.aux-model``; ``aux_tokenizer`` is ``None``
    when the vocabularies are identical (the fast, cached path)."""
    if name == "base":
        return AdapterDisabled(main_model), None
    try:
        base = build_base_model(name, kind="causal-lm")
    except (OSError, RuntimeError, ValueError) as exc:
        raise ValueError(
            f"`tokenswap.aux-model` = {name!r} could not be loaded ({exc}); use `base` (the run's frozen "
            "base model), `tiny-llama`, `smollm2-135m` or a local HF checkpoint folder"
        ) from exc
    same_vocab = base.tokenizer.get_vocab() == main_tokenizer.get_vocab()
    return base.model, None if same_vocab else base.tokenizer
