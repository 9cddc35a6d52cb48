"""The run configuration: the :class:`Section` base, the core sections, the registry extensions
add their sections to, and parsing Flower's flat run config into a typed :class:`RunConfig`.

Modules: ``section`` (the base and shared value parsers), ``core``, ``privacy`` and ``faults``
(the platform's sections), ``run_config`` (:class:`RunConfig`: top-level keys and core sections),
``registry`` (:func:`register_section` and the assembled class) and ``parse``.
"""

from .core import (
    DEFAULT_LEARNING_RATE,
    AdapterConfig,
    AuditConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    StrategyConfig,
    TaskConfig,
    TrainConfig,
)
from .faults import FaultsConfig
from .parse import ConfigError, allowed_keys, default_run_config, describe_key, parse_run_config
from .privacy import MAX_DELTA, PrivacyConfig
from .registry import SectionInfo, core_section_names, register_section, registered_sections, run_config_model
from .run_config import RunConfig
from .section import Section, kebab, parse_fractions

__all__ = [
    "AdapterConfig",
    "AuditConfig",
    "ConfigError",
    "DEFAULT_LEARNING_RATE",
    "DataConfig",
    "EvalConfig",
    "FaultsConfig",
    "MAX_DELTA",
    "ModelConfig",
    "PrivacyConfig",
    "RunConfig",
    "Section",
    "SectionInfo",
    "StrategyConfig",
    "TaskConfig",
    "TrainConfig",
    "allowed_keys",
    "core_section_names",
    "default_run_config",
    "describe_key",
    "kebab",
    "parse_fractions",
    "parse_run_config",
    "register_section",
    "registered_sections",
    "run_config_model",
]
