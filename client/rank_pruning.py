"""The client side of HetLoRA's rank self-pruning (arXiv 2401.06432 §3.2; ``docs/algorithms.md §19``).

An instruction carrying a :class:`~contract.rank_pruning.PruneRule` makes the node own its rank:

- **The round's rank** is ``min(own, sent)``: ``own`` is the rank in the node's ``Context.state``
  (:data:`STATE_RANK`; before its first pruning, its configured rank), ``sent`` the rank of the payload.
  The server sends a node its rank as it last accepted it, so the two agree, except after the server
  dropped a reply that pruned (the node then truncates what it was sent to its own rank, in effective
  units) or after the node lost its state (it trains what it was sent).
- **Training** adds ``λ·Σ ‖B[:, k:]‖_F ‖A[k:]‖_F`` (:func:`tail_penalty`, ``k`` the rank it would
  prune to) to the loss.
- **After training** the tail norm is compared with the one this node stored after its previous round at
  the same rank: smaller, the reply carries the first ``k`` components (effective units,
  :func:`~contract.ranks.truncate_pair`) and ``k`` is the node's rank from then on; otherwise the
  new tail norm is stored. After a prune the first round at the new rank only records its tail.

The state is written only after the reply is built (:meth:`RankPruning.commit`), so a failed round
changes nothing. It lives in ``Context.state``, so a fresh ClientApp process (deployment) keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, RecordDict

from adapters.peft_model import ADAPTER, adapted_layers
from contract import CONFIG
from contract.rank_pruning import PruneRule
from contract.ranks import truncate_pair

STATE_RANK = "corolla.own-rank"
"""``Context.state`` ConfigRecord: ``rank`` (this node's rank) and, once observed, ``tail-rank`` and
``tail-norm`` (the tail norm after its latest round at ``tail-rank``)."""

Payload = dict[str, np.ndarray]
Layout = Mapping[str, Mapping[str, Any]]


def _pairs(layout: Layout) -> list[tuple[str, str]]:
    """Every LoRA module's ``(A key, B key)``."""
    return [(entry["a_key"], entry["b_key"]) for entry in layout.values() if "a_key" in entry and "b_key" in entry]


def tail_norm(arrays: Mapping[str, np.ndarray], layout: Layout, keep: int) -> float:
    """``Σ_modules ‖B[:, keep:]‖_F · ‖A[keep:]‖_F`` of a payload, in float64."""
    total = 0.0
    for a_key, b_key in _pairs(layout):
        a = np.asarray(arrays[a_key], dtype=np.float64)  # (r, n)
        b = np.asarray(arrays[b_key], dtype=np.float64)  # (m, r)
        total += float(np.linalg.norm(b[:, keep:]) * np.linalg.norm(a[keep:]))
    return total


def tail_penalty(model: Any, keep: int) -> torch.Tensor:
    """``Σ_modules ‖B[:, keep:]‖_F · ‖A[keep:]‖_F`` of ``model``'s LoRA factors, differentiable.

    The Frobenius norm's gradient at a zero tail (LoRA's fresh ``B``) is taken as zero by torch.
    """
    terms = []
    for name, layer in adapted_layers(model).items():
        a_layer, b_layer = layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]
        if not (isinstance(a_layer, torch.nn.Linear) and isinstance(b_layer, torch.nn.Linear)):
            raise ValueError(f"module {name}: rank self-pruning needs LoRA factors on linear layers")
        a, b = a_layer.weight, b_layer.weight  # A: (r, n), B: (m, r)
        terms.append(torch.linalg.vector_norm(b[:, keep:]) * torch.linalg.vector_norm(a[keep:]))
    if not terms:
        raise ValueError("rank self-pruning needs LoRA modules; the model has none")
    return torch.stack(terms).sum()


def _scale_alpha(layout: Layout, rank: int) -> float:
    """LoRA's ``α`` from the layout of a rank-``rank`` adapter (``scale = α / rank``)."""
    scales = {float(entry["scale"]) for entry in layout.values()}
    if len(scales) != 1:
        raise ValueError(f"rank self-pruning needs one LoRA scale for every module, got {sorted(scales)}")
    return scales.pop() * rank


def _truncate(arrays: Payload, layout: Layout, rank_from: int, rank_to: int, alpha: float) -> Payload:
    """The payload's LoRA pairs cut from ``rank_from`` to their first ``rank_to`` components (effective units)."""
    out = dict(arrays)
    for a_key, b_key in _pairs(layout):
        out[a_key], out[b_key] = truncate_pair(out[a_key], out[b_key], rank_to, alpha / rank_from, alpha / rank_to)
    return out


@dataclass
class RankPruning:
    """One message's pruning: the rule, this node's state, and the rank it settles on."""

    rule: PruneRule
    context: Context
    configured: int
    rank: int = 0  # the round's rank, set by :meth:`fit`; after :meth:`prune`, the reply's
    pruned: bool = False
    _update: dict[str, int | float] = field(default_factory=dict)

    @classmethod
    def of(cls, content: RecordDict, context: Context, *, configured: int) -> RankPruning | None:
        """The pruning an instruction asks for (``None``: its ``CONFIG`` carries no rule)."""
        rule = PruneRule.from_config(content[CONFIG])
        return None if rule is None else cls(rule=rule, context=context, configured=configured)

    def own_rank(self) -> int:
        """This node's rank: the stored one, else the configured one."""
        record = self.context.state.config_records.get(STATE_RANK)
        value = record.get("rank") if record is not None else None
        if value is None:
            return self.configured
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"this node's stored rank (`{STATE_RANK}`) is {value!r}, not a positive integer")
        return value

    def _tail_before(self) -> float | None:
        """The tail norm stored after the previous round at this rank (``None``: none yet)."""
        record = self.context.state.config_records.get(STATE_RANK)
        if record is None or record.get("tail-rank") != self.rank:
            return None
        value = record.get("tail-norm")
        return float(value) if isinstance(value, float) else None

    # --- before training ------------------------------------------------------------------------
    def fit(self, received: Payload, use_rank: Callable[[int], Layout]) -> Payload:
        """Settle the round's rank ``min(own, sent)``, give the model that rank (``use_rank`` returns the
        new layout) and return the payload at it."""
        own = self.own_rank()
        layout = use_rank(own)
        pairs = _pairs(layout)
        if not pairs:
            raise ValueError("rank self-pruning needs LoRA pairs (adapter.name = lora)")
        sent = int(received[pairs[0][0]].shape[0])  # A: (r_sent, n)
        self.rank = min(own, sent)
        if self.rank != own:
            layout = use_rank(self.rank)
        if self.rank < sent:  # the server still holds a rank this node pruned (its reply was dropped)
            received = _truncate(received, layout, sent, self.rank, _scale_alpha(layout, self.rank))
        return received

    def regulariser(self, model: Any) -> Callable[[], torch.Tensor] | None:
        """``λ·tail`` for the training loop (``None``: ``λ = 0`` or nothing left to prune)."""
        keep = self.rule.kept(self.rank)
        if self.rule.lam == 0.0 or keep >= self.rank:
            return None
        lam = self.rule.lam
        return lambda: lam * tail_penalty(model, keep)

    # --- after training -------------------------------------------------------------------------
    def prune(self, payload: Payload, layout: Layout) -> Payload:
        """Decide, from the trained payload, whether to prune; return the payload at the reply's rank."""
        keep = self.rule.kept(self.rank)
        if keep >= self.rank:  # at the floor: nothing to watch
            self._update = {"rank": self.rank}
            return payload
        tail = tail_norm(payload, layout, keep)
        before = self._tail_before()
        if before is not None and tail < before:
            alpha = _scale_alpha(layout, self.rank)
            payload = _truncate(payload, layout, self.rank, keep, alpha)
            self.rank, self.pruned = keep, True
            self._update = {"rank": keep}
        else:
            self._update = {"rank": self.rank, "tail-rank": self.rank, "tail-norm": tail}
        return payload

    def commit(self) -> None:
        """Write the node's rank (and tail norm) to ``Context.state``; call once the reply is built."""
        if self._update:
            self.context.state[STATE_RANK] = ConfigRecord(dict(self._update))
