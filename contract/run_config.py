"""The run configuration: one typed, validated schema shared by the ServerApp and the ClientApp.

Flower hands both apps the same flat mapping (``context.run_config``) built from
``[tool.flwr.app.config]`` in ``pyproject.toml`` plus ``--run-config`` overrides, with dotted keys
such as ``"adapter.rank"``. :func:`parse_run_config` turns it into :class:`RunConfig` exactly once
per process edge; nothing below the entry points reads ``run_config[...]`` by hand.

Every error names the key as the user writes it, the value received, what is allowed and how to
fix it, and all errors are reported together.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config_guideq import GuideqConfig
from .config_structformer import StructFormerConfig

from .config_faults import FaultsConfig
from .config_safety import SafetyConfig
from .config_tokenswap import TokenSwapConfig


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=_kebab, populate_by_name=True)


class StrategyConfig(_Section):
    """``strategy.*``: which aggregation rule the server runs."""

    name: str = Field("fedsb", description="registered strategy name (see `corolla strategies`)")
    weighted: bool = Field(True, description="weight clients by num-examples (false: uniform)")


class ModelConfig(_Section):
    """``model.*``: the frozen base model every client shares."""

    name: str = Field(
        "minilm-l6",
        description="`minilm-l6`, `tiny-llama`, `smollm2-135m`, or a local path / HF id",
        min_length=1,
    )


class TaskConfig(_Section):
    """``task.*``: the client-side task plugin."""

    name: str = Field("topics", description="registered task name", min_length=1)
    max_length: int = Field(128, ge=8, le=8192, description="tokens per example after truncation")


class AdapterConfig(_Section):
    """``adapter.*``: the LoRA-family adapter trained by clients."""

    name: Literal["auto", "lora", "ffa", "lora-sb", "abba"] = Field(
        "auto",
        description="`lora`, `ffa` (A frozen), `lora-sb` (only r x r R trains), `abba` "
        "(s(B1 A1) * (B2 A2), all four train), or `auto`: what the strategy needs",
    )
    rank: int = Field(32, ge=1, le=4096, description="LoRA rank r (Fed-SB: R is r x r; ABBA: r1 + r2 when unset)")
    rank1: int = Field(
        0, ge=0, le=4096, description="ABBA r1; 0: derived from `rank` (r1 = rank // 2, or rank - rank2)"
    )
    rank2: int = Field(
        0, ge=0, le=4096, description="ABBA r2; 0: derived from `rank` (r2 = rank - r1)"
    )
    alpha: float = Field(16.0, gt=0, description="LoRA alpha; scale s = alpha / r (ABBA: s = alpha)")
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
        64, ge=1, description="LoRA-SB: examples per gradient estimate (on the server, or per client)"
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty_targets(cls, value: str) -> str:
        if not [t for t in value.split(",") if t.strip()]:
            raise ValueError("must name at least one module, e.g. `query,value`, or be `auto`")
        return value

    def target_list(self) -> list[str] | None:
        """Module names to adapt, or ``None`` for the model's default."""
        if self.target_modules.strip() == "auto":
            return None
        return [t.strip() for t in self.target_modules.split(",") if t.strip()]


class TrainConfig(_Section):
    """``train.*``: the local optimisation each selected client runs per round."""

    local_steps: int = Field(10, ge=1, description="optimizer steps per client per round")
    lr: float = Field(0.02, gt=0, le=10, description="AdamW learning rate")
    batch_size: int = Field(16, ge=1, description="examples per local step")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")


class DataConfig(_Section):
    """``data.*``: how the task's training pool is split across clients."""

    partitioner: Literal["iid", "dirichlet"] = Field("dirichlet", description="`iid` or `dirichlet`")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration; smaller = more label skew")


class EvalConfig(_Section):
    """``eval.*``: central evaluation of the global model on the held-out test split."""

    central: bool = Field(True, description="evaluate the global model on the server every round")
    batch_size: int = Field(64, ge=1, description="examples per evaluation batch")
    max_examples: int = Field(0, ge=0, description="cap on test examples (0: all)")


class PrivacyConfig(_Section):
    """``privacy.*``: client-side DP-SGD (Opacus) on the trainable adapter tensors.

    TOML cannot say "unset", so ``0`` means unset for ``noise-multiplier``, ``target-epsilon`` and
    ``delta``. The client turns this section into ``privacy.DPConfig``, which owns the semantics
    (δ default, calibration, budget); the checks here make a bad run fail at start, on the server.
    """

    enabled: bool = Field(False, description="train with DP-SGD (per-example clipping + Gaussian noise)")
    noise_multiplier: float = Field(0.0, ge=0, description="noise std / clip norm; 0: calibrate to `target-epsilon`")
    target_epsilon: float = Field(0.0, ge=0, description="ε budget of the whole run per client; 0: use `noise-multiplier`")
    max_grad_norm: float = Field(1.0, gt=0, description="per-example clip norm C over all trainable tensors")
    delta: float = Field(0.0, ge=0, lt=1, description="δ per example; 0: min(1e-5, 1/(10 n)) for a client's n examples")
    accountant: Literal["rdp", "prv"] = Field("rdp", description="privacy accountant: `rdp` or `prv`")
    poisson_sampling: bool = Field(True, description="Poisson-sampled batches, as the accountant assumes")
    secure_mode: bool = Field(False, description="cryptographically secure noise (needs torchcsprng)")

    @model_validator(mode="after")
    def _one_noise_source(self) -> PrivacyConfig:
        if self.enabled and (self.noise_multiplier > 0) == (self.target_epsilon > 0):
            raise ValueError(
                "`privacy.enabled` = true needs exactly one of `privacy.noise-multiplier` (e.g. 1.0) and "
                "`privacy.target-epsilon` (e.g. 8.0) above 0; set the other to 0"
            )
        return self


class RunConfig(_Section):
    """The whole run configuration (``[tool.flwr.app.config]``)."""

    num_server_rounds: int = Field(3, ge=1, description="federated rounds")
    fraction_train: float = Field(1.0, gt=0, le=1, description="fraction of nodes trained per round")
    fraction_evaluate: float = Field(0.0, ge=0, le=1, description="fraction of nodes that evaluate locally")
    min_train_nodes: int = Field(1, ge=1, description="wait for at least this many nodes to train")
    seed: int = Field(42, ge=0, description="seed for data generation, partitioning and init")
    output_dir: str = Field("runs", min_length=1, description="where run folders are written")
    run_name: str = Field("", description="run folder name (empty: timestamp + strategy)")
    resume_from: str = Field("", description="run folder of a killed run to continue from its last checkpoint (empty: new run)")
    round_timeout: float = Field(0.0, ge=0, description="seconds the server waits for the replies of a round (0: Flower's default, 3600)")
    strategy: StrategyConfig = StrategyConfig()
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    adapter: AdapterConfig = AdapterConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    guideq: GuideqConfig = GuideqConfig()
    structformer: StructFormerConfig = StructFormerConfig()
    faults: FaultsConfig = FaultsConfig()
    tokenswap: TokenSwapConfig = TokenSwapConfig()
    safety: SafetyConfig = SafetyConfig()

    @model_validator(mode="after")
    def _check_cross_fields(self) -> RunConfig:
        if self.run_name and any(c in self.run_name for c in "/\\"):
            raise ValueError("`run-name` must be a plain folder name without `/`")
        if self.resume_from and self.privacy.enabled:
            raise ValueError(
                "`resume-from` cannot continue a DP run: the clients' accountant state lives in their Flower contexts, "
                "which a new run does not have, so ε would silently restart; rerun from scratch"
            )
        allowed = STRATEGY_ADAPTERS.get(self.strategy.name)
        if allowed and self.adapter.name not in ("auto", *allowed):
            raise ValueError(
                f"`strategy.name` = {self.strategy.name!r} needs `adapter.name` in {list(allowed)} "
                f"(got {self.adapter.name!r}); set `adapter.name=\"{allowed[0]}\"` or `auto`"
            )
        return self

    @property
    def adapter_kind(self) -> str:
        """The adapter kind in use: ``adapter.name``, or what the strategy needs when ``auto``."""
        if self.adapter.name != "auto":
            return self.adapter.name
        return STRATEGY_ADAPTERS.get(self.strategy.name, ("lora",))[0]

    def to_flat(self) -> dict[str, Any]:
        """The flat, dotted-key form Flower uses (``{"adapter.rank": 8, ...}``)."""
        flat: dict[str, Any] = {}
        for key, value in self.model_dump(by_alias=True).items():
            if isinstance(value, dict):
                flat.update({f"{key}.{sub}": v for sub, v in value.items()})
            else:
                flat[key] = value
        return flat


# Which adapter kinds each strategy can aggregate exactly; `auto` picks the first. A strategy not
# listed works on any kind (plain FedAvg of the payload). Kept here, beside the keys, because both
# apps validate with it and the contract cannot import the strategy classes.
STRATEGY_ADAPTERS: dict[str, tuple[str, ...]] = {
    "fedit": ("lora", "abba"),  # ABBA: naive averaging of its four factors
    "fedex": ("lora", "abba"),
    "flora": ("lora",),
    "ffa": ("ffa",),
    "fedsb": ("lora-sb",),
}


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message lists every problem and its fix."""


def allowed_keys() -> list[str]:
    """Every key a user may set, in dotted kebab-case."""
    return sorted(RunConfig().to_flat())


def _nest(flat: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    sections = {
        name for name, field in RunConfig.model_fields.items() if isinstance(field.default, BaseModel)
    }
    known = set(allowed_keys())
    nested: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in flat.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            problems.append(
                f"unknown config key `{key}` (value {value!r}).{hint} Allowed keys: {', '.join(sorted(known))}."
            )
            continue
        head, _, tail = key.partition(".")
        if tail and head.replace("-", "_") in sections:
            nested.setdefault(head, {})[tail] = value
        else:
            nested[key] = value
    return nested, problems


def _describe(error: Mapping[str, Any], flat: Mapping[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"] if p != "__root__")
    value = flat.get(key, error.get("input"))
    field = _field_for(key)
    meaning = f" ({key}: {field})" if field else ""
    if not key:
        return f"{error['msg'].removeprefix('Value error, ')}."
    return f"`{key}` = {value!r}: {error['msg'].removeprefix('Value error, ')}{meaning}. Fix it in [tool.flwr.app.config] or with --run-config '{key}=...'."


def _field_for(key: str) -> str:
    model: type[BaseModel] = RunConfig
    field = None
    for part in key.split("."):
        name = part.replace("-", "_")
        field = model.model_fields.get(name)
        if field is None:
            return ""
        if isinstance(field.default, BaseModel):
            model = type(field.default)
    return field.description or "" if field else ""


def parse_run_config(flat: Mapping[str, Any]) -> RunConfig:
    """Validate Flower's flat run config into a :class:`RunConfig`.

    Raises
    ------
    ConfigError
        Listing every unknown key, wrong type and impossible value, each with its fix.
    """
    nested, problems = _nest(flat)
    config = None
    try:
        config = RunConfig.model_validate(nested)
    except ValidationError as exc:
        problems += [_describe(err, flat) for err in exc.errors()]
    if problems:
        raise ConfigError("invalid Corolla run config:\n  - " + "\n  - ".join(problems))
    assert config is not None
    return config
