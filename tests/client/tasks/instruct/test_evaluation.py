"""Scoring planted generations, left-padded batched decoding, loss/perplexity, and the task's batches."""

from __future__ import annotations

import json
import subprocess
import sys
import math
from pathlib import Path

import pytest
import torch

from client.tasks.instruct.config import InstructConfig
from client.tasks.instruct.evaluation import loss_metrics, score_rows
from client.tasks.instruct.prompting import IGNORE_INDEX
from client.tasks.instruct.scoring import extract_answer, normalise, rouge_l
from client.tasks.instruct.task import InstructionTuning


def test_answer_extraction_normalisation_and_rouge() -> None:
    assert extract_answer("\n  42 \nbecause...") == "42"
    assert extract_answer("think <answer> 7 </answer> done") == "7"
    assert normalise("The  Cat, sat!") == "cat sat"
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("a dog", "the cat sat") == 0.0
    # LCS "cat sat" of 3 and 4 tokens: P = 2/3, R = 2/4, F = 2PR/(P+R) = 4/7
    assert rouge_l("cat sat down", "the cat is sat") == pytest.approx(4 / 7)


def test_scores_use_the_sources_scorer_else_rouge_and_break_down_per_source() -> None:
    from client.tasks.instruct.sources import load_source

    part = load_source("reasoning-gym:leg_counting", seed=0, num_examples=2, max_rows=0)[0]
    rg_rows = [{"response": r["answer"], "source": "leg_counting", "entry": r["entry"]} for _, r in part.records]
    file_rows = [{"response": "the cat sat", "source": "notes", "entry": ""},
                 {"response": "Paris", "source": "notes", "entry": ""}]
    generations = [rg_rows[0]["response"] + "\nmore text", "0", "cat sat", "paris."]
    values, scored = score_rows(rg_rows + file_rows, generations)
    assert [s.score for s in scored] == [1.0, 0.0, pytest.approx(0.8), 1.0]  # ROUGE-L F of 2/2 vs 2/3
    assert [s.exact_match for s in scored] == [1.0, 0.0, 1.0, 1.0]  # "the" is an article
    assert values["score/leg_counting"] == 0.5 and values["score/notes"] == pytest.approx(0.9)
    assert values["score"] == pytest.approx((1 + 0 + 0.8 + 1) / 4)
    assert values["exact_match"] == 0.75


def test_loss_and_perplexity_ignore_dropped_rows() -> None:
    values = loss_metrics([2.0, 3.0, 0.0], [1, 3, 0], dropped=1)
    assert values["loss"] == pytest.approx((2.0 + 1.0) / 2)
    assert values["perplexity"] == pytest.approx(math.exp(5.0 / 4))
    assert values["dropped"] == 1.0


class PlantedModel(torch.nn.Module):
    """Uniform logits; ``generate`` checks LEFT padding and returns the planted continuation per row."""

    def __init__(self, tokenizer, answers: dict[str, str], vocab: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer
        self.answers = answers
        self.vocab = vocab
        self.batches: list[torch.Tensor] = []

    def forward(self, input_ids, attention_mask):
        return {"logits": torch.zeros(*input_ids.shape, self.vocab) + 0 * self.weight}

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, pad_token_id, eos_token_id):
        assert not do_sample
        self.batches.append(attention_mask.clone())
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            assert mask[-1] == 1  # left padding: every prompt ends in the last column
            prompt = self.tokenizer.decode(ids[mask.bool()])
            question = prompt.split("### Instruction:\n", 1)[1].split("\n\n### Response:", 1)[0]
            new = self.tokenizer(self.answers[question], add_special_tokens=False)["input_ids"][:max_new_tokens]
            rows.append(ids.tolist() + new + [eos_token_id] * (max_new_tokens - len(new)))
        return torch.tensor(rows)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_task_evaluate_scores_planted_generations_with_left_padding(tmp_path: Path, plain_tokenizer) -> None:
    rows = [{"prompt": f"What is {i} plus {i}?" + " really" * (i % 3), "completion": str(2 * i)} for i in range(20)]
    source = _jsonl(tmp_path / "sums.jsonl", rows)
    task = InstructionTuning(seed=0, max_length=96, settings=InstructConfig(
        source=str(source), test_fraction=0.4, max_new_tokens=4, generate_examples=6, samples=2))
    test = task.build_datasets()["test"].to_list()
    assert len(test) == 8
    # planted: right for the first three scored rows, wrong for the next three
    answers = {}
    for k, row in enumerate(test[:6]):
        answers[json.loads(row["turns"])[0][1]] = row["response"] if k < 3 else "nope"
    model = PlantedModel(plain_tokenizer, answers, vocab=len(plain_tokenizer))
    metrics = task.evaluate(model, plain_tokenizer, test, batch_size=4)
    assert metrics.num_examples == 8
    assert metrics.values["score"] == 0.5 and metrics.values["exact_match"] == 0.5
    assert metrics.values["score/sums"] == 0.5
    assert [m.shape[0] for m in model.batches] == [4, 2]  # batched; 6 generated of 8
    assert any((m[:, 0] == 0).any() for m in model.batches)  # prompts of different lengths were left-padded
    # uniform logits: every response token costs log(V)
    assert metrics.values["loss"] == pytest.approx(math.log(len(plain_tokenizer)), rel=1e-5)
    assert metrics.values["perplexity"] == pytest.approx(len(plain_tokenizer), rel=1e-4)
    assert metrics.values["dropped"] == 0.0 and metrics.values["train_dropped"] == 0.0
    assert [s["generation"] for s in metrics.samples] == [test[0]["response"], test[1]["response"]]
    assert metrics.samples[0]["reference"] == test[0]["response"] and metrics.samples[0]["score"] == 1.0
    assert metrics.samples[0]["source"] == "sums" and "plus" in metrics.samples[0]["prompt"]


def test_collate_labels_only_responses_and_gives_dropped_rows_no_loss(tmp_path: Path, plain_tokenizer) -> None:
    rows = [{"prompt": "Say hi.", "completion": "hi"}, {"prompt": "Say a lot.", "completion": "x" * 80},
            {"prompt": "Say ok.", "completion": "ok"}]
    task = InstructionTuning(seed=0, max_length=48, settings=InstructConfig(source=str(_jsonl(tmp_path / "d.jsonl", rows)),
                                                                             test_fraction=0.34))
    batch = task.collate(plain_tokenizer, [{"turns": json.dumps([["user", r["prompt"]]]), "response": r["completion"],
                                            "source": "d", "entry": "", "label": 0} for r in rows])
    labels = batch["labels"]
    assert labels.shape == batch["input_ids"].shape and labels.shape[1] <= 48
    assert (labels[1] == IGNORE_INDEX).all()  # the 80-byte response cannot fit 48 tokens: no loss at all
    assert plain_tokenizer.decode(labels[0][labels[0] != IGNORE_INDEX]) == "hi</s>"
    assert plain_tokenizer.decode(labels[2][labels[2] != IGNORE_INDEX]) == "ok</s>"
    model = PlantedModel(plain_tokenizer, {}, vocab=len(plain_tokenizer))
    losses = task.example_losses(model, batch)
    assert losses.shape == (3,) and losses[1].item() == 0
    assert losses[0].item() == pytest.approx(math.log(len(plain_tokenizer)), rel=1e-5)


def test_scoring_leaves_the_root_logger_alone() -> None:
    """rouge-score's default-tokenizer log goes through absl, which installs a root handler: every Flower log
    line of a deployed node would then print twice. A fresh process, since pytest owns this one's root logger."""
    code = ("import logging; from client.tasks.instruct.scoring import rouge_l; "
            "assert rouge_l('the cat sat', 'the cat sat down') > 0; assert not logging.getLogger().handlers, "
            "logging.getLogger().handlers")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[4])
    assert result.returncode == 0, result.stderr[-2000:]
