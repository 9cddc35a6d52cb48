"""The task registry: lookup, construction, errors, duplicate protection."""

from __future__ import annotations

import pytest

from client.tasks import ArithmeticWordProblems, Task, TopicClassification, registry
from client.tasks import build_task, get_task_class, register_task, task_names


@pytest.fixture()
def isolated_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def _dummy_class(name: str, kind: str = "causal-lm") -> type[Task]:
    class Dummy(Task):
        def build_datasets(self): ...
        def collate(self, tokenizer, rows): ...
        def example_losses(self, model, batch): ...
        def evaluate(self, model, tokenizer, rows, *, batch_size): ...

    Dummy.name, Dummy.model_kind = name, kind
    return Dummy


def test_builtins_registered():
    assert {"topics", "arithmetic"} <= set(task_names())
    assert task_names() == tuple(sorted(task_names()))
    assert get_task_class("topics") is TopicClassification
    assert get_task_class("arithmetic") is ArithmeticWordProblems


def test_build_task_passes_arguments():
    task = build_task("topics", seed=5, max_length=32, num_train=40, num_test=10)
    assert isinstance(task, TopicClassification)
    assert (task.seed, task.max_length, task.num_train, task.num_test) == (5, 32, 40, 10)
    assert task.build_datasets()["train"].num_rows == 40
    arith = build_task("arithmetic", seed=1, max_length=128, max_new_tokens=4)
    assert arith.max_new_tokens == 4 and arith.num_labels is None
    with pytest.raises(TypeError):
        build_task("topics", seed=0, max_length=32, no_such_option=1)


def test_unknown_name_lists_registered():
    with pytest.raises(ValueError, match=r"unknown task\.name 'nope'.*arithmetic, .*topics"):
        build_task("nope", seed=0, max_length=8)


def test_register_and_duplicate(isolated_registry):
    first = register_task(_dummy_class("dummy-task"))
    assert "dummy-task" in task_names()
    assert register_task(first) is first  # same class again: no-op
    with pytest.raises(ValueError, match="already registered"):
        register_task(_dummy_class("dummy-task"))
    with pytest.raises(ValueError, match="already registered"):
        register_task(_dummy_class("topics"))
    assert get_task_class("topics") is TopicClassification


def test_register_rejects_invalid(isolated_registry):
    with pytest.raises(TypeError):
        register_task(object)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model_kind"):
        register_task(_dummy_class("bad-kind", kind="seq2seq"))

    class Abstract(Task):
        name, model_kind = "abstract-task", "causal-lm"

    with pytest.raises(TypeError, match="abstract"):
        register_task(Abstract)
    assert "abstract-task" not in task_names()


def test_registered_tasks_describe_each_task_from_its_registration(isolated_registry):
    from client.tasks.guideq.config import GuideqConfig
    from client.tasks.registry import registered_tasks
    from contract.config import Section

    infos = {info.name: info for info in registered_tasks()}
    assert tuple(infos) == task_names()
    assert infos["topics"].summary == "Five-way news topic classification (sports, business, science, politics, health)."
    assert (infos["topics"].model_kind, infos["topics"].main_metric, infos["topics"].section) == (
        "sequence-classification", "accuracy", None)
    assert infos["guideq"].section == "guideq" and infos["guideq"].cls.config_section is GuideqConfig
    assert infos["guideq"].summary == get_task_class("guideq").summary  # a `summary` wins over the docstring

    documented = _dummy_class("documented-task")
    documented.__doc__ = """A task whose first paragraph
    spans two lines.

    Details nobody lists."""
    register_task(documented)
    assert {i.name: i for i in registered_tasks()}["documented-task"].summary == (
        "A task whose first paragraph spans two lines.")

    class Unregistered(Section):
        size: int = 1

    orphan = _dummy_class("orphan-task")
    orphan.config_section = Unregistered
    with pytest.raises(TypeError, match="config_section = .*Unregistered is not a registered config section"):
        register_task(orphan)
    assert "orphan-task" not in task_names()
