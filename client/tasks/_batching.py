"""Small tensor/batching helpers shared by the built-in tasks (private to ``client.tasks``).

Tokenizers are used without mutating them: a missing pad token falls back to the EOS id locally,
and padding is done here (not by the tokenizer) so that either padding side works for any tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

T = TypeVar("T")


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's pad id, or its EOS id when it has no pad token.

    Raises
    ------
    ValueError
        If the tokenizer has neither a pad nor an EOS token.
    """
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    if pad is None:
        raise ValueError("tokenizer has neither a pad token nor an EOS token to pad with")
    return int(pad)


def pad_sequences(
    sequences: Sequence[Sequence[int]], *, value: int, side: Literal["left", "right"] = "right"
) -> torch.Tensor:
    """Pad integer sequences to the longest one; returns a ``(B, T)`` ``long`` tensor."""
    width = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        if not seq:
            continue
        row = torch.as_tensor(list(seq), dtype=torch.long)
        if side == "right":
            out[i, : len(seq)] = row
        else:
            out[i, width - len(seq) :] = row
    return out


def attention_mask_for(
    sequences: Sequence[Sequence[int]], *, side: Literal["left", "right"] = "right"
) -> torch.Tensor:
    """The ``(B, T)`` 0/1 mask matching :func:`pad_sequences` with the same ``side``."""
    return pad_sequences([[1] * len(s) for s in sequences], value=0, side=side)


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameter-less module)."""
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move every tensor of ``batch`` to ``device``."""
    return {key: value.to(device) for key, value in batch.items()}


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode under ``torch.no_grad``; restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def logits_of(output: object) -> torch.Tensor:
    """The logits of a HF model output (``ModelOutput``, dict or tuple whose first item is logits)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, dict):
        logits = output.get("logits")
    if logits is None and isinstance(output, (tuple, list)):
        logits = output[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model output of type {type(output).__name__} carries no logits")
    return logits


def generate_ids(model: torch.nn.Module, **kwargs: Any) -> torch.Tensor:
    """``model.generate(**kwargs)`` of a HF causal LM (or a PEFT model around one): the ``(B, T0 + new)`` ids.

    Raises
    ------
    TypeError
        If ``model`` cannot generate (not a causal LM), or returns something other than the ids.
    """
    generate = getattr(model, "generate", None)
    if not callable(generate):
        raise TypeError(f"{type(model).__name__} has no `generate`: decoding needs a causal-LM model")
    out = generate(**kwargs)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"`generate` returned a {type(out).__name__}, expected the ids tensor "
                        "(do not pass return_dict_in_generate)")
    return out
