"""The run configuration's core: the top-level keys and the platform's sections.

Flower hands both apps the same flat mapping (``context.run_config``) built from
``[tool.flwr.app.config]`` in ``pyproject.toml`` plus ``--run-config`` overrides, with dotted keys
such as ``"adapter.rank"``. :func:`~contract.config.parse_run_config` turns it into a
:class:`RunConfig` exactly once per process edge; nothing below the entry points reads
``run_config[...]`` by hand.

:class:`RunConfig` is the type everyone annotates with. The class a parse actually builds is a
subclass assembled by :func:`~contract.config.run_config_model` from this core plus every
section an extension registered (:func:`~contract.config.register_section`); extensions read
their own section with :meth:`RunConfig.section`.

Which adapter kinds a strategy takes, and what ``adapter.name = auto`` resolves to, is the
strategy's own declaration (``strategies.registry.check_strategy_config``); the ServerApp sends the
resolved kind to clients under ``contract.ADAPTER_KIND``, so nothing here knows any strategy.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import Field, field_validator, model_validator

from .core import AdapterConfig, AuditConfig, DataConfig, EvalConfig, ModelConfig, StrategyConfig, TaskConfig, TrainConfig
from .faults import FaultsConfig
from .privacy import PrivacyConfig
from .section import Section

SectionT = TypeVar("SectionT", bound=Section)

# Upper bounds of the top-level keys (docs/operations.md §1): far above any run Corolla can do, low
# enough that a typo (an extra zero or three) fails at start instead of hours later.
MAX_ROUNDS = 100_000
MAX_NODES = 1_000_000
MAX_SEED = 2**32 - 1  # numpy's legacy seeding and most samplers take 32-bit seeds
MAX_ROUND_TIMEOUT_S = 7 * 24 * 3600.0
RUN_NAME_MAX = 100
# A run name is one plain folder name: no separator, no `.`/`..`, no NUL or control character, no
# leading `-` (it would read as an option in a shell).
_RUN_NAME = re.compile(r"[^\W_][\w.+=@,-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RunConfig(Section):
    """The whole run configuration (``[tool.flwr.app.config]``): top-level keys, core sections
    as typed attributes, registered sections through :meth:`section`."""

    num_server_rounds: int = Field(3, ge=1, le=MAX_ROUNDS, description="federated rounds")
    fraction_train: float = Field(1.0, gt=0, le=1, description="fraction of nodes trained per round")
    fraction_evaluate: float = Field(0.0, ge=0, le=1, description="fraction of nodes that evaluate locally")
    min_train_nodes: int = Field(1, ge=1, le=MAX_NODES, description="wait for at least this many nodes to train")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="seed for data generation, partitioning and init (0 to 2^32 - 1)")
    output_dir: str = Field("runs", min_length=1, description="where run folders are written")
    run_name: str = Field(
        "", max_length=RUN_NAME_MAX,
        description="run folder name: letters, digits and `._+=@,-`, starting with a letter or digit, at most "
        "100 characters (empty: timestamp + strategy)",
    )
    resume_from: str = Field("", description="run folder of a killed run to continue from its last checkpoint (empty: new run)")
    round_timeout: float = Field(
        0.0, ge=0, le=MAX_ROUND_TIMEOUT_S,
        description="seconds the server waits for the replies of a round, at most 7 days (0: Flower's default, 3600)",
    )
    strategy: StrategyConfig = StrategyConfig()
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    adapter: AdapterConfig = AdapterConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    faults: FaultsConfig = FaultsConfig()
    audit: AuditConfig = AuditConfig()

    @field_validator("run_name")
    @classmethod
    def _plain_folder_name(cls, value: str) -> str:
        if value and not _RUN_NAME.fullmatch(value):
            raise ValueError(
                "must be one plain folder name: letters, digits and `._+=@,-`, starting with a letter or digit "
                "(no `/`, `..`, spaces or control characters), e.g. `fedsb-r16`"
            )
        return value

    @field_validator("output_dir", "resume_from")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("a path may not hold NUL or control characters")
        return value

    @model_validator(mode="after")
    def _check_cross_fields(self) -> RunConfig:
        if self.resume_from and self.privacy.enabled:
            raise ValueError(
                "`resume-from` cannot continue a DP run: the clients' accountant state lives in their Flower contexts, "
                "which a new run does not have, so ε would silently restart; rerun from scratch"
            )
        if self.train.gradient_checkpointing and self.privacy.enabled:
            raise ValueError(
                "`train.gradient-checkpointing = true` cannot run with `privacy.enabled = true`: Opacus's per-example "
                "gradient hooks would see every recomputed forward pass twice; turn one of them off"
            )
        if self.model.quantization != "none" and self.model.base_delta == "fold":
            raise ValueError(
                f"`model.base-delta = fold` cannot write into a `{self.model.quantization}` quantized base; use "
                "`model.base-delta = float32` (or auto)"
            )
        return self

    def section(self, model: type[SectionT]) -> SectionT:
        """This run's values of the section ``model`` defines (core or registered).

        Raises
        ------
        LookupError
            If ``model`` is not a section of this config: it was never registered, or registered
            after this config was parsed (import the extension's module before parsing).
        """
        for name, field in type(self).model_fields.items():
            if field.annotation is model:
                value = getattr(self, name)
                assert isinstance(value, model)
                return value
        raise LookupError(
            f"{model.__module__}.{model.__qualname__} is not a section of this run config; register it with "
            "contract.config.register_section(...) in its module and import that module before parse_run_config"
        )

    def to_flat(self) -> dict[str, Any]:
        """The flat, dotted-key form Flower uses (``{"adapter.rank": 8, ...}``)."""
        flat: dict[str, Any] = {}
        for key, value in self.model_dump(by_alias=True).items():
            if isinstance(value, dict):
                flat.update({f"{key}.{sub}": v for sub, v in value.items()})
            else:
                flat[key] = value
        return flat

