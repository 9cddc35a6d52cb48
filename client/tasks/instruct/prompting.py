"""Prompt + response -> token ids and labels, with the loss on the response only.

Prompt: the tokenizer's chat template (``apply_chat_template`` with ``add_generation_prompt``)
when ``instruct.template`` is ``chat``, or ``auto`` and the tokenizer has one; otherwise the plain
template below (Stanford Alpaca's instruction/response layout, Taori et al. 2023), with the
tokenizer's leading special tokens (e.g. BOS)::

    {system}\\n\\n                     (a system turn, if any)
    ### Instruction:\\n{user}\\n\\n     (each user turn)
    ### Response:\\n{assistant}\\n\\n   (each earlier assistant turn)
    ### Response:\\n                   (the generation prompt)

Response: its tokens (no special tokens added) followed by EOS. Prompt and response are tokenized
separately and concatenated, so the labels are ``-100`` on exactly the prompt tokens and the model
generates from exactly the training prompt.

Truncation (``task.max-length`` tokens per example): the response with its EOS is always kept
whole; the prompt loses tokens from its *start*, so it still ends with the turn header the
response follows. A row whose response + EOS leaves no room for one prompt token cannot be
trained on; :func:`encode` returns ``None`` for it and the task counts it as dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100
PLAIN_TURNS = {"system": "{}\n\n", "user": "### Instruction:\n{}\n\n", "assistant": "### Response:\n{}\n\n"}
PLAIN_GENERATION = "### Response:\n"

Turns = Sequence[tuple[str, str]]


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_template(tokenizer: Any, template: str) -> str:
    """``"chat"`` or ``"plain"`` for ``instruct.template`` on this tokenizer.

    Raises
    ------
    ValueError
        ``chat`` asked for a tokenizer without a chat template.
    """
    if template == "auto":
        return "chat" if has_chat_template(tokenizer) else "plain"
    if template == "chat" and not has_chat_template(tokenizer):
        raise ValueError("`instruct.template` = chat, but this model's tokenizer has no chat template; "
                         "use `plain` or `auto`")
    if template not in ("chat", "plain"):
        raise ValueError(f"`instruct.template` = {template!r}: use auto, chat or plain")
    return template


def plain_prompt(turns: Turns) -> str:
    """The plain-template text of the prompt ``turns`` (module docstring)."""
    return "".join(PLAIN_TURNS[role].format(content) for role, content in turns) + PLAIN_GENERATION


def _with_leading_specials(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` with the tokenizer's leading special tokens (BOS) but none after it."""
    full = list(tokenizer(text)["input_ids"])
    bare = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[: start + len(bare)]
    return bare


def prompt_ids(tokenizer: Any, turns: Turns, *, template: str) -> list[int]:
    """Token ids of the generation prompt for ``turns`` (``template``: ``chat`` or ``plain``)."""
    if template == "chat":
        messages = [{"role": role, "content": content} for role, content in turns]
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return [int(i) for i in encoded["input_ids"]]
    return _with_leading_specials(tokenizer, plain_prompt(turns))


def response_ids(tokenizer: Any, response: str) -> list[int]:
    """Token ids of ``response`` followed by EOS (when the tokenizer has one)."""
    ids = [int(i) for i in tokenizer(response, add_special_tokens=False)["input_ids"]]
    eos = getattr(tokenizer, "eos_token_id", None)
    return ids + ([int(eos)] if eos is not None else [])


@dataclass(frozen=True)
class Encoded:
    """One example's ``input_ids`` and ``labels`` (``-100`` on prompt tokens), equal lengths."""

    input_ids: list[int]
    labels: list[int]

    @property
    def response_tokens(self) -> int:
        """Tokens the loss is taken on."""
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def encode(tokenizer: Any, turns: Turns, response: str, *, template: str, max_length: int) -> Encoded | None:
    """Prompt + response + EOS truncated to ``max_length`` (module docstring), or ``None`` when the
    response cannot fit whole with at least one prompt token."""
    target = response_ids(tokenizer, response)
    budget = max_length - len(target)
    if budget < 1:
        return None
    prompt = prompt_ids(tokenizer, turns, template=template)[-budget:]
    return Encoded(input_ids=prompt + target, labels=[IGNORE_INDEX] * len(prompt) + target)


def generation_prompt(tokenizer: Any, turns: Turns, *, template: str, max_length: int, max_new_tokens: int) -> list[int]:
    """The prompt ids to generate from, cut from the start so that prompt + ``max_new_tokens``
    fit ``max_length`` (at least one prompt token is kept)."""
    ids = prompt_ids(tokenizer, turns, template=template)
    return ids[-max(1, max_length - max_new_tokens):]
