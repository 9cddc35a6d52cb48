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

from typing import Any, TypeVar

from pydantic import Field, model_validator

from .core import AdapterConfig, DataConfig, EvalConfig, ModelConfig, StrategyConfig, TaskConfig, TrainConfig
from .faults import FaultsConfig
from .privacy import PrivacyConfig
from .section import Section

SectionT = TypeVar("SectionT", bound=Section)


class RunConfig(Section):
    """The whole run configuration (``[tool.flwr.app.config]``): top-level keys, core sections
    as typed attributes, registered sections through :meth:`section`."""

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
    faults: FaultsConfig = FaultsConfig()

    @model_validator(mode="after")
    def _check_cross_fields(self) -> RunConfig:
        if self.run_name and any(c in self.run_name for c in "/\\"):
            raise ValueError("`run-name` must be a plain folder name without `/`")
        if self.resume_from and self.privacy.enabled:
            raise ValueError(
                "`resume-from` cannot continue a DP run: the clients' accountant state lives in their Flower contexts, "
                "which a new run does not have, so ε would silently restart; rerun from scratch"
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

