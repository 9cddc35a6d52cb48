"""GUIDEQ on the synthetic set with planted keywords (``docs/tasks.md §6``).

The synthetic gains asserted here show that the pipeline is wired correctly (explanations find the
planted words, questions built from them fetch the hidden evidence, re-classification uses it);
they do NOT show that guided questioning works on real data: the set is built so that it must.
"""

from __future__ import annotations

import numpy as np
import pytest

from client.tasks.base import ClientReport
from client.tasks.guideq import occlusion
from client.tasks.guideq.data import synthetic_spec
from client.tasks.guideq.guided import guided_metrics, weighted_f1
from client.tasks.guideq.questioning import OverlapAnswerer, TemplateQuestioner, split_halves


@pytest.fixture(scope="module")
def predict(gq_task, gq_model, gq_tokenizer):
    return gq_task.predictor(gq_model, gq_tokenizer, batch_size=64)


@pytest.fixture(scope="module")
def explained(predict, gq_task, gq_data, gq_tokenizer):
    _, test = gq_data
    rows = test[:60]
    return occlusion.explain(predict, [r["text"] for r in rows], [r["label"] for r in rows], gq_task.label_names,
                             mask_token=gq_tokenizer.mask_token)


@pytest.fixture(scope="module")
def lexicon(explained):
    return occlusion.truncate(occlusion.aggregate(explained), top_n=15)


def test_full_text_is_easy_and_the_first_half_is_ambiguous(gq_task, gq_model, gq_tokenizer, gq_data) -> None:
    values = gq_task.evaluate(gq_model, gq_tokenizer, gq_data[1], batch_size=64).values
    assert values["accuracy"] >= 0.95 and values["f1_full"] >= 0.95
    assert values["f1_partial"] <= 0.7
    assert values["top3_recall"] >= 0.95


def test_occlusion_recovers_the_planted_signature_words(lexicon, gq_task) -> None:
    spec = synthetic_spec(gq_task.settings.num_labels)
    for label in gq_task.label_names:
        top5 = occlusion.keywords(lexicon, label)[:5]
        assert len(set(top5) & set(spec.signatures[label])) / 5 >= 0.8, (label, top5)


@pytest.mark.parametrize("mode", ["span", "all"])
def test_occluding_an_absent_word_has_importance_zero(predict, gq_data, mode) -> None:
    row = gq_data[1][0]
    scores = occlusion.importances(predict, row["text"], row["label"], ["zyzzyva", "not here"], mode=mode)
    assert scores == {"zyzzyva": 0.0, "not here": 0.0}


def test_only_correctly_classified_samples_contribute(predict, gq_task, gq_data) -> None:
    rows = gq_data[1][:12]
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    wrong = [(y + 1) % gq_task.num_labels for y in labels]  # every sample now "misclassified"
    assert occlusion.explain(predict, texts, wrong, gq_task.label_names) == []
    mixed = labels[:6] + wrong[6:]
    out = occlusion.explain(predict, texts, mixed, gq_task.label_names)
    assert [label for label, _ in out] == [gq_task.label_names[y] for y in labels[:6]]


def test_merging_two_clients_equals_the_lexicon_of_their_union(explained) -> None:
    first, second = explained[: len(explained) // 2], explained[len(explained) // 2 :]
    merged = occlusion.merge([occlusion.aggregate(first), occlusion.aggregate(second)])
    union = occlusion.aggregate(explained)
    assert merged.keys() == union.keys()
    for label in union:
        assert merged[label].keys() == union[label].keys()
        for gram, (w, c) in union[label].items():
            assert merged[label][gram][0] == pytest.approx(w, rel=1e-12) and merged[label][gram][1] == c
    # max aggregation merges by max: also the union's
    mx = occlusion.merge([occlusion.aggregate(first, how="max"), occlusion.aggregate(second, how="max")], how="max")
    assert mx == occlusion.aggregate(explained, how="max")


def test_guided_questions_beat_the_partial_text_and_the_no_keyword_question(predict, lexicon, gq_task, gq_data) -> None:
    # wiring check on a set built for it (module docstring), not evidence for the method
    test = gq_data[1]
    metrics, dialogues = guided_metrics(predict, [r["text"] for r in test], [r["label"] for r in test],
                                        gq_task.label_names, lexicon, TemplateQuestioner(),
                                        TemplateQuestioner(use_keywords=False), OverlapAnswerer())
    assert metrics["f1_guided"] > metrics["f1_partial"] + 0.15
    assert metrics["f1_guided"] >= metrics["f1_noKW"]
    assert metrics["delta_f1"] == pytest.approx(metrics["f1_guided"] - metrics["f1_partial"])
    answered = [(d.answers[0], split_halves(r["text"])[1]) for d, r in zip(dialogues, test, strict=True) if d.answers[0]]
    assert len(answered) >= 0.9 * len(test)
    assert all(answer in hidden for answer, hidden in answered)  # answers come from the hidden half only


def test_multi_turn_never_reuses_a_keyword(predict, lexicon, gq_task, gq_data) -> None:
    test = gq_data[1][:20]
    _, dialogues = guided_metrics(predict, [r["text"] for r in test], [r["label"] for r in test],
                                  gq_task.label_names, lexicon, TemplateQuestioner(per_label=2),
                                  TemplateQuestioner(use_keywords=False), OverlapAnswerer(), turns=3)
    for dialogue in dialogues:
        assert len(dialogue.questions) == 3
        asked = [set(q.removeprefix("Does it involve ").rstrip("?").replace("; or ", ", ").split(", "))
                 for q in dialogue.questions if q.startswith("Does it involve")]
        for i, earlier in enumerate(asked):
            for later in asked[i + 1 :]:
                assert not earlier & later


def test_weighted_f1_matches_a_hand_computed_value() -> None:
    # class 0: tp 1, fp 1, fn 1 -> f1 0.5 (support 2); class 1: tp 1, fp 1, fn 1 -> 0.5 (support 2)
    assert weighted_f1([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)
    # class 0: tp 2 -> 1.0 (support 2); class 1: tp 1, fn 1 -> 2/3 (support 2); class 2 unseen
    assert weighted_f1([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx((2 * 1.0 + 2 * (2 / 3)) / 4)


def test_report_merge_broadcast_round_trip(gq_task, gq_model, gq_tokenizer, gq_data) -> None:
    train = gq_data[0]
    reports = []
    for node, shard in enumerate((train[:40], train[40:80])):
        report = gq_task.client_report(gq_model, gq_tokenizer, shard, update=None)
        assert report is not None and report["explained"] <= report["examined"] == 32
        reports.append(ClientReport(node=node, num_examples=len(shard), report=report, arrays={}))
    merged = gq_task.merge_reports(1, reports, sent={})
    assert merged.metrics["guideq_reports"] == 2.0 and merged.metrics["guideq_lexicon_terms"] > 0
    expected = occlusion.merge([occlusion.from_json(r.report["lexicon"]) for r in reports])
    assert occlusion.from_json(merged.detail["merged"]) == expected
    assert all(len(v) <= gq_task.settings.lexicon_size for v in merged.broadcast["lexicon"].values())
    gq_task.apply_broadcast(merged.broadcast)
    try:
        assert gq_task.lexicon == occlusion.from_json(merged.broadcast["lexicon"])
        assert np.isfinite(gq_task.evaluate(gq_model, gq_tokenizer, gq_data[1][:16], batch_size=8).values["f1_guided"])
    finally:
        gq_task.lexicon = {}
