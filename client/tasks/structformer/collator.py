"""Flatten a document tree into tokens with roles, set global attention on headings, mask whole words.

StructFormer (arXiv 2411.16618 §3.2; ``docs/tasks.md §7``):

1. depth-first flattening: the title, then per section its heading, its paragraphs, its children;
   every token keeps the role of its word (title, heading, body, special);
2. ``global_attention_mask`` = 1 on heading/title tokens, by policy: ``all`` tokens of every heading
   (the paper), only the ``first`` token of each heading, or a ``marker`` token ``<sec>`` inserted
   before each heading (only the markers are global);
3. whole-word MLM: each maskable word is selected with probability ``mask_prob`` (0.15); a selected
   word's tokens are 80% ``<mask>``, 10% a random token, 10% unchanged (BERT §3.1, as the paper's
   script); ``never_mask_global`` keeps heading words unmasked; the word right after the slot cue
   (``[SLOT]``, synthetic slot documents) is always selected;
4. right padding to a multiple of the attention window (labels -100, global 0 on padding);
5. ``structure=False`` zeroes the global mask and changes nothing else: the same seed gives the same
   ``input_ids`` and ``labels`` (the paper's text-only ablation from the same data).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from client.tasks.structformer.docs import StructuredDoc

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SPECIAL, TITLE, HEADING, BODY = 0, 1, 2, 3  # token roles
MARKER = "<sec>"
GlobalPolicy = Literal["all", "first", "marker"]
FAR = 10**6  # heading distance of padding / of documents without a heading


@dataclass(frozen=True)
class CollatorSpec:
    """How documents become a batch (keys ``structformer.*``)."""

    structure: bool = True
    policy: GlobalPolicy = "all"
    mask_prob: float = 0.15
    never_mask_global: bool = False
    window: int = 16  # pad to a multiple of this (the model's attention window)
    max_length: int = 512  # tokens per document, specials included; the tail is dropped
    slot_token: str = "[SLOT]"

    def __post_init__(self) -> None:
        if self.policy not in ("all", "first", "marker"):
            raise ValueError(f"`structformer.global-policy` = {self.policy!r}: use `all`, `first` or `marker`")
        if not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"`structformer.mask-prob` = {self.mask_prob} must be in [0, 1]")


def flatten(doc: StructuredDoc, *, policy: GlobalPolicy = "all") -> list[tuple[str, int, int]]:
    """Depth-first ``(word, role, heading_group)``; heading words of one heading share a group id (>= 0),
    body words have group -1. The ``marker`` policy adds ``<sec>`` (role of the heading) first."""
    out: list[tuple[str, int, int]] = []
    groups = 0

    def heading(text: str, role: int) -> None:
        nonlocal groups
        words = text.split()
        if not words:
            return
        if policy == "marker":
            out.append((MARKER, role, groups))
        out.extend((w, role, groups) for w in words)
        groups += 1

    def walk(node: StructuredDoc, role: int) -> None:
        heading(node.heading, role)
        for paragraph in node.paragraphs:
            out.extend((w, BODY, -1) for w in paragraph.split())
        for child in node.children:
            walk(child, HEADING)

    walk(doc, TITLE)
    return out


def encode(tokenizer: PreTrainedTokenizerBase, doc: StructuredDoc, spec: CollatorSpec,
           rng: random.Random) -> dict[str, list[int]]:
    """One document: ``input_ids``, ``labels``, ``global`` (0/1), ``roles`` and ``slot`` (1 on the tokens
    of the word after the slot cue). The masking draws do not depend on ``spec.structure``."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    mask_id, vocab = tokenizer.mask_token_id, len(tokenizer)
    if mask_id is None:
        raise ValueError("structure MLM needs a tokenizer with a mask token (model.name = a masked LM)")
    ids, labels, glob, roles, slot = [bos], [-100], [0], [SPECIAL], [0]
    previous_group, previous_word = None, None
    for word, role, group in flatten(doc, policy=spec.policy):
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"] or [tokenizer.unk_token_id]
        if len(ids) + len(pieces) > spec.max_length - 1:
            break  # the tail is dropped (paper); one place is left for eos
        is_heading = role in (TITLE, HEADING)
        is_global = is_heading and (spec.policy == "all" or (spec.policy == "first" and previous_group != group)
                                    or (spec.policy == "marker" and word == MARKER))
        forced = previous_word == spec.slot_token
        maskable = word not in (MARKER, spec.slot_token) and not (spec.never_mask_global and is_heading)
        draw, how = rng.random(), rng.random()  # always two draws: the stream never depends on flags
        selected = maskable and (forced or draw < spec.mask_prob)
        for k, piece in enumerate(pieces):
            token = piece
            if selected:
                token = mask_id if how < 0.8 else (rng.randrange(vocab) if how < 0.9 else piece)
            ids.append(token)
            labels.append(piece if selected else -100)
            glob.append(int(spec.structure and (is_global if spec.policy != "first" else is_global and k == 0)))
            roles.append(role)
            slot.append(int(forced))
        previous_group, previous_word = group, word
    ids.append(eos)
    labels.append(-100)
    glob.append(0)
    roles.append(SPECIAL)
    slot.append(0)
    return {"input_ids": ids, "labels": labels, "global": glob, "roles": roles, "slot": slot}


def heading_distance(roles: list[int]) -> list[int]:
    """Per token, the distance (in tokens) to the nearest title/heading token (:data:`FAR` if none)."""
    where = [i for i, r in enumerate(roles) if r in (TITLE, HEADING)]
    out = []
    j = 0
    for i in range(len(roles)):
        while j + 1 < len(where) and abs(where[j + 1] - i) <= abs(where[j] - i):
            j += 1
        out.append(abs(where[j] - i) if where else FAR)
    return out


def collate(examples: list[dict[str, list[int]]], *, pad_id: int, window: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example rounded up to a multiple of ``window``; ``(B, T)`` tensors
    ``input_ids``, ``attention_mask``, ``global_attention_mask``, ``labels`` (-100 on padding),
    ``roles``, ``slot`` and ``heading_distance`` (:data:`FAR` on padding)."""
    longest = max((len(e["input_ids"]) for e in examples), default=0)
    width = -(-longest // window) * window if window > 0 else longest
    fill = {"input_ids": pad_id, "attention_mask": 0, "global_attention_mask": 0, "labels": -100,
            "roles": SPECIAL, "slot": 0, "heading_distance": FAR}
    out = {key: torch.full((len(examples), width), value, dtype=torch.long) for key, value in fill.items()}
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        out["input_ids"][i, :n] = torch.tensor(e["input_ids"])
        out["attention_mask"][i, :n] = 1
        out["global_attention_mask"][i, :n] = torch.tensor(e["global"])
        out["labels"][i, :n] = torch.tensor(e["labels"])
        out["roles"][i, :n] = torch.tensor(e["roles"])
        out["slot"][i, :n] = torch.tensor(e["slot"])
        out["heading_distance"][i, :n] = torch.tensor(heading_distance(e["roles"]))
    return out
