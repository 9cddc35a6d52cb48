"""Parameters sent per client per round by each federated LoRA method (``algorithms.md`` §5).

Counts are numbers of parameters (multiply by bytes per element for traffic). ``Σ`` runs over the
adapted modules with shapes ``(m, n)`` (``nn.Linear`` orientation), ``M`` is their count, ``r`` the
rank, ``K`` the clients aggregated in the round and ``h`` the trained head (added both ways).

========  =====================  ==========================================  =======================
method    upload                 download                                    one-time download
========  =====================  ==========================================  =======================
full      Σ m·n                  Σ m·n                                       0
fedit     r·Σ(m+n)               r·Σ(m+n)                                    0
ffa       r·Σ m (B only)         r·Σ m                                       0 (A by seed), or r·Σ n
flora     r·Σ(m+n)               (Σ_i r_i)·Σ(m+n), = K·r·Σ(m+n)              0
fedex     r·Σ(m+n)               r·Σ(m+n) + Σ min(m·n, c·(m+n))              0
fedsb     M·r²                   M·r²                                        r·Σ(m+n) (B and A once)
========  =====================  ==========================================  =======================

FedEx-LoRA's residual goes dense or factored per module, whichever is smaller (§1.5), with ``c``
columns: ``(K−1)·r`` for our pivot form (:mod:`strategies.exact.fedex`), ``K·r`` for the centred
form (§1.5's count), ``(K+1)·r`` for the plainly stacked one, or ``r'`` for an (inexact) rank-``r'``
truncation. With the pivot form and factors cheaper than dense, FedEx costs exactly ``K·r·Σ(m+n)``,
the charge the Fed-SB paper uses (§1.8, §3.6). Fed-SB's optional gradient-estimation upload
(§3.4) is not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

Method = Literal["full", "fedit", "ffa", "flora", "fedex", "fedsb"]
ResidualCharge = Literal["pivot", "centred", "stacked", "dense"]
ALL_7 = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class CommCost(NamedTuple):
    """Parameters per client per round (upload, download) and once per run (one_time)."""

    upload: int
    download: int
    one_time: int


def comm_params(
    method: Method,
    shapes: Mapping[str, tuple[int, int]] | Iterable[tuple[int, int]],
    r: int,
    K: int = 1,  # noqa: N803 (the paper's symbol)
    head: int = 0,
    *,
    residual: ResidualCharge = "pivot",
    truncated_rank: int | None = None,
    client_ranks: Sequence[int] | None = None,
    ffa_a_by_seed: bool = True,
) -> CommCost:
    """Communication of ``method`` per client per round, in parameters (see the module table).

    Parameters
    ----------
    method : {"full", "fedit", "ffa", "flora", "fedex", "fedsb"}
        ``"fedit"`` is plain LoRA FedAvg.
    shapes : Mapping[str, (m, n)] or Iterable[(m, n)]
        The adapted modules.
    r : int
        LoRA rank (Fed-SB: the latent size).
    K : int (default: 1)
        Clients aggregated per round (FLoRA and FedEx-LoRA downloads grow with it).
    head : int (default: 0)
        Trained non-LoRA parameters (the task head), added to upload and download.
    residual : {"pivot", "centred", "stacked", "dense"} (default: "pivot")
        FedEx-LoRA residual form (see the module doc); "dense" always sends ``m·n``.
    truncated_rank : int, optional
        FedEx-LoRA with a rank-``r'`` truncated residual (inexact), overriding ``residual``.
    client_ranks : Sequence[int], optional
        FLoRA with mixed ranks: the ``r_i`` of the ``K`` stacked clients.
    ffa_a_by_seed : bool (default: True)
        FFA-LoRA: A is regenerated from a shared seed (no cost) rather than broadcast once.
    """
    dims = list(shapes.values() if isinstance(shapes, Mapping) else shapes)
    if not dims or any(m <= 0 or n <= 0 for m, n in dims):
        raise ValueError(f"need at least one module with positive (m, n), got {dims[:3]}...")
    if r <= 0 or K <= 0 or head < 0:
        raise ValueError(f"need r > 0, K > 0, head >= 0; got r={r}, K={K}, head={head}")
    sum_mn = sum(m * n for m, n in dims)
    sum_m = sum(m for m, _ in dims)
    sum_n = sum(n for _, n in dims)
    lora = r * (sum_m + sum_n)
    if method == "full":
        up = down = sum_mn
        once = 0
    elif method == "fedit":
        up = down = lora
        once = 0
    elif method == "ffa":
        up = down = r * sum_m
        once = 0 if ffa_a_by_seed else r * sum_n
    elif method == "flora":
        ranks = list(client_ranks) if client_ranks is not None else [r] * K
        up, down, once = lora, sum(ranks) * (sum_m + sum_n), 0
    elif method == "fedex":
        up, once = lora, 0
        down = lora + sum(_residual_elements(m, n, r, K, residual, truncated_rank) for m, n in dims)
    elif method == "fedsb":
        up = down = len(dims) * r * r
        once = lora
    else:
        known = ", ".join(Method.__args__)  # type: ignore[attr-defined]
        raise ValueError(f"unknown method {method!r}; expected one of {known}")
    return CommCost(up + head, down + head, once)


def _residual_elements(
    m: int, n: int, r: int, k: int, form: ResidualCharge, truncated_rank: int | None
) -> int:
    if truncated_rank is not None:
        return min(m * n, truncated_rank * (m + n))
    columns = {"pivot": (k - 1) * r, "centred": k * r, "stacked": (k + 1) * r}.get(form)
    if form == "dense":
        return m * n
    if columns is None:
        raise ValueError(f"residual must be pivot, centred, stacked or dense, got {form!r}")
    return min(m * n, columns * (m + n))


def hf_module_shapes(
    config: Mapping[str, Any], targets: Sequence[str] = ALL_7
) -> dict[str, tuple[int, int]]:
    """``{"layers.{l}.{target}": (m, n)}`` for a Llama/Mistral/Gemma-style HF ``config.json``.

    Uses ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim`` (default
    ``hidden_size / num_attention_heads``), ``intermediate_size`` and ``num_hidden_layers``.
    """
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    inter = int(config["intermediate_size"])
    per_layer = {
        "q_proj": (heads * head_dim, hidden),
        "k_proj": (kv_heads * head_dim, hidden),
        "v_proj": (kv_heads * head_dim, hidden),
        "o_proj": (hidden, heads * head_dim),
        "gate_proj": (inter, hidden),
        "up_proj": (inter, hidden),
        "down_proj": (hidden, inter),
    }
    unknown = [t for t in targets if t not in per_layer]
    if unknown:
        raise ValueError(f"unknown target modules {unknown}; known: {list(per_layer)}")
    return {
        f"layers.{layer}.{t}": per_layer[t]
        for layer in range(int(config["num_hidden_layers"]))
        for t in targets
    }
