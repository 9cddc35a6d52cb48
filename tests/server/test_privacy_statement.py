"""privacy.not_covered lists every channel that bypasses DP-SGD in the chosen set-up (docs/privacy.md §8),
and refuses the combination DP cannot describe."""

from __future__ import annotations

from typing import Any

import pytest

import client.tasks  # noqa: F401  (the task plugins' sections)
from adapters.lora_sb import FEDERATED_INIT_GAP
from adapters.lora_sb.kind import SERVER_INIT_GAP
from client.tasks import get_task_class
from client.tasks.arithmetic import ArithmeticWordProblems
from contract import ConfigError, RunConfig, parse_run_config
from server.privacy_statement import POISSON_GAP, REPLY_METRICS_GAP, SECAGG_METRICS_GAP, not_covered, privacy_statement

DP = {"privacy.enabled": True, "privacy.noise-multiplier": 1.0}


def _gaps(task: str = "arithmetic", kind: str = "lora", **flat: Any) -> list[str]:
    config = parse_run_config({**DP, "task.name": task, **flat})
    return not_covered(config, kind, get_task_class(task))


def test_every_dp_run_states_the_reply_metrics_and_nothing_when_dp_is_off() -> None:
    assert _gaps() == [REPLY_METRICS_GAP]
    assert "`num-examples`" in REPLY_METRICS_GAP and "training loss" in REPLY_METRICS_GAP
    assert not_covered(parse_run_config({}), "lora", ArithmeticWordProblems) == []
    assert privacy_statement(parse_run_config({}), "lora", ArithmeticWordProblems) is None


def test_fixed_size_batches_are_stated_as_not_a_bound() -> None:
    assert _gaps(**{"privacy.poisson-sampling": False}) == [REPLY_METRICS_GAP, POISSON_GAP]
    statement = privacy_statement(parse_run_config({**DP, "privacy.poisson-sampling": False}), "lora", ArithmeticWordProblems)
    assert statement is not None and POISSON_GAP in statement["not_covered"] and statement["poisson_sampling"] is False


def test_secagg_states_the_sums_instead_of_each_clients_values() -> None:
    assert _gaps(kind="lora", **{"secagg.enabled": True}) == [SECAGG_METRICS_GAP]


def test_fed_sb_states_its_set_up_either_way() -> None:
    assert _gaps(kind="lora-sb", **{"strategy.name": "fedsb"}) == [REPLY_METRICS_GAP, SERVER_INIT_GAP]
    assert _gaps(kind="lora-sb", **{"strategy.name": "fedsb", "adapter.init": "federated"}) == [REPLY_METRICS_GAP, FEDERATED_INIT_GAP]


def test_guideqs_verbatim_lexicon_with_dp_is_refused_and_without_reports_runs() -> None:
    with pytest.raises(ConfigError, match="`guideq.report` = true with `privacy.enabled` = true: .* word n-grams copied"):
        _gaps(task="guideq")
    assert _gaps(task="guideq", **{"guideq.report": False}) == [REPLY_METRICS_GAP]


def test_memorization_states_its_shard_metrics_only_with_federated_evaluation() -> None:
    assert _gaps(task="memorization") == [REPLY_METRICS_GAP]
    gaps = _gaps(task="memorization", **{"fraction-evaluate": 0.5})
    assert len(gaps) == 2 and "extraction probe on its own training shard" in gaps[1]


def test_the_safety_report_is_post_processing_of_the_sent_update() -> None:
    assert _gaps(task="safety-arithmetic") == [REPLY_METRICS_GAP]


def test_a_task_that_reports_without_declaring_is_listed_as_not_covered() -> None:
    class Reporting(ArithmeticWordProblems):
        def client_report(self, model, tokenizer, rows, *, update):  # noqa: ANN001, ANN201 - the hook's signature
            return {"first_row": rows[0]}

    class Declared(Reporting):
        @classmethod
        def privacy_gaps(cls, config: RunConfig) -> tuple[str, ...]:
            return ("my report quotes one training row",)

    config = parse_run_config({**DP, "task.name": "arithmetic"})
    undeclared = not_covered(config, "lora", Reporting)
    assert len(undeclared) == 2 and "sends client_report without declaring what they hold" in undeclared[1]
    assert not_covered(config, "lora", Declared) == [REPLY_METRICS_GAP, "my report quotes one training row"]
