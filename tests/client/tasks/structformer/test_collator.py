"""Document trees, the StructFormer collator's invariants (``docs/tasks.md §7``) and the metric's padding invariance."""

from __future__ import annotations

import json
import random

import pytest
import torch

from adapters.models import build_base_model
from client.tasks.structformer import docs
from client.tasks.structformer.collator import BODY, HEADING, TITLE, CollatorSpec, collate, encode, flatten
from client.tasks.structformer.slots import KEYWORDS, slot_split
from client.tasks.structformer.config import StructFormerConfig
from client.tasks.structformer.task import StructureMLM

HAND = docs.StructuredDoc("w016 w017", ["w040 w041"], [docs.StructuredDoc("w000 w001", ["w050 w051 w052"])])


@pytest.fixture(scope="module")
def tok():
    return build_base_model("tiny-longformer", kind="masked-lm").tokenizer


def _encode(tok, doc, seed=0, **kw):
    return encode(tok, doc, CollatorSpec(**kw), random.Random(seed))


@pytest.mark.parametrize(("policy", "expected"), [
    ("all", [0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0]),
    ("first", [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0]),
    ("marker", [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
])
def test_global_policies_on_a_hand_written_doc(tok, policy, expected) -> None:
    out = _encode(tok, HAND, policy=policy, mask_prob=0.0)
    assert out["global"] == expected
    if policy == "marker":
        assert tok.convert_ids_to_tokens(out["input_ids"])[1] == "<sec>"
    off = _encode(tok, HAND, policy=policy, mask_prob=0.0, structure=False)
    assert off["global"] == [0] * len(expected) and off["input_ids"] == out["input_ids"]


def test_flatten_is_depth_first_with_roles() -> None:
    assert [(w, r) for w, r, _ in flatten(HAND)] == [
        ("w016", TITLE), ("w017", TITLE), ("w040", BODY), ("w041", BODY),
        ("w000", HEADING), ("w001", HEADING), ("w050", BODY), ("w051", BODY), ("w052", BODY)]


def test_about_15_percent_of_words_are_masked_and_labels_are_minus_100_elsewhere(tok) -> None:
    doc = docs.StructuredDoc("w016", [" ".join(f"w{32 + i % 150:03d}" for i in range(2000))])
    out = _encode(tok, doc, seed=3, max_length=4000)
    masked = [l != -100 for l in out["labels"]]
    n = len(out["labels"]) - 2
    p = sum(masked) / n
    assert abs(p - 0.15) < 4 * (0.15 * 0.85 / n) ** 0.5  # binomial tolerance, 4 sigma
    for ident, label in zip(out["input_ids"], out["labels"], strict=True):
        if label == -100:
            continue
        assert ident in (tok.mask_token_id, label) or 0 <= ident < len(tok)
    share_mask = sum(i == tok.mask_token_id for i, m in zip(out["input_ids"], masked, strict=True) if m) / sum(masked)
    assert 0.7 < share_mask < 0.9  # 80% <mask>


def test_never_mask_global_and_the_slot_keyword_is_always_masked(tok) -> None:
    for doc in slot_split(0, "x", 20, body_len=40):
        out = _encode(tok, doc, mask_prob=1.0, never_mask_global=True)
        heading = [l for l, r in zip(out["labels"], out["roles"], strict=True) if r in (TITLE, HEADING)]
        assert all(l == -100 for l in heading)
        slot = [l for l, s in zip(out["labels"], out["slot"], strict=True) if s]
        assert len(slot) == 1 and tok.convert_ids_to_tokens(slot)[0] in KEYWORDS


def test_padding_to_the_window_and_the_structure_switch(tok) -> None:
    task_on = StructureMLM(seed=0, max_length=128, settings=StructFormerConfig().model_copy(update={"body_length": 40}))
    task_off = StructureMLM(seed=0, max_length=128, settings=task_on.settings.model_copy(update={"structure": False}))
    rows = task_on.build_datasets()["train"].to_list()[:4]
    on, off = task_on.collate(tok, rows), task_off.collate(tok, rows)
    assert on["input_ids"].shape[1] % 16 == 0
    assert on["global_attention_mask"].shape == on["input_ids"].shape
    assert (on["global_attention_mask"][on["attention_mask"] == 0] == 0).all()
    assert (on["labels"][on["attention_mask"] == 0] == -100).all()
    assert on["global_attention_mask"].sum() > 0 and off["global_attention_mask"].sum() == 0
    assert torch.equal(on["input_ids"], off["input_ids"]) and torch.equal(on["labels"], off["labels"])


def test_markdown_latex_and_json_make_the_same_tree() -> None:
    md = "# Title words\nIntro text.\n\n## Methods\nWe did it.\n### Setup\nDetails.\n## Results\nGood.\n"
    tex = (r"\title{Title \textbf{words}}\begin{document}Intro text. % a comment" "\n"
           r"\section{Methods} We did it. \begin{figure}x\end{figure}\subsection{Setup} Details. $x^2$"
           r"\section{Results} Good.\end{document}")
    from_md, from_tex = docs.from_markdown(md), docs.from_latex(tex)
    assert from_md.to_dict() == from_tex.to_dict()
    assert from_md.heading == "Title words" and [c.heading for c in from_md.children] == ["Methods", "Results"]
    assert from_md.children[0].children[0].paragraphs == ["Details."] and from_md.depth() == 2
    assert docs.from_json(json.dumps(from_md.to_dict())).to_dict() == from_md.to_dict()
    upstream = {"title": "T", "content": "body", "sublevels": [{"title": "S", "content": ["x"], "sublevels": []}]}
    assert docs.from_dict(upstream).to_dict() == {"heading": "T", "paragraphs": ["body"],
                                                  "children": [{"heading": "S", "paragraphs": ["x"], "children": []}]}


def test_metrics_do_not_depend_on_batch_padding(tok) -> None:
    model = build_base_model("tiny-longformer", kind="masked-lm").model
    short = StructureMLM(seed=0, max_length=512, settings=StructFormerConfig().model_copy(update={"body_length": 40}))
    rows = short.build_datasets()["test"].to_list()[:3]
    long_doc = {"doc": json.dumps(slot_split(1, "y", 1, body_len=200)[0].to_dict()), "source": "long"}
    alone = [short.evaluate(model, tok, [row], batch_size=1).values for row in rows]
    # the same documents, each batched next to a long one (more padding); masks re-drawn identically
    for row, solo in zip(rows, alone, strict=True):
        padded = short.evaluate(model, tok, [row, long_doc], batch_size=2).values
        solo_again = short.evaluate(model, tok, [row, long_doc], batch_size=1).values
        assert padded["heading_attention"] == pytest.approx(solo_again["heading_attention"], abs=1e-5)
        assert padded["masked_accuracy"] == pytest.approx(solo_again["masked_accuracy"])
    assert all(0.0 <= a["heading_attention"] <= 1.0 for a in alone)
