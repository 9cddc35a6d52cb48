"""The core sections every run has: ``strategy``, ``model``, ``task``, ``adapter``, ``train``,
``data`` and ``eval`` (``privacy`` and ``faults`` have their own modules).

Extensions add their own sections with :func:`contract.config.register_section`; these are the
platform's, so they are typed attributes of :class:`~contract.config.run_config.RunConfig`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from ..ranks import parse_ranks
from .section import Section


class StrategyConfig(Section):
    """``strategy.*``: which aggregation rule the server runs."""

    name: str = Field("fedsb", description="registered strategy name (see `corolla strategies`)")
    weighted: bool = Field(True, description="weight clients by num-examples (false: uniform)")


class ModelConfig(Section):
    """``model.*``: the frozen base model every client shares."""

    name: str = Field(
        "minilm-l6",
        description="`minilm-l6`, `tiny-llama`, `smollm2-135m`, or a local path / HF id",
        min_length=1,
    )
    device: str = Field(
        "auto",
        description="where the frozen base runs: `auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N` "
        "(docs/precision.md §1)",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="dtype of the frozen base weights; adapters and the head always train in float32 (docs/precision.md §1)",
    )
    quantization: Literal["none", "nf4", "int8"] = Field(
        "none",
        description="quantize the frozen base with bitsandbytes (`pip install -e \".[quant]\"`): `nf4` (QLoRA: double "
        "quantization, bf16 compute) or `int8` (docs/precision.md §2)",
    )
    base_delta: Literal["auto", "float32", "fold"] = Field(
        "auto",
        description="where FedEx-LoRA/FLoRA keep the cumulative base change: `float32` (a float32 delta beside each "
        "adapted weight, exact with any base dtype; 4 bytes per adapted weight element), `fold` (written into the "
        "base weights: exact only with a float32 base), `auto`: `fold` for an unquantized float32 base, else "
        "`float32` (docs/precision.md §3)",
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
            return value
        raise ValueError("must be `auto`, `cpu`, `cuda` or `cuda:N` (N: a GPU index, e.g. `cuda:0`)")

    def base_delta_storage(self) -> Literal["float32", "fold"]:
        """``base-delta`` with ``auto`` resolved: ``fold`` only for an unquantized float32 base."""
        if self.base_delta != "auto":
            return self.base_delta
        return "fold" if self.dtype == "float32" and self.quantization == "none" else "float32"


class TaskConfig(Section):
    """``task.*``: the client-side task plugin."""

    name: str = Field("topics", description="registered task name", min_length=1)
    max_length: int = Field(128, ge=8, le=8192, description="tokens per example after truncation")
    examples_per_client: int = Field(
        50, ge=0, le=100_000,
        description="generated tasks (topics, arithmetic): the train pool holds at least this many rows per "
        "client, so it grows with the federation (0: the fixed pool only; docs/scaling.md)",
    )


class AdapterConfig(Section):
    """``adapter.*``: the LoRA-family adapter trained by clients.

    ``name`` is checked against the strategy's declared kinds and the adapter registry when the run
    starts (``strategies.registry.check_strategy_config``): the contract knows no adapter kind.
    """

    name: str = Field(
        "auto",
        min_length=1,
        description="a registered adapter kind (`corolla adapters`: `lora`, `ffa`, `lora-sb`, `abba`, ...), "
        "or `auto`: what the strategy needs",
    )
    rank: int = Field(32, ge=1, le=4096, description="LoRA rank r (Fed-SB: R is r x r; ABBA: r1 + r2 when unset)")
    rank1: int = Field(
        0, ge=0, le=4096, description="ABBA r1; 0: derived from `rank` (r1 = rank // 2, or rank - rank2)"
    )
    rank2: int = Field(
        0, ge=0, le=4096, description="ABBA r2; 0: derived from `rank` (r2 = rank - r1)"
    )
    ranks: str = Field(
        "",
        description="per-client LoRA ranks, comma-separated, assigned round-robin by partition id (e.g. "
        "`4,8,16,32`; a deployed node may name one with its node-config `adapter-rank`); empty: every client "
        "trains `rank` (docs/algorithms.md §18)",
    )
    alpha: float = Field(16.0, gt=0, le=1e6, description="LoRA alpha; scale s = alpha / r (ABBA: s = alpha)")
    target_modules: str = Field(
        "auto",
        description="comma-separated module names, or `auto` for the model's attention projections",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout probability")
    init: Literal["server", "federated"] = Field(
        "server",
        description="LoRA-SB's B and A from a gradient estimate on the `server`'s calibration sample, "
        "or `federated`: clients upload summed raw gradients once, the server sums them",
    )
    init_examples: int = Field(
        64, ge=1, le=1_000_000, description="LoRA-SB: examples per gradient estimate (on the server, or per client)"
    )
    wire_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="dtype of the adapter payload on the wire, both ways (bfloat16/float16 halve its bytes; exact "
        "strategies stay exact for the values actually sent; docs/precision.md §5)",
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty_targets(cls, value: str) -> str:
        if not [t for t in value.split(",") if t.strip()]:
            raise ValueError("must name at least one module, e.g. `query,value`, or be `auto`")
        return value

    @field_validator("ranks")
    @classmethod
    def _rank_list(cls, value: str) -> str:
        ranks = parse_ranks(value)
        if any(r > 4096 for r in ranks):
            raise ValueError("every rank must be <= 4096")
        return ",".join(map(str, ranks))

    def rank_list(self) -> tuple[int, ...]:
        """The per-client ranks (``()``: everyone trains :attr:`rank`)."""
        return parse_ranks(self.ranks)

    def mixed_ranks(self) -> bool:
        """Whether clients train different ranks (``adapter.ranks`` lists more than one distinct rank,
        or one that differs from ``adapter.rank``)."""
        ranks = set(self.rank_list())
        return bool(ranks) and ranks != {self.rank}

    def target_list(self) -> list[str] | None:
        """Module names to adapt, or ``None`` for the model's default."""
        if self.target_modules.strip() == "auto":
            return None
        return [t.strip() for t in self.target_modules.split(",") if t.strip()]


DEFAULT_LEARNING_RATE = 0.02
"""What ``train.lr = "auto"`` means for a strategy that declares no rate of its own
(``StrategyInfo.learning_rate``); the rate the README's default set-up was measured at."""


class TrainConfig(Section):
    """``train.*``: the local optimisation each selected client runs per round."""

    local_steps: int = Field(10, ge=1, le=1_000_000, description="optimizer steps per client per round")
    lr: Annotated[float, Field(gt=0, le=10)] | Literal["auto"] = Field(
        "auto",
        description="AdamW learning rate; `auto` = the strategy's recommended rate "
        "(0.02; `fedex` 0.005, docs/algorithms.md §17; `corolla strategies` lists them)",
    )
    batch_size: int = Field(16, ge=1, le=65_536, description="examples per local step")
    weight_decay: float = Field(0.0, ge=0, le=10, description="AdamW weight decay")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass (less memory, ~30 % more compute; not with DP)"
    )

    def learning_rate(self, recommended: float) -> float:
        """``train.lr``, with ``auto`` read as ``recommended`` (the strategy's rate; the server sends it)."""
        return recommended if self.lr == "auto" else float(self.lr)


class DataConfig(Section):
    """``data.*``: how the task's training pool is split across clients."""

    partitioner: Literal["iid", "dirichlet"] = Field("dirichlet", description="`iid` or `dirichlet`")
    alpha: float = Field(0.5, gt=0, le=1e6, description="Dirichlet concentration; smaller = more label skew")


class EvalConfig(Section):
    """``eval.*``: central evaluation of the global model on the held-out test split."""

    central: bool = Field(True, description="evaluate the global model on the server every round")
    batch_size: int = Field(64, ge=1, le=65_536, description="examples per evaluation batch")
    max_examples: int = Field(0, ge=0, le=100_000_000, description="cap on test examples (0: all)")


class AuditConfig(Section):
    """``audit.*``: checks the server runs on every round's aggregate."""

    exactness: bool | Literal["auto"] = Field(
        "auto",
        description="exact strategies: measure `exact_rel_error` every round (the new global update against the "
        "exact mean of the clients' updates, float64); `auto`: on when the adapted weights total under 1e8 "
        "elements (docs/precision.md §4)",
    )
