"""``corolla comm``: analytic communication of each federated LoRA strategy, per round and per run.

The adapted module shapes come from the real Hugging Face architecture (:mod:`simulations.comm_shapes`), built from its ``config.json``
on PyTorch's ``meta`` device (no weights, no memory, no download); the per-client counts come from
:func:`comm_params`: each registered strategy's own formula (``StrategyInfo.comm``, the formulas of
``docs/communication.md §2``), plus the full fine-tuning baseline ``full``.

What the columns mean (all counts are parameters; bytes = parameters x ``bytes_per_param``):

- ``upload`` / ``download``: what **one** client sends / receives in **one** round. The download per
  client per round is the x-axis of the Fed-SB paper's communication figure (arXiv 2502.15436;
  ``docs/communication.md §5``): FLoRA and FedEx-LoRA are charged all ``K`` clients' factors, ``K·r·Σ(m+n)`` (FedEx's
  residual per module is capped at the dense ``m·n`` when that is smaller, ``docs/communication.md §3``, so at large ``K`` it
  drops below FLoRA).
- ``one_time``: what one client downloads once per run: Fed-SB's frozen ``B`` and ``A``,
  ``r·Σ(m+n)`` at the Fed-SB rank (``docs/communication.md §4``); FFA-LoRA's ``A`` only when it is broadcast rather than
  regenerated from a seed.
- ``round_total = K·(upload + download)``: everything crossing the server in one round.
- ``run_total = rounds·round_total + K·one_time``.
- ``download_vs_fedit``: ``download`` divided by FedIT's at ``--rank`` (the paper's 9.2x / 230x).

``secagg`` (bytes, linear strategies only): what one client sends and receives in one round with
``secagg.enabled = true`` (:mod:`simulations.comm_secagg`): the unchanged download plus the four
SecAgg+ stages, whose masked vector replaces the upload (``ceil(m/8)`` bytes per entry for the ring
``Z_{2^m}`` that ``K`` clients need; ``docs/communication.md §8``).

Not counted: a trained head (none for causal LMs), Fed-SB's one-time gradient-estimation upload
(``docs/communication.md §4``), the fresh adapter Corolla's FLoRA server draws each round, and message framing overhead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from contract.secagg import SecAggConfig
from simulations.comm_secagg import SecAggCost, secagg_cost
from simulations.comm_shapes import (  # noqa: F401 - hf_module_shapes, module_shapes_from_config: re-exported
    ALL_7,
    PRESETS,
    CommError,
    build_meta_model,
    hf_module_shapes,
    linear_shapes,
    load_config,
    module_shapes_from_config,
    resolve_config_path,
)
from strategies import registered_strategies, strategy_info, strategy_names
from strategies.comm_cost import CommCost, CommInputs

FULL = "full"  # FedAvg of every adapted weight: the baseline row, not a strategy
DEFAULT_STRATEGIES = ("fedit", "ffa", "fedex", "flora", "fedsb")
BASELINE_RANK = 32  # the Fed-SB paper's baselines (FedIT, FFA, FLoRA, FedEx-LoRA) use r = 32, docs/communication.md §5
FEDSB_RANK = 200  # Fed-SB's largest rank in the paper's figures (120 / 160 / 200), docs/communication.md §5
PAPER_CLIENTS = 25  # arithmetic setup: Mistral-7B and Gemma-2 9B with 25 clients, docs/communication.md §5


StrategyOptions = Mapping[str, Mapping[str, Any]]
"""Strategy name -> keyword options of its formula, e.g. ``{"ffa": {"a_by_seed": False}}``."""


def methods() -> tuple[str, ...]:
    """Every name :func:`comm_params` prices: ``full`` and the registered strategies."""
    return (FULL, *strategy_names())


def full_comm(inputs: CommInputs) -> CommCost:
    """Full fine-tuning: every adapted weight, ``Σ m·n``, each way (``docs/communication.md §2``)."""
    return CommCost(inputs.sum_mn, inputs.sum_mn, 0)


def comm_params(
    method: str,
    shapes: Mapping[str, tuple[int, int]] | Iterable[tuple[int, int]],
    r: int,
    K: int = 1,  # noqa: N803 (the paper's symbol)
    head: int = 0,
    *,
    options: StrategyOptions | None = None,
    **method_options: Any,
) -> CommCost:
    """Parameters one client sends and receives per round, and once per run, under ``method``.

    Parameters
    ----------
    method : str
        ``"full"`` or a registered strategy name (its ``StrategyInfo.comm`` formula).
    shapes : Mapping[str, (m, n)] or Iterable[(m, n)]
        The adapted modules.
    r : int
        The rank (Fed-SB: the latent size).
    K : int (default: 1)
        Clients aggregated per round.
    head : int (default: 0)
        Trained non-adapter parameters (a task head), added to upload and download.
    options : StrategyOptions, optional
        Per-strategy formula options; only ``options[method]`` is used (one mapping serves a table).
    **method_options
        Options of ``method``'s formula itself (e.g. ``residual="centred"`` for ``fedex``); an
        option the formula does not take raises ``TypeError``.
    """
    if head < 0:
        raise ValueError(f"need head >= 0, got {head}")
    inputs = CommInputs.of(shapes, r, K)
    kwargs = {**(options or {}).get(method, {}), **method_options}
    if method == FULL:
        cost = full_comm(inputs, **kwargs)
    elif method in strategy_names():
        cost = strategy_info(method).comm(inputs, **kwargs)
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(methods())}")
    return CommCost(cost.upload + head, cost.download + head, cost.one_time)


def check_inputs(
    strategies: Sequence[str], rank: int, clients: int, rounds: int, fedsb_rank: int, bytes_per_param: int
) -> None:
    """Raise :class:`CommError` naming the flag of the first bad value."""
    for flag, value in (("--rank", rank), ("--clients", clients), ("--rounds", rounds),
                        ("--fedsb-rank", fedsb_rank), ("--bytes-per-param", bytes_per_param)):
        if value < 1:
            raise CommError(f"{flag} must be >= 1, got {value}")
    unknown = [s for s in strategies if s not in methods()]
    if unknown or not strategies:
        raise CommError(f"--strategies: unknown {', '.join(unknown) or '(none given)'}; "
                        f"choose from {', '.join(methods())}")


@dataclass(frozen=True)
class CommRow:
    """One strategy's communication in parameters (see the module doc for each field)."""

    strategy: str
    rank: int
    upload: int  # per client per round
    download: int  # per client per round: the Fed-SB paper's x-axis
    one_time: int  # per client per run
    round_total: int  # K·(upload + download)
    run_total: int  # rounds·round_total + K·one_time
    download_vs_fedit: float

    def as_dict(self, bytes_per_param: int) -> dict[str, Any]:
        row = asdict(self)
        for key in ("upload", "download", "one_time", "round_total", "run_total"):
            row[f"{key}_bytes"] = row[key] * bytes_per_param
        return row


def comm_table(
    shapes: Mapping[str, tuple[int, int]] | Iterable[tuple[int, int]],
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    rank: int = BASELINE_RANK,
    clients: int = PAPER_CLIENTS,
    rounds: int = 1,
    fedsb_rank: int = FEDSB_RANK,
    bytes_per_param: int = 4,
    *,
    ffa_a_by_seed: bool = True,
    options: StrategyOptions | None = None,
    ranks: Sequence[int] = (),
) -> list[CommRow]:
    """One :class:`CommRow` per strategy; ``fedsb`` uses ``fedsb_rank``, the others ``rank``.

    ``ranks`` (``--ranks``, per-client ranks round-robin over the ``K`` clients): one row per strategy that
    takes mixed ranks and rank class instead (:func:`mixed_rank_rows`).

    ``options`` holds per-strategy formula options; ``ffa_a_by_seed`` is FFA-LoRA's ``a_by_seed``
    (``--ffa-a-once``). ``bytes_per_param`` is only validated here (rows hold parameters; see
    :meth:`CommRow.as_dict`).
    """
    dims = list(shapes.values() if isinstance(shapes, Mapping) else shapes)
    check_inputs(strategies, rank, clients, rounds, fedsb_rank, bytes_per_param)
    per_strategy = {"ffa": {"a_by_seed": ffa_a_by_seed}, **(options or {})}
    fedit = comm_params("fedit", dims, rank, clients).download
    if ranks:
        return mixed_rank_rows(dims, strategies, ranks, clients, rounds, fedit, per_strategy)
    rows = []
    for name in strategies:
        r = fedsb_rank if name == "fedsb" else rank
        cost = comm_params(name, dims, r, clients, options=per_strategy)
        per_round = clients * (cost.upload + cost.download)
        rows.append(CommRow(
            name, r, cost.upload, cost.download, cost.one_time, per_round,
            rounds * per_round + clients * cost.one_time, cost.download / fedit,
        ))
    return rows


def base_delta_bytes(shapes: Mapping[str, tuple[int, int]]) -> int:
    """Memory of the float32 base delta FedEx-LoRA and FLoRA keep beside a low-precision base:
    4 bytes per adapted weight element, ``4·Σ m·n`` (``docs/precision.md §3``)."""
    return 4 * sum(m * n for m, n in shapes.values())


def mixed_rank_rows(
    dims: Sequence[tuple[int, int]], strategies: Sequence[str], ranks: Sequence[int], clients: int, rounds: int,
    fedit: int, options: StrategyOptions,
) -> list[CommRow]:
    """Per-client ranks (``docs/algorithms.md §18``): for each strategy that takes them, one row per rank class.

    Client ``i`` of the ``K`` trains ``ranks[i % len(ranks)]``; a row's upload and download are one client of
    that class's (the formula gets the round's ranks as ``client_ranks``); its round and run totals are the
    class's share (its client count times a client's). Strategies that need one rank are left out.
    """
    client_ranks = [ranks[i % len(ranks)] for i in range(clients)]
    rows = []
    for name in strategies:
        if name == FULL or not strategy_info(name).mixed_ranks:
            continue
        for r in sorted(set(client_ranks)):
            count = client_ranks.count(r)
            cost = comm_params(name, dims, r, clients, options={name: {**options.get(name, {}), "client_ranks": client_ranks}})
            per_round = count * (cost.upload + cost.download)
            rows.append(CommRow(
                name, r, cost.upload, cost.download, cost.one_time, per_round,
                rounds * per_round + count * cost.one_time, cost.download / fedit,
            ))
    return rows


def _params(n: int) -> str:
    if n == 0:
        return "0"
    return f"{n / 1e6:,.2f}M" if n >= 1e6 else f"{n / 1e3:,.1f}K"


def _bytes(n: int) -> str:
    if n == 0:
        return "0"
    return f"{n / 1e9:,.2f} GB" if n >= 1e9 else f"{n / 1e6:,.2f} MB"


def format_table(rows: Sequence[CommRow], bytes_per_param: int = 4) -> str:
    """Two aligned tables, parameters (K = 1e3, M = 1e6) then bytes (decimal MB, GB)."""
    head = ["strategy", "rank", "upload/client", "download/client", "one-time/client",
            "round total", "run total", "download / FedIT"]
    keys = ("upload", "download", "one_time", "round_total", "run_total")
    lines = []
    blocks = (("parameters", _params, 1), (f"bytes ({bytes_per_param} B/parameter)", _bytes, bytes_per_param))
    for title, fmt, scale in blocks:
        body = [[r.strategy, str(r.rank), *(fmt(getattr(r, k) * scale) for k in keys), f"{r.download_vs_fedit:.4g}x"]
                for r in rows]
        widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]
        lines += ["", title] + [
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
            for cells in (head, *body)
        ]
    return "\n".join(lines)


def report(
    model: str | None,
    *,
    rank: int = BASELINE_RANK,
    clients: int = PAPER_CLIENTS,
    rounds: int = 1,
    fedsb_rank: int = FEDSB_RANK,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    targets: Sequence[str] = ALL_7,
    bytes_per_param: int = 4,
    ffa_a_by_seed: bool = True,
    secagg: SecAggConfig | None = None,
    ranks: Sequence[int] = (),
) -> tuple[str, dict[str, Any]]:
    """The printed report and its JSON payload for ``corolla comm``; raises :class:`CommError`."""
    if not model:
        raise CommError(f"--model is required: a preset ({', '.join(PRESETS)}) or the path to a config.json")
    if not targets:
        raise CommError(f"--targets is empty; pass module names such as {','.join(ALL_7)}")
    config_path = resolve_config_path(model)
    check_inputs(strategies, rank, clients, rounds, fedsb_rank, bytes_per_param)  # before building anything
    net = build_meta_model(load_config(config_path))
    shapes = linear_shapes(net, targets)
    rows = comm_table(shapes, strategies, rank, clients, rounds, fedsb_rank, bytes_per_param,
                      ffa_a_by_seed=ffa_a_by_seed, ranks=ranks)
    if ranks and not rows:
        raise CommError(f"--ranks: none of {', '.join(strategies)} takes mixed ranks; pass --strategies with some of "
                        + ", ".join(i.name for i in registered_strategies() if i.mixed_ranks))
    sum_m = sum(m for m, _ in shapes.values())
    sum_n = sum(n for _, n in shapes.values())
    arch = type(net).__name__
    label = model.lower() if model.lower() in PRESETS else str(config_path)
    text = [
        f"corolla comm: {arch} ({label}), built on the meta device (no weights)",
        f"adapted modules: M = {len(shapes)} ({', '.join(targets)}); "
        f"Σm = {sum_m:,}, Σn = {sum_n:,}, Σ(m+n) = {sum_m + sum_n:,}",
        f"K = {clients} clients per round, {rounds} round{'s' if rounds > 1 else ''}; rank {rank} "
        f"(fedsb: {fedsb_rank}); FFA's A {'from a shared seed' if ffa_a_by_seed else 'broadcast once'}",
        *([f"per-client ranks {','.join(map(str, ranks))} round-robin over the K clients: one row per strategy "
           "and rank class; round/run totals are that class's share (docs/algorithms.md §18)"] if ranks else []),
        format_table(rows, bytes_per_param),
        "",
        "upload, download: what ONE client sends, receives in ONE round. download/client is the x-axis",
        "  of the Fed-SB paper's communication figure (docs/communication.md §5): FLoRA and FedEx-LoRA receive",
        "  all K clients' factors, K·r·Σ(m+n). one-time/client: Fed-SB's B and A (docs/communication.md §4), downloaded once.",
        "round total = K x (upload + download); run total = rounds x round total + K x one-time.",
    ]
    try:
        secure = secagg_costs(rows, clients, secagg or SecAggConfig(enabled=True))
    except ValueError as exc:  # the ring would overflow: the message names the keys
        raise CommError(f"--clients {clients} with SecAgg: {exc}") from exc
    text += ["", format_secagg(rows, secure, clients, bytes_per_param)]
    delta_bytes = base_delta_bytes(shapes)
    text += [
        f"bytes per parameter: {bytes_per_param} (adapter.wire-dtype = bfloat16 or float16 sends 2; docs/precision.md §5).",
        f"base-delta memory (FedEx-LoRA, FLoRA; model.base-delta = float32 beside a bf16/fp16/4-bit base): "
        f"{_bytes(delta_bytes)} per node, 4 B x Σ m·n = {sum(m * n for m, n in shapes.values()):,} elements; "
        f"the same modules' bf16 weights take {_bytes(delta_bytes // 2)} (docs/precision.md §3).",
    ]
    sb = next((r for r in rows if r.strategy == "fedsb"), None)
    if sb is not None and len(rows) > 1:
        text.append(f"Fed-SB's download per client per round is smaller than: "
                    + ", ".join(f"{r.strategy}'s {r.download / sb.download:.1f}x" for r in rows if r is not sb))
    payload = {
        "model": label, "config": str(config_path), "architecture": arch, "targets": list(targets),
        "modules": len(shapes), "sum_m": sum_m, "sum_n": sum_n, "clients": clients, "rounds": rounds,
        "rank": rank, "fedsb_rank": fedsb_rank, "ranks": list(ranks), "bytes_per_param": bytes_per_param,
        "ffa_a_by_seed": ffa_a_by_seed, "base_delta_bytes": delta_bytes,
        "definitions": {
            "upload": "parameters one client sends in one round",
            "download": "parameters one client receives in one round (the Fed-SB paper's x-axis)",
            "one_time": "parameters one client receives once per run (Fed-SB's B and A)",
            "round_total": "clients * (upload + download)",
            "run_total": "rounds * round_total + clients * one_time",
            "download_vs_fedit": "download / FedIT's download at --rank",
        },
        "strategies": [r.as_dict(bytes_per_param) for r in rows],
        "secagg": {
            name: None if cost is None else {
                "modulus_bits": cost.modulus_bits, "group": cost.group, "vector_entries": cost.vector_entries,
                "down_bytes": cost.down, "up_bytes": cost.up, "secagg_bytes": cost.total,
                "with_secagg_bytes": next(r for r in rows if r.strategy == name).download * bytes_per_param + cost.total,
            }
            for name, cost in secure.items()
        },
    }
    return "\n".join(text), payload


def secagg_section(bits: int, max_weight: int) -> SecAggConfig:
    """The ``secagg.*`` values the SecAgg block prices; raises :class:`CommError` naming the flag."""
    from pydantic import ValidationError

    try:
        return SecAggConfig(enabled=True, quantization_bits=bits, max_weight=max_weight)
    except ValidationError as exc:
        flag = "--secagg-bits" if "quantization_bits" in str(exc) else "--secagg-max-weight"
        raise CommError(f"{flag}: {exc.errors()[0]['msg']} (quantization bits 2..30, max weight >= 1)") from exc


def secagg_costs(rows: Sequence[CommRow], clients: int, config: SecAggConfig) -> dict[str, SecAggCost | None]:
    """Per strategy: SecAgg+'s bytes per client per round, or ``None`` where SecAgg is refused (a
    strategy that is not linear, ``full``) or meaningless (one client: the sum is its update)."""
    out: dict[str, SecAggCost | None] = {}
    for row in rows:
        linear = row.strategy in strategy_names() and strategy_info(row.strategy).linear
        out[row.strategy] = secagg_cost(row.upload, clients, config) if linear and clients >= 2 else None
    return out


def format_secagg(rows: Sequence[CommRow], costs: dict[str, SecAggCost | None], clients: int, bytes_per_param: int) -> str:
    """The SecAgg+ block: bytes per client per round by stage (down + up), the total with SecAgg
    (download + stages; the masked vector replaces the upload) and its ratio to the plain round."""
    head = ["strategy", "ring bits", "set-up", "share-keys", "collect", "unmask", "with SecAgg/client", "vs plain"]
    body = []
    for row in rows:
        cost = costs[row.strategy]
        if cost is None:
            why = "one client" if clients < 2 and row.strategy != FULL else "refused: not linear"
            body.append([row.strategy, "-", "-", "-", "-", "-", why, "-"])
            continue
        plain = (row.upload + row.download) * bytes_per_param
        total = row.download * bytes_per_param + cost.total
        body.append([row.strategy, str(cost.modulus_bits),
                     *(f"{cost.stage(s):,}" for s in ("set-up", "share-keys", "collect", "unmask")),
                     _bytes(total), f"{total / plain:.3g}x"])
    widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]
    lines = [f"SecAgg+ bytes per client per round (secagg.enabled = true; {clients} clients, every one in each "
             "share group, no dropouts; docs/communication.md §8)"]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
              for cells in (head, *body)]
    lines.append("collect: the shares relayed down and the masked vector (ceil(m/8) bytes per entry) up; "
                 "the train download is unchanged")
    return "\n".join(lines)
