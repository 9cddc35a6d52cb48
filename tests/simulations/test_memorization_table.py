"""The memorisation table: the four-run plan is valid config, and run folders become table rows."""

from __future__ import annotations

import json

from simulations.memorization_table import gather, plan, write_table
from contract import parse_run_config


def test_plan_is_valid_for_every_cell(tmp_path):
    cells = plan({"model.name": "tiny-llama", "task.max-length": 48}, out=tmp_path)
    assert [name for name, _ in cells] == ["fedit-nodp", "fedit-dp", "fedsb-nodp", "fedsb-dp"]
    for _, values in cells:
        config = parse_run_config(values)
        assert config.task.name == "memorization" and config.fraction_evaluate == 1.0


def test_gather_and_write(tmp_path):
    folder = tmp_path / "fedit-dp"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"strategy.name": "fedit", "privacy.enabled": True}))
    last = {"epsilon": 3.5, "eval_perplexity": 20.0, "eval_swap_perplexity": 22.0, "fed_eval_mem_reduction_x": 4.0}
    for side, em in (("plain", 0.8), ("swap", 0.2)):
        last.update({f"fed_eval_mem_{side}_{m}": em for m in ("exact_match", "match_prefix", "rougeL", "levenshtein", "frac_em")})
    (folder / "rounds.jsonl").write_text(json.dumps({"round": 0}) + "\n" + json.dumps(last) + "\n")
    rows = gather([folder])
    assert [(r["decoding"], r["exact_match"], r["perplexity"]) for r in rows] == [("plain", 0.8, 20.0), ("tokenswap", 0.2, 22.0)]
    assert rows[1]["reduction_x"] == 4.0 and rows[0]["reduction_x"] is None and rows[0]["dp"] is True
    text = write_table(rows, tmp_path / "table").read_text()
    assert "| fedit | True | 3.5 | tokenswap | 0.2 |" in text and (tmp_path / "table" / "memorization.csv").is_file()
