"""Registered sections: one call next to the extension's code, and the whole schema follows."""

from __future__ import annotations

import pytest
from pydantic import ConfigDict, Field, model_validator

from contract import ConfigError, allowed_keys, parse_run_config
from contract.config import (
    AdapterConfig,
    RunConfig,
    Section,
    core_section_names,
    default_run_config,
    register_section,
    registered_sections,
    run_config_model,
)

pytestmark = pytest.mark.usefixtures("scratch_registry")


class EchoConfig(Section):
    """``echo-task.*``: a task section defined in this test module only."""

    repeats: int = Field(2, ge=1, le=100, description="how often the echo task repeats a text")
    voice: str = Field("low", description="`low` or `high`")
    loud: bool = Field(False, description="shout every repeat")

    @model_validator(mode="after")
    def _loud_needs_high(self) -> EchoConfig:
        if self.loud and self.voice != "high":
            raise ValueError("`echo-task.loud` = true needs `echo-task.voice` = `high`")
        return self


def test_a_registered_section_is_parsed_listed_and_typed() -> None:
    assert "echo-task.repeats" not in allowed_keys()
    before = run_config_model()
    register_section("echo-task", EchoConfig, owner=__name__)

    assert {"echo-task.repeats", "echo-task.voice", "echo-task.loud"} <= set(allowed_keys())
    assert run_config_model() is not before and issubclass(run_config_model(), RunConfig)
    assert run_config_model() is run_config_model()  # cached until the next registration
    config = parse_run_config({"echo-task.repeats": 5, "adapter.rank": 4})
    assert config.section(EchoConfig) == EchoConfig(repeats=5)
    assert config.section(AdapterConfig).rank == 4 == config.adapter.rank  # core sections both ways
    assert config.to_flat()["echo-task.repeats"] == 5
    assert default_run_config().section(EchoConfig) == EchoConfig()
    assert [info.name for info in registered_sections() if info.owner == __name__] == ["echo-task"]


def test_a_registered_section_gets_the_same_error_messages() -> None:
    register_section("echo-task", EchoConfig, owner=__name__)
    with pytest.raises(ConfigError) as err:
        parse_run_config({"echo-task.repeats": 0, "echo-task.repets": 3})
    message = str(err.value)
    assert "`echo-task.repeats` = 0: Input should be greater than or equal to 1" in message
    assert "(echo-task.repeats: how often the echo task repeats a text)" in message
    assert "--run-config 'echo-task.repeats=...'" in message
    assert "unknown config key `echo-task.repets` (value 3). Did you mean `echo-task.repeats`?" in message
    with pytest.raises(ConfigError, match="`echo-task.loud` = true needs `echo-task.voice` = `high`"):
        parse_run_config({"echo-task.loud": True})  # the section's own cross-field rule


def test_registering_the_same_model_again_is_a_no_op() -> None:
    assert register_section("echo-task", EchoConfig, owner=__name__) is EchoConfig
    model = run_config_model()
    register_section("echo-task", EchoConfig, owner="somewhere.else")
    assert run_config_model() is model
    assert [info.owner for info in registered_sections() if info.name == "echo-task"] == [__name__]


def test_a_name_taken_by_another_model_fails_naming_both() -> None:
    register_section("echo-task", EchoConfig, owner=__name__)

    class OtherEcho(Section):
        repeats: int = Field(1, le=9, description="x")

    with pytest.raises(ValueError, match="config section `echo-task` is already registered by "
                       rf"{__name__} \({__name__}.EchoConfig\); tests.plugin must pick another name"):
        register_section("echo-task", OtherEcho, owner="tests.plugin")
    with pytest.raises(ValueError, match="already registered as config section `echo-task`"):
        register_section("echo-again", EchoConfig, owner="tests.plugin")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("EchoTask", "must be kebab-case"),
        ("echo_task", "must be kebab-case"),
        ("echo--task", "must be kebab-case"),
        ("-echo", "must be kebab-case"),
        ("9echo", "must be kebab-case"),
        ("", "must be kebab-case"),
        ("adapter", "is a core section of the run config"),
        ("privacy", "is a core section of the run config"),
        ("seed", "would shadow the top-level key"),
        ("num-server-rounds", "would shadow the top-level key"),
        ("section", "would shadow the top-level key or RunConfig attribute `section`"),
        ("to-flat", "RunConfig attribute `to_flat`"),
    ],
)
def test_bad_names_fail_at_registration(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        register_section(name, EchoConfig, owner=__name__)
    assert EchoConfig not in [info.model for info in registered_sections()]


def test_bad_models_fail_at_registration() -> None:
    from pydantic import BaseModel

    class Plain(BaseModel):
        x: int = 1

    class NoDefault(Section):
        size: int = Field(description="no default")

    class Nested(Section):
        inner: AdapterConfig = Field(AdapterConfig(), description="a whole section inside a section")

    class BadDefault(Section):
        size: int = Field(0, ge=1, validate_default=True, description="default out of range")

    class Undocumented(Section):
        size: int = 1

    with pytest.raises(TypeError, match="must be a contract.config.Section subclass"):
        register_section("plain", Plain, owner=__name__)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="every key needs a default .* add one to size"):
        register_section("no-default", NoDefault, owner=__name__)
    with pytest.raises(TypeError, match=r"values are bool, int, float or str; these keys are not: inner \(dict\)"):
        register_section("nested", Nested, owner=__name__)
    with pytest.raises(TypeError, match="its defaults are invalid"):
        register_section("bad-default", BadDefault, owner=__name__)
    with pytest.raises(TypeError, match=r"every key needs a Field\(description=...\) .* add one to size"):
        register_section("undocumented", Undocumented, owner=__name__)
    with pytest.raises(TypeError, match="`owner` must name the registering extension"):
        register_section("echo-task", EchoConfig, owner="")
    assert {"plain", "no-default", "nested", "bad-default", "undocumented", "echo-task"}.isdisjoint(info.name for info in registered_sections())


def test_a_section_that_loosens_strictness_or_leaves_a_number_unbounded_is_refused() -> None:
    class Lax(Section):
        model_config = ConfigDict(strict=False)
        size: int = Field(1, le=9, description="x")

    class NaNFriendly(Section):
        model_config = ConfigDict(allow_inf_nan=True)
        scale: float = Field(1.0, le=9, description="x")

    class Unbounded(Section):
        size: int = Field(1, ge=1, description="no upper bound")
        scale: float = Field(1.0, gt=0, description="no upper bound either")
        flag: bool = Field(True, description="a bool needs no bound")

    with pytest.raises(TypeError, match="strict and finite like every other .* strict=False"):
        register_section("lax", Lax, owner=__name__)
    with pytest.raises(TypeError, match="allow_inf_nan=True"):
        register_section("nan-friendly", NaNFriendly, owner=__name__)
    with pytest.raises(TypeError, match=r"every number needs an upper bound .* add one to size, scale$"):
        register_section("unbounded", Unbounded, owner=__name__)
    assert {"lax", "nan-friendly", "unbounded"}.isdisjoint(info.name for info in registered_sections())


def test_every_registered_section_is_strict_finite_and_bounded() -> None:
    # the platform's own sections and every plugin's: a "8" is no 8, inf is refused, numbers have a ceiling
    model = run_config_model()
    sections = [info.annotation for info in model.model_fields.values() if isinstance(info.annotation, type) and issubclass(info.annotation, Section)]
    assert len(sections) >= 9 + 6  # core + the task plugins, secagg
    for section in [model, *sections]:
        assert section.model_config["strict"] is True and section.model_config["allow_inf_nan"] is False, section
        for name, info in section.model_fields.items():
            if info.annotation in (int, float):
                assert any(type(rule).__name__ in ("Le", "Lt") for rule in info.metadata), f"{section.__name__}.{name}"


def test_core_sections_are_the_platforms() -> None:
    assert core_section_names() == ("strategy", "model", "task", "adapter", "train", "data", "eval", "privacy", "faults", "audit")


def test_partial_parsing_skips_only_sections_this_process_does_not_register() -> None:
    flat = {"echo-task.repeats": 3, "adapter.rank": 4}
    with pytest.raises(ConfigError, match="unknown config key `echo-task.repeats`"):
        parse_run_config(flat)  # the ServerApp and the CLI validate everything
    config = parse_run_config(flat, partial=True)  # a ClientApp that never imported the owner
    assert config.adapter.rank == 4
    with pytest.raises(ConfigError, match="unknown config key `adapter.rnk`"):
        parse_run_config({"adapter.rnk": 4}, partial=True)  # known sections stay checked
    with pytest.raises(ConfigError, match="unknown config key `bogus`"):
        parse_run_config({"bogus": 1}, partial=True)  # and so do top-level keys

    register_section("echo-task", EchoConfig, owner=__name__)
    with pytest.raises(ConfigError, match="`echo-task.repeats` = 0"):
        parse_run_config({"echo-task.repeats": 0}, partial=True)  # registered: validated


def test_a_config_parsed_before_the_section_registered_says_so() -> None:
    early = parse_run_config({})
    register_section("echo-task", EchoConfig, owner=__name__)
    with pytest.raises(LookupError, match="EchoConfig is not a section of this run config; register it"):
        early.section(EchoConfig)
    assert parse_run_config({}).section(EchoConfig).repeats == 2


def test_corolla_config_lists_a_registered_section_with_no_edit_elsewhere(capsys: pytest.CaptureFixture[str]) -> None:
    from simulations import cli

    register_section("echo-task", EchoConfig, owner=__name__)
    assert cli.main(["config"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "how often the echo task repeats a text" in lines["echo-task.repeats"]
    assert lines["echo-task.voice"].split()[1] == "'low'"
    assert "guideq.turns" in lines and "adapter.rank" in lines  # the plugins' and the core keys too
