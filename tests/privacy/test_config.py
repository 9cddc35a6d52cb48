"""privacy.config: ``privacy.*`` values as the user writes them, δ per example, errors that name keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from privacy import DPConfig, DPConfigError


def test_built_from_the_flat_run_config_with_zero_as_unset() -> None:
    flat = {
        "num-server-rounds": 3,
        "privacy.enabled": True,
        "privacy.noise-multiplier": 0.0,
        "privacy.target-epsilon": 8.0,
        "privacy.max-grad-norm": 0.5,
        "privacy.delta": 0.0,
        "privacy.accountant": "prv",
    }
    config = DPConfig.from_values(flat)
    assert config.noise_multiplier is None and config.delta is None
    assert (config.target_epsilon, config.max_grad_norm, config.accountant) == (8.0, 0.5, "prv")
    assert config.poisson_sampling and not config.secure_mode
    assert DPConfig.from_values({"enabled": True, "noise_multiplier": 1.1}).noise_multiplier == 1.1
    assert DPConfig.from_values({}) == DPConfig()  # disabled needs nothing else
    with pytest.raises(ValidationError):
        config.enabled = False  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"privacy.enabled": True}, "needs `privacy.noise-multiplier`"),
        ({"privacy.enabled": True, "privacy.noise-multiplier": 1.0, "privacy.target-epsilon": 3.0}, "choose one"),
        ({"privacy.enabled": True, "privacy.target-epsilon": -1.0}, "`privacy.target-epsilon` = -1.0"),
        ({"privacy.max-grad-norm": 0}, "`privacy.max-grad-norm` = 0"),
        ({"privacy.accountant": "gdp"}, "`privacy.accountant` = 'gdp'"),
        ({"privacy.noise-multipler": 1.0}, "`privacy.noise-multipler`"),
    ],
)
def test_errors_name_the_key_as_the_user_writes_it(values: dict, message: str) -> None:
    with pytest.raises(DPConfigError, match=message.replace("(", r"\(")):
        DPConfig.from_values(values)


def test_the_section_and_its_noise_rule_are_defined_once_in_the_contract() -> None:
    from contract import ConfigError, parse_run_config
    from contract.config import PrivacyConfig

    assert issubclass(DPConfig, PrivacyConfig)
    assert set(DPConfig.model_fields) == set(PrivacyConfig.model_fields)  # the same keys, no more
    assert "_exactly_one_noise_source" not in vars(DPConfig)  # the rule is inherited, not restated
    for values in ({"privacy.enabled": True},
                   {"privacy.enabled": True, "privacy.noise-multiplier": 1.0, "privacy.target-epsilon": 3.0}):
        with pytest.raises(DPConfigError) as client_side:
            DPConfig.from_values(values)
        with pytest.raises(ConfigError) as server_side:
            parse_run_config(values)
        rule = str(client_side.value).split("\n  - ")[1]
        assert rule.rstrip(".") in str(server_side.value)  # one message, whichever side checks
    # what differs is only the spelling of "unset": None here, so σ = 0 is a given (clipping-only) value
    assert DPConfig(enabled=True, noise_multiplier=0.0).noise_multiplier == 0.0
    with pytest.raises(ConfigError, match="needs `privacy.noise-multiplier`"):
        parse_run_config({"privacy.enabled": True, "privacy.noise-multiplier": 0.0})


@pytest.mark.parametrize("n", [1, 7, 100, 5_000, 10**6])
def test_the_default_delta_is_below_one_over_n(n: int) -> None:
    delta = DPConfig(enabled=True, noise_multiplier=1.0).delta_for(n)
    assert 0 < delta < 1 / n and delta <= 1 / (10 * n) and delta <= 1e-5


def test_a_delta_not_below_one_over_n_is_refused() -> None:
    config = DPConfig(enabled=True, noise_multiplier=1.0, delta=1e-3)
    assert config.delta_for(999) == 1e-3
    with pytest.raises(DPConfigError, match=r"`privacy.delta` = 0.001 is not below 1/n"):
        config.delta_for(1000)


def test_importing_privacy_leaves_root_logging_alone() -> None:
    # `import opacus` calls logging.basicConfig; privacy undoes it. The reload is
    # the negative control: running opacus's module body again does add a root handler.
    code = (
        "import importlib, logging\n"
        "root = logging.getLogger()\n"
        "import privacy\n"
        "assert root.handlers == [], root.handlers\n"
        "import opacus.utils.module_utils as mu\n"
        "importlib.reload(mu)\n"
        "assert len(root.handlers) == 1, root.handlers\n"
    )
    root_dir = str(Path(__file__).resolve().parents[2])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=root_dir, env={"OMP_NUM_THREADS": "1", "PYTHONPATH": root_dir})
    assert result.returncode == 0, result.stderr[-2000:]
