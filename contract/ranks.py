"""Per-client LoRA ranks: which rank each client trains, known alike to the server and the client.

``adapter.ranks`` lists the ranks of a mixed-rank federation, assigned round-robin by partition id
(``"4,8,16,32"``: partition ``i`` trains ``ranks[i % 4]``); a deployed SuperNode may instead name its
own with the node-config key :data:`NODE_RANK_KEY` (one of the listed ranks). Empty: every client
trains ``adapter.rank``. The server asks every node for its rank once (:data:`RANK_QUERY`, metered
as set-up), sends each node its adapter at that rank, and every reply reports it again under
:data:`ADAPTER_RANK` (``docs/algorithms.md §18``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

ADAPTER_RANK = "adapter-rank"
"""Reply metric: the LoRA rank the replying client trains (and census reply)."""

NODE_RANK_KEY = "adapter-rank"
"""Node-config key (``flower-supernode --node-config 'adapter-rank=8'``): this node's rank in deployment."""

RANK_QUERY = "query.adapter_rank"
"""One-time message type: the server asks a node for its partition id and rank (the rank census)."""


def parse_ranks(value: str) -> tuple[int, ...]:
    """``"4,8,16,32"`` -> ``(4, 8, 16, 32)``; ``""`` -> ``()`` (every client trains ``adapter.rank``).

    Raises
    ------
    ValueError
        Naming the entry that is not a positive integer.
    """
    if not value.strip():
        return ()
    ranks = []
    for item in value.split(","):
        text = item.strip()
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"`adapter.ranks` entry {text!r} is not a positive integer; write e.g. \"4,8,16,32\"")
        ranks.append(int(text))
    return tuple(ranks)


def client_rank(ranks: tuple[int, ...], default: int, partition_id: int, node_config: Mapping[str, Any]) -> int:
    """The rank of the client with ``partition_id``: the node's own ``adapter-rank``, else round-robin.

    Raises
    ------
    ValueError
        A node-config rank that is not an integer, or not one of ``adapter.ranks``, or set while
        ``adapter.ranks`` is empty (the server would not expect it).
    """
    if NODE_RANK_KEY in node_config:
        value = node_config[NODE_RANK_KEY]
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
            raise ValueError(f"node config `{NODE_RANK_KEY}` = {value!r} is not a positive integer")
        rank = int(str(value).strip())
        if rank not in ranks:
            allowed = ",".join(map(str, ranks)) if ranks else "(empty: every client trains adapter.rank)"
            raise ValueError(
                f"node config `{NODE_RANK_KEY}` = {rank} is not among the run's `adapter.ranks` = {allowed}; "
                f"add it to adapter.ranks or change the node's {NODE_RANK_KEY}"
            )
        return rank
    if not ranks:
        return default
    return ranks[partition_id % len(ranks)]


def truncate_pair(
    a: np.ndarray, b: np.ndarray, rank: int, scale_from: float, scale_to: float
) -> tuple[np.ndarray, np.ndarray]:
    """A rank-``R`` adapter's first ``rank`` components as a rank-``rank`` adapter.

    ``A: (R, n)``, ``B: (m, R)`` -> ``A': (rank, n)``, ``B': (m, rank)`` with ``s_to B' A'`` equal to the
    first ``rank`` components of ``s_from B A``: ``A'`` rows are multiplied by ``s_from / s_to`` where
    ``B``'s column is non-zero; rows over an all-zero ``B`` column contribute nothing and are copied
    unscaled (a fresh LoRA ``A`` keeps PEFT's initial distribution). ``rank > R`` is refused.
    """
    r_big = a.shape[0]
    if not 1 <= rank <= r_big or b.shape[1] != r_big:
        raise ValueError(f"cannot truncate A {a.shape}, B {b.shape} to rank {rank}")
    live = np.any(b[:, :rank] != 0, axis=0)  # (rank,)
    factor = np.where(live, scale_from / scale_to, 1.0)  # (rank,)
    a_new = (a[:rank].astype(np.float64) * factor[:, None]).astype(a.dtype)  # (rank, n)
    return a_new, np.ascontiguousarray(b[:, :rank])  # (rank, n), (m, rank)
