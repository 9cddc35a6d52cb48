"""The per-round exactness audit of the exact strategies: ``exact_rel_error`` (``docs/precision.md §4``).

After every round the server measures, from the replies it just aggregated, how far the new global
model's effective update is from the exact weighted mean of the clients' effective updates, per
adapted module, in float64::

    U*      = Σ_i p_i ΔW_i                          ΔW_i: client i's update of the module's weight
    U_new   = (E_new − E_old) + ΔW(new global)      E: the base change the server's model applies
    error   = ‖U_new − U*‖_F / ‖U*‖_F               exact_rel_error = max over modules

``ΔW`` of a payload relative to the arrays sent this round comes from the adapter kind
(``AdapterKind.factored_update``: LoRA ``s·B A``, Fed-SB ``s·B R A``, FFA ``s·B A`` with the frozen A,
ABBA's Hadamard product), so every exact strategy is measured the same way. ``E`` is read from the
server's own model (``BaseWeights.effective``): with ``model.base-delta = fold`` on a bf16 base it
is what the rounded weights apply, not the float32 delta the strategy meant, which is the failure
this audit exists to catch. The arrays are the ones the clients actually received and sent (after
the wire dtype's rounding, ``adapter.wire-dtype``).

The audit forms dense ``(m, n)`` matrices, ``K + 2`` per module: ``audit.exactness = auto`` runs it
only while the adapted weights total under :data:`AUTO_LIMIT` elements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from adapters.base_delta import BaseWeights
from adapters.kind_registry import get_adapter_kind
from contract import ARRAYS, METRICS, NUM_EXAMPLES
from contract.wire import decode_arrays, round_to_wire
from server.strategy_wrapper import StrategyWrapper
from server.wire_codec import WireCodec
from strategies.maths.averaging import aggregation_weights

EXACT_REL_ERROR = "exact_rel_error"
AUTO_LIMIT = 100_000_000
"""``audit.exactness = auto`` audits while ``Σ m·n`` over the adapted modules is below this (1e8
elements: the audit's dense float64 matrices then stay within a few GB)."""

Arrays = Mapping[str, np.ndarray]


def audit_wanted(setting: bool | str, adapted_elements: int) -> bool:
    """``audit.exactness``: ``true``/``false``, or ``auto`` (on below :data:`AUTO_LIMIT` elements)."""
    if isinstance(setting, bool):
        return setting
    return adapted_elements < AUTO_LIMIT


class ExactnessAudit:
    """Measures one round's ``exact_rel_error`` on the server's model (module docstring)."""

    def __init__(
        self, *, base: BaseWeights, layout: Mapping[str, Mapping[str, Any]], adapter_kind: str,
        frozen: Arrays, weighted: bool, base_deltas: Any,
    ) -> None:
        self.base = base
        self.layout = dict(layout)
        self.kind = get_adapter_kind(adapter_kind)
        self.frozen = dict(frozen)
        self.weighted = weighted
        self.base_deltas = base_deltas  # () -> the strategy's cumulative base delta (empty: none)
        self._effective = self._apply_current()

    def _apply_current(self) -> dict[str, np.ndarray]:
        self.base.set(self.base_deltas() or {})
        return self.base.effective()

    def _update(self, module: str, before: Arrays, after: Arrays) -> np.ndarray:
        left, right = self.kind.factored_update(module, self.layout[module], before, after, self.frozen)
        return np.asarray(left, dtype=np.float64) @ np.asarray(right, dtype=np.float64)  # (m, n)

    def measure(
        self, sent: Arrays, clients: Sequence[Arrays], num_examples: Sequence[int], new: Arrays
    ) -> tuple[float, dict[str, float]]:
        """``(max error, error per module)`` of one round: ``sent`` the global arrays clients received,
        ``clients`` their replies (decoded), ``new`` the global arrays the next round sends."""
        p = aggregation_weights(list(num_examples), self.weighted)  # (K,)
        effective = self._apply_current()
        errors: dict[str, float] = {}
        for module in self.layout:
            target = sum(pi * self._update(module, sent, c) for pi, c in zip(p, clients, strict=True))  # U*: (m, n)
            achieved = effective[module] - self._effective[module] + self._update(module, sent, new)  # (m, n)
            num, den = float(np.linalg.norm(achieved - target)), float(np.linalg.norm(target))
            errors[module] = 0.0 if num == 0.0 else (num / den if den > 0.0 else float("inf"))
        self._effective = effective
        return max(errors.values(), default=0.0), errors


class Audited(StrategyWrapper[WireCodec]):
    """Wrap the wire codec to run :class:`ExactnessAudit` after every aggregation (``audit`` None: off).

    Sits outside the codec, so it sees the arrays as the clients received them (rounded to the wire
    dtype) and the new global as it will be sent. ``round_metrics`` feeds the run recorder.
    """

    wraps = WireCodec

    def __init__(self, codec: WireCodec, audit: ExactnessAudit | None) -> None:
        super().__init__(codec)
        self.audit = audit
        self.round_metrics: dict[int, dict[str, float]] = {}
        self._sent: dict[int, dict[str, np.ndarray]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Delegate; remember the arrays as the clients receive them."""
        if self.audit is not None:
            received = {k: a.numpy() for k, a in arrays.items()}
            self._sent = {server_round: round_to_wire(received, self.inner.wire_dtype)}
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Delegate, then audit the aggregate against the accepted replies."""
        replies = list(replies)
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        sent = self._sent.pop(server_round, None)
        if self.audit is None or arrays is None or metrics is None or sent is None:
            return arrays, metrics
        dropped = {drop.node_id for drop in self.inner.inner.inner.last_dropped}
        accepted = [r for r in replies if r.has_content() and r.metadata.src_node_id not in dropped]
        if not accepted:
            return arrays, metrics
        # a key a client did not send (RoLoRA's and FedSVD's fixed half) is the one it received
        clients = [{**sent, **decode_arrays({k: a.numpy() for k, a in r.content.array_records[ARRAYS].items()}, self.inner.wire_dtype)}
                   for r in accepted]
        counts = [int(float(r.content.metric_records[METRICS][NUM_EXAMPLES])) for r in accepted]  # type: ignore[arg-type]  # a validated scalar metric
        try:
            error, per_module = self.audit.measure(sent, clients, counts, {**sent, **{k: a.numpy() for k, a in arrays.items()}})
        except (KeyError, ValueError) as exc:  # a measurement problem never ends a run: say so, go on
            log(WARNING, "round %d: exactness audit skipped: %s: %s", server_round, type(exc).__name__, exc)
            return arrays, metrics
        metrics[EXACT_REL_ERROR] = error
        self.round_metrics[server_round] = {EXACT_REL_ERROR: error}
        worst = max(per_module, key=per_module.__getitem__) if per_module else "-"
        log(INFO, "round %d: exact_rel_error %.3e (worst module %s)", server_round, error, worst)
        return arrays, metrics
