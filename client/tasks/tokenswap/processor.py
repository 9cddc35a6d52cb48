"""``TokenSwapProcessor``: a batched, padding-aware HF ``LogitsProcessor`` (arXiv 2502.05159; ``docs/tasks.md §4``).

At every decoding step it turns the main model's raw logits into probabilities, runs the auxiliary
model on the same text, swaps the G probabilities (:func:`~client.tasks.tokenswap.swap.swap_distribution`)
and returns ``log(max(p, 1e-10))`` as the new scores.

Two auxiliary paths:

- **same tokenizer** (``aux_tokenizer=None``): the auxiliary model reads the main model's ids with
  the same attention mask and position ids, incrementally with its own KV cache (``use_cache``).
- **different tokenizers**: each row's unpadded ids are decoded with the main tokenizer and
  re-encoded with the auxiliary one, then left-padded into one batch and run without a cache
  (O(T^2) per sequence, but batched, unlike the reference library's batch-of-one path).

The processor is stateful (the prompt's attention mask, the auxiliary cache). :meth:`begin` resets
it and must be called before each ``generate``; :func:`generate_greedy` does both. HF ``generate``
appends custom processors after its own; greedy decoding adds none that change the argmax, so the
swap sees raw logits. With sampling, pass temperature/top-k as processors *after* this one.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, cast

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from client.tasks._batching import generate_ids, logits_of
from client.tasks.tokenswap.swap import SwapMode, swap_distribution
from client.tasks.tokenswap.words import FUNCTION_WORDS, aligned_token_sets

LOG_FLOOR = 1e-10  # the reference library clamps probabilities here before taking the log


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch, as HF ``generate`` computes them: ``(B, T)``."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


class CausalLM(Protocol):
    """What the processor calls: a HF causal LM, or a wrapper with its call (``aux.AdapterDisabled``)."""

    def __call__(self, **kwargs: Any) -> Any: ...


def cache_keyword(model: CausalLM) -> str:
    """The KV-cache argument of ``model``'s forward: ``cache`` (transformers >= 5.24; ``past_key_values``
    is deprecated there) or ``past_key_values``. A wrapper names its model in ``forward_owner``."""
    owner = getattr(model, "forward_owner", model)
    try:
        params = inspect.signature(getattr(owner, "forward", owner)).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def returned_cache(output: object) -> object:
    """The KV cache a forward returned (either attribute name), or ``None``."""
    cache = getattr(output, "past_key_values", None)
    return cache if cache is not None else getattr(output, "cache", None)


class TokenSwapProcessor(LogitsProcessor):
    """Replace the main model's probabilities on G by the auxiliary model's (module docstring).

    Parameters
    ----------
    aux_model : CausalLM
        Called as ``aux_model(input_ids=, attention_mask=, position_ids=, use_cache=)`` (plus the cache as
        ``cache=`` or ``past_key_values=``, per :func:`cache_keyword`), returning ``.logits``
        ``(B, T, V_aux)`` and, when it caches, the cache.
    main_tokenizer : tokenizer
        The main model's tokenizer (G ids; decoding in the different-tokenizer path).
    aux_tokenizer : tokenizer, optional
        The auxiliary model's tokenizer when it differs; ``None``: shared vocabulary.
    words : sequence of str
        The grammar words (default: :data:`FUNCTION_WORDS`).
    mode : {"mass-preserving", "naive"}
        The swap rule.
    use_cache : bool
        Same-tokenizer path only: feed the auxiliary model one new token per step with its KV cache.
    """

    def __init__(self, aux_model: CausalLM, main_tokenizer: PreTrainedTokenizerBase,
                 aux_tokenizer: PreTrainedTokenizerBase | None = None, *,
                 words: tuple[str, ...] = FUNCTION_WORDS, mode: SwapMode = "mass-preserving",
                 use_cache: bool = True) -> None:
        self.aux_model = aux_model
        self.main_tokenizer = main_tokenizer
        self.aux_tokenizer = aux_tokenizer
        self.mode = mode
        self.use_cache = use_cache and aux_tokenizer is None
        self.g_main, self.g_aux = aligned_token_sets(main_tokenizer, aux_tokenizer, words)
        self._prompt_mask: torch.Tensor | None = None
        self._cache: object = None  # the auxiliary model's KV cache, passed back as it came
        self._seen = 0

    def begin(self, attention_mask: torch.Tensor | None) -> None:
        """Reset all state for a new ``generate`` call on a prompt batch with ``attention_mask`` ``(B, T0)``
        (``None``: no padding)."""
        self._prompt_mask = None if attention_mask is None else attention_mask.detach().clone()
        self._cache = None
        self._seen = 0

    reset = begin

    def _mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Prompt mask extended with ones for the generated columns (HF does the same)."""
        b, t = input_ids.shape
        if self._prompt_mask is None:
            return torch.ones(b, t, dtype=torch.long, device=input_ids.device)
        prompt = self._prompt_mask.to(input_ids.device).long()
        if prompt.shape[0] != b or prompt.shape[1] > t:
            raise ValueError(f"TokenSwapProcessor.begin() got a mask {tuple(prompt.shape)} that does not fit "
                             f"input_ids {tuple(input_ids.shape)}; call begin() with this generate's mask")
        return torch.cat([prompt, prompt.new_ones(b, t - prompt.shape[1])], dim=1)

    def aux_probs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The auxiliary model's next-token distribution after ``input_ids``: ``(B, V_aux)``."""
        with torch.no_grad():
            if self.aux_tokenizer is not None:
                return self._aux_probs_retokenized(input_ids, self.aux_tokenizer)
            mask = self._mask(input_ids)
            positions = positions_from_mask(mask)
            incremental = self.use_cache and self._cache is not None and input_ids.shape[1] == self._seen + 1
            if incremental:
                out = self.aux_model(input_ids=input_ids[:, -1:], attention_mask=mask, position_ids=positions[:, -1:],
                                     use_cache=True, **{cache_keyword(self.aux_model): self._cache})
            else:
                out = self.aux_model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                     use_cache=self.use_cache)
            self._cache = returned_cache(out) if self.use_cache else None
            self._seen = input_ids.shape[1]
            return torch.softmax(logits_of(out)[:, -1, :].float(), dim=-1)

    def _aux_probs_retokenized(self, input_ids: torch.Tensor, aux_tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
        mask = self._mask(input_ids).bool()
        texts = [self.main_tokenizer.decode(row[m].tolist(), skip_special_tokens=True)
                 for row, m in zip(input_ids, mask)]
        encoded = [list(aux_tokenizer(text)["input_ids"]) for text in texts]
        pad = aux_tokenizer.pad_token_id
        pad = aux_tokenizer.eos_token_id if pad is None else pad
        width = max(1, max(len(e) for e in encoded))
        device = input_ids.device
        ids = torch.full((len(encoded), width), int(pad or 0), dtype=torch.long, device=device)
        aux_mask = torch.zeros_like(ids)
        for i, row in enumerate(encoded):
            if row:
                ids[i, width - len(row):] = torch.tensor(row, device=device)
                aux_mask[i, width - len(row):] = 1
        aux_mask[:, -1] = 1  # an empty text still gets one (pad) position to predict from
        out = self.aux_model(input_ids=ids, attention_mask=aux_mask, position_ids=positions_from_mask(aux_mask),
                             use_cache=False)
        return torch.softmax(logits_of(out)[:, -1, :].float(), dim=-1)

    def swapped_probs(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The swapped distribution ``(B, V_main)`` for raw main-model ``scores``."""
        p_main = torch.softmax(scores.float(), dim=-1)
        return swap_distribution(p_main, self.aux_probs(input_ids), self.g_main, self.g_aux, self.mode)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Processed scores: ``log(max(p_swapped, 1e-10))``, same shape and dtype as ``scores``."""
        processed = torch.log(self.swapped_probs(input_ids, scores).clamp_min(LOG_FLOOR)).to(scores.dtype)
        return cast(torch.FloatTensor, processed)  # HF's LogitsProcessor signature names the legacy tensor type


def generate_greedy(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                    pad_token_id: int, processor: TokenSwapProcessor | None = None) -> torch.Tensor:
    """Exactly ``max_new_tokens`` greedy continuation ids ``(B, max_new_tokens)``, plain or with
    TokenSwap (EOS is suppressed, as extraction compares fixed-length suffixes). Prompts must be
    left-padded; the caller provides eval mode and ``no_grad``."""
    processors = LogitsProcessorList()
    if processor is not None:
        processor.begin(attention_mask)
        processors.append(processor)
    out = generate_ids(model, input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                       min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_token_id,
                       logits_processor=processors)
    return out[:, input_ids.shape[1]:]
