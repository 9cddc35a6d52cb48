"""The base-delta part of the message contract: how changes to the frozen weights travel.

Strategies that change the frozen base (FedEx-LoRA folds the averaging residual into it, FLoRA
merges the stacked product) send each node the delta from the base version it holds to the
current one, in an ``ArrayRecord`` under :data:`BASE_DELTA`, with the versions in the config:

* ``base-version``: the version the node's base MUST be at after applying the delta;
* ``base-from-version``: the version the delta starts from (the node's current version).

Each module's delta is either dense, ``"<module>#D"``: ``(m, n)``, or exact factors,
``"<module>#U"``: ``(m, k)`` and ``"<module>#V"``: ``(k, n)`` with ``D = U V`` — whichever has fewer
elements (FedEx-LoRA §1.5 of algorithms.md). Always ``(m, n)`` orientation; the receiver transposes
for ``fan_in_fan_out`` layers. Nodes report the version they hold in their reply metrics.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

BASE_DELTA = "base-delta"
BASE_VERSION = "base-version"
BASE_FROM_VERSION = "base-from-version"

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


def decode_base_delta(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Unpack to dense ``(m, n)`` float32 deltas per module (factors are multiplied out in float64)."""
    forms: dict[str, dict[str, np.ndarray]] = {}
    for key in record.keys():
        module, sep, part = key.rpartition("#")
        if not sep or part not in ("D", "U", "V"):
            raise ValueError(f"base-delta key {key!r} is not '<module>#D', '#U' or '#V'")
        forms.setdefault(module, {})[part] = record[key].numpy()
    dense: dict[str, np.ndarray] = {}
    for module, parts in forms.items():
        if "D" in parts and len(parts) == 1:
            dense[module] = parts["D"].astype(np.float32)
        elif set(parts) == {"U", "V"}:
            dense[module] = (parts["U"].astype(np.float64) @ parts["V"].astype(np.float64)).astype(np.float32)
        else:
            raise ValueError(f"base-delta for {module} must be dense (#D) or factored (#U and #V), got {sorted(parts)}")
    return dense


def delta_elements(form: DeltaForm) -> int:
    """Number of values a delta costs on the wire."""
    if isinstance(form, tuple):
        return int(form[0].size + form[1].size)
    return int(form.size)
