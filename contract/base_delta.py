"""The base-delta part of the message contract: how changes to the frozen weights travel.

Strategies that change the frozen base (FedEx-LoRA folds the averaging residual into it, FLoRA
merges the stacked product) send each node the delta from the base version it holds to the
current one, in an ``ArrayRecord`` under :data:`BASE_DELTA`, with the versions in the config:

* ``base-version``: the version the node's base MUST be at after applying the delta;
* ``base-from-version``: the version the delta starts from (the node's current version).

Every node holds, per module, the *canonical* base delta ``C_v`` of its version, defined by one
recurrence over the rounds' folded residuals ``R_t``::

    C_0 = 0,   C_t = float32(float64(C_{t-1}) + float64(R_t))     (:func:`canonical_step`)

(``R_t = U_t V_t`` multiplied in float64 when factored). The server keeps ``C_T`` with the same
function, so every node, whatever rounds it skipped, and a run resumed from a checkpoint, hold the
same base bit for bit. Each module's delta is either

* factored, ``"<module>#U"``: ``(m, k)`` and ``"<module>#V"``: ``(k, n)``: the factors of rounds
  ``from+1..version`` side by side, with each round's column count in the config's
  :data:`BASE_SPLITS` (JSON ``{module: [k_t, ...]}``); the node applies them round by round; or
* dense, ``"<module>#D"``: ``(m, n)``: ``C_version`` itself (absolute, not an increment),

whichever has fewer elements (``docs/algorithms.md §4.3``, §5.2). Always ``(m, n)`` orientation; the
receiver transposes for ``fan_in_fan_out`` layers. Nodes report the version they hold in their reply
metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord

BASE_DELTA = "base-delta"
BASE_VERSION = "base-version"
BASE_FROM_VERSION = "base-from-version"
BASE_SPLITS = "base-splits"  # config: JSON {module: [columns of each round, ...]} of the factored modules

DeltaForm = np.ndarray | tuple[np.ndarray, np.ndarray]  # dense (m, n) or factors (U: (m, k), V: (k, n))


def encode_base_delta(deltas: Mapping[str, DeltaForm]) -> ArrayRecord:
    """Pack per-module deltas (dense or ``(U, V)``) into an ``ArrayRecord``, float32, sorted keys."""
    arrays: dict[str, Array] = {}
    for module in sorted(deltas):
        form = deltas[module]
        if isinstance(form, tuple):
            u, v = form  # U: (m, k), V: (k, n)
            if u.ndim != 2 or v.ndim != 2 or u.shape[1] != v.shape[0]:
                raise ValueError(f"factored delta for {module}: U {u.shape} and V {v.shape} do not chain")
            arrays[f"{module}#U"] = Array(np.ascontiguousarray(u, dtype=np.float32))
            arrays[f"{module}#V"] = Array(np.ascontiguousarray(v, dtype=np.float32))
        else:
            arrays[f"{module}#D"] = Array(np.ascontiguousarray(form, dtype=np.float32))
    return ArrayRecord(arrays)


def canonical_step(total: np.ndarray, u: np.ndarray, v: np.ndarray | None = None) -> np.ndarray:
    """One round of the canonical recurrence: ``float32(float64(total) + float64(U) @ float64(V))``,
    or ``+ float64(D)`` when ``v`` is ``None`` (``u`` is then the dense ``(m, n)`` residual)."""
    step = u.astype(np.float64) if v is None else u.astype(np.float64) @ v.astype(np.float64)  # (m, n)
    return (total.astype(np.float64) + step).astype(np.float32)


def encode_splits(splits: Mapping[str, Sequence[int]]) -> str:
    """The :data:`BASE_SPLITS` config value."""
    return json.dumps({module: [int(k) for k in ks] for module, ks in sorted(splits.items())})


def advance_base(
    held: Mapping[str, np.ndarray], record: ArrayRecord, splits_json: str | None
) -> dict[str, np.ndarray]:
    """Apply a base-delta record to the canonical deltas ``held`` (float32 ``(m, n)`` per module; a
    missing module is ``C = 0``). Returns the new canonical deltas of every module in the record.

    Raises
    ------
    ValueError
        Keys that are not ``#D``/``#U``/``#V``, or factors whose splits do not add up.
    """
    forms: dict[str, dict[str, np.ndarray]] = {}
    for key in record.keys():
        module, sep, part = key.rpartition("#")
        if not sep or part not in ("D", "U", "V"):
            raise ValueError(f"base-delta key {key!r} is not '<module>#D', '#U' or '#V'")
        forms.setdefault(module, {})[part] = record[key].numpy()
    splits = json.loads(splits_json) if splits_json else {}
    out: dict[str, np.ndarray] = {}
    for module, parts in forms.items():
        if "D" in parts and len(parts) == 1:
            out[module] = parts["D"].astype(np.float32)  # C_version itself
            continue
        if set(parts) != {"U", "V"}:
            raise ValueError(f"base-delta for {module} must be dense (#D) or factored (#U and #V), got {sorted(parts)}")
        u, v = parts["U"], parts["V"]  # U: (m, k), V: (k, n)
        ks = [int(k) for k in splits.get(module, [u.shape[1]])]
        if sum(ks) != u.shape[1] or u.shape[1] != v.shape[0]:
            raise ValueError(f"base-delta for {module}: splits {ks} do not add up to the {u.shape[1]} factor columns")
        total = held.get(module)
        if total is None:
            total = np.zeros((u.shape[0], v.shape[1]), dtype=np.float32)
        start = 0
        for k in ks:  # round by round, exactly as the server's log
            total = canonical_step(total, u[:, start : start + k], v[start : start + k, :])
            start += k
        out[module] = total
    return out

