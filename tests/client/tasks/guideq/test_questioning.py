"""Questioners, the LLM output parser (on fixed fixtures), answerers and the data loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForQuestionAnswering

from client.tasks.guideq.data import load_labelled_files, synthetic_split
from client.tasks.guideq.questioning import (
    FEW_SHOT,
    NO_QUESTION,
    ExtractiveQAAnswerer,
    OverlapAnswerer,
    TemplateQuestioner,
    build_prompt,
    parse_question,
    split_halves,
)

WELL_FORMED = 'Note: cooking is unlikely.\nQUESTION: "Did you use a telescope to look at the comet last night?"'
ECHOES = "\n".join(f'QUESTION: "{q}"' for _, _, q in FEW_SHOT) + '\nQUESTION: "Is the orbit of this comet close to the sun?"'


def test_parser_takes_a_well_formed_question() -> None:
    assert parse_question(WELL_FORMED) == "Did you use a telescope to look at the comet last night?"


def test_parser_skips_the_prompt_examples_it_echoes() -> None:
    assert parse_question(ECHOES) == "Is the orbit of this comet close to the sun?"
    assert parse_question("\n".join(f'QUESTION: "{q}"' for _, _, q in FEW_SHOT)) == NO_QUESTION


@pytest.mark.parametrize("output", ["", "I am not sure what to ask.", 'QUESTION: "Too short?"',
                                    "QUESTION: Is it unquoted and therefore ignored here?"])
def test_parser_without_a_usable_quoted_question_returns_the_sentinel(output: str) -> None:
    assert parse_question(output) == NO_QUESTION


def test_parser_accepts_curly_quotes_and_a_stricter_length() -> None:
    out = "QUESTION: “Have you noticed the symptom after each vaccine dose this year?”"
    assert parse_question(out).startswith("Have you noticed")
    assert parse_question(out, min_words=15) == NO_QUESTION


def test_prompt_carries_the_examples_and_the_candidates_keywords() -> None:
    lexicon = {"astronomy": {"comet": (1.0, 3), "orbit": (0.5, 2)}, "music": {"violin": (2.0, 1)}}
    prompt, shown = build_prompt("It was late.", ["astronomy", "music"], lexicon, {"orbit"})
    assert all(q in prompt for _, _, q in FEW_SHOT)
    assert "astronomy (comet)" in prompt and "music (violin)" in prompt and shown == ("comet", "violin")
    bare, none = build_prompt("It was late.", ["astronomy"], lexicon, set(), use_keywords=False)
    assert "comet" not in bare and none == ()


def test_template_questioner_uses_fresh_keywords_and_falls_back_to_a_generic_question() -> None:
    lexicon = {"a": {"x1": (3.0, 1), "x2": (2.0, 1)}, "b": {"y1": (1.0, 1)}}
    q = TemplateQuestioner(per_label=1).ask("...", ["a", "b"], lexicon, {"x1"})
    assert q.keywords == ("x2", "y1") and "x2" in q.text and "y1" in q.text
    assert TemplateQuestioner().ask("...", ["c"], lexicon, set()).text == TemplateQuestioner.GENERIC


def test_overlap_answerer_answers_from_the_best_sentence_or_abstains() -> None:
    hidden = "The harbor was calm. We fixed the rudder and the mast. Then we went home."
    assert OverlapAnswerer().answer("Does it involve rudder, mast or oven?", hidden) == "We fixed the rudder and the mast."
    assert OverlapAnswerer().answer(TemplateQuestioner.GENERIC, hidden) == ""


def test_split_halves_by_sentences_and_by_words() -> None:
    assert split_halves("A b. C d. E f. G h.") == ("A b. C d.", "E f. G h.")
    assert split_halves("one two three four") == ("one two", "three four")


def test_extractive_qa_answerer_returns_a_span_of_the_hidden_text_or_nothing(minilm_tokenizer) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForQuestionAnswering(BertConfig(vocab_size=len(minilm_tokenizer), hidden_size=32,
                                                    num_hidden_layers=1, num_attention_heads=2,
                                                    intermediate_size=64, max_position_embeddings=128))
    hidden = "We fixed the rudder and the mast before the regatta."
    answer = ExtractiveQAAnswerer(model, minilm_tokenizer, max_length=64).answer("Which part broke?", hidden)
    assert answer == "" or answer in hidden
    assert ExtractiveQAAnswerer(model, minilm_tokenizer).answer("Which?", "") == ""


def test_synthetic_set_is_seeded_balanced_and_planted() -> None:
    a, b = synthetic_split(3, "train", 40, 5), synthetic_split(3, "train", 40, 5)
    assert a == b and a != synthetic_split(4, "train", 40, 5)
    assert sorted(a["label"]) == sorted([i % 5 for i in range(40)])
    assert all(len(t.split(". ")) == 6 for t in a["text"])


def test_user_files_load_from_jsonl_and_csv(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"body": f"text {i}", "topic": t}) for i, t in enumerate("abab")) + "\n")
    test = tmp_path / "test.csv"
    test.write_text("body,topic\nhello there,b\n")
    names, tr, te = load_labelled_files(train, test, text_column="body", label_column="topic")
    assert names == ("a", "b") and tr["label"] == [0, 1, 0, 1] and te == {"text": ["hello there"], "label": [1]}


def test_user_file_errors_name_the_file_the_line_and_the_column(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "x", "label": "a"}\n{"text": "y"}\n')
    with pytest.raises(ValueError, match=r"train\.jsonl:2: missing column\(s\) \['label'\]"):
        load_labelled_files(train, train)
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("sentence,label\nhi,a\n")
    with pytest.raises(ValueError, match=r"t\.csv:1: header .* lacks column\(s\) \['text'\]"):
        load_labelled_files(csv_file, csv_file)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        load_labelled_files(bad, bad)
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "x", "label": "a"}\n{"text": "y", "label": "b"}\n')
    unseen = tmp_path / "unseen.jsonl"
    unseen.write_text('{"text": "z", "label": "c"}\n')
    with pytest.raises(ValueError, match=r"unseen\.jsonl: label\(s\) \['c'\] never occur"):
        load_labelled_files(good, unseen)
    with pytest.raises(FileNotFoundError, match="guideq.train-file"):
        load_labelled_files(tmp_path / "nope.jsonl", good)
