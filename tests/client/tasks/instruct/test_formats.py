"""Reading instruction data: each file type, format detection, and every error names file, row, columns."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from client.tasks.instruct.formats import FormatOptions, detect, to_examples
from client.tasks.instruct.sources import load_source, read_file

ALPACA = [{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
          {"instruction": "Translate to French.", "input": "cat", "output": "chat"}]
CHAT = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                      {"role": "assistant", "content": "Hello."}]}]
PC = [{"prompt": "2+2=", "completion": "4"}, {"prompt": "3+3=", "completion": "6"}]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def load(path: Path, **options) -> list:
    return [e for part in load_source(str(path), seed=0, num_examples=2, max_rows=0)
            for e in to_examples(part, FormatOptions(**options))]


def test_alpaca_rows_become_one_user_turn_and_the_output(tmp_path: Path) -> None:
    examples = load(write_jsonl(tmp_path / "data.jsonl", ALPACA))
    assert [e.turns for e in examples] == [(("user", "Add 2 and 3."),), (("user", "Translate to French.\n\ncat"),)]
    assert [e.response for e in examples] == ["5", "chat"]
    assert {e.source for e in examples} == {e.label for e in examples} == {"data"}


def test_chat_rows_keep_the_earlier_turns_and_train_on_the_last(tmp_path: Path) -> None:
    (example,) = load(write_jsonl(tmp_path / "chat.jsonl", CHAT))
    assert example.turns == (("system", "Be brief."), ("user", "Hi?")) and example.response == "Hello."


def test_prompt_completion_with_configured_columns_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "pc.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["q", "a", "topic"])
        writer.writeheader()
        writer.writerows([{"q": "2+2=", "a": "4", "topic": "add"}, {"q": "3*3=", "a": "9", "topic": "mul"}])
    examples = load(path, prompt_column="q", response_column="a", label_column="topic")
    assert [(e.turns, e.response, e.label) for e in examples] == [
        ((("user", "2+2="),), "4", "add"), ((("user", "3*3="),), "9", "mul")]


def test_json_list_and_parquet_read_like_jsonl(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(PC))
    pq.write_table(pa.Table.from_pylist(PC), tmp_path / "b.parquet")
    assert [e.response for e in load(tmp_path / "a.json")] == ["4", "6"]
    assert [e.response for e in load(tmp_path / "b.parquet")] == ["4", "6"]


def test_auto_detection_per_format_and_it_logs_the_choice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    options = FormatOptions()
    assert detect(["instruction", "input", "output"], options) == "alpaca"
    assert detect(["messages"], options) == "chat"
    assert detect(["prompt", "completion"], options) == "prompt-completion"
    assert detect(["question", "answer"], options) is None
    assert detect(["question", "answer"], FormatOptions(prompt_column="question", response_column="answer")) == "prompt-completion"
    part = read_file(write_jsonl(tmp_path / "x.jsonl", ALPACA))
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="flwr"):
            to_examples(part, FormatOptions())
    finally:
        flwr_logger.removeHandler(caplog.handler)
    assert "alpaca format" in caplog.text and "x.jsonl" in caplog.text


def test_a_file_fitting_no_format_names_file_row_and_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "?", "reply": "!"}])
    with pytest.raises(ValueError) as err:
        load(path)
    message = str(err.value)
    assert str(path) in message and "row 1" in message and "['question', 'reply']" in message
    assert "instruct.prompt-column" in message  # the fix


def test_a_later_row_that_breaks_the_detected_format_names_its_row(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mixed.jsonl", [ALPACA[0], {"instruction": "x", "answer": "y"}])
    with pytest.raises(ValueError) as err:
        load(path)
    assert f"{path}, row 2" in str(err.value) and "['answer', 'instruction']" in str(err.value)
    assert "missing output" in str(err.value)


def test_an_explicit_format_the_columns_do_not_fit_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pc.jsonl", PC)
    with pytest.raises(ValueError, match=r"pc.jsonl, row 1: `instruct.format` = 'chat' needs `messages`"):
        load(path, format="chat")


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "r"}]}, "must be the assistant's"),
        ({"messages": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]}, "no user turn"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "r"}]}, "has role 'bot'"),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "r"}]}, "messages[0] must be an object"),
        ({"messages": "hello"}, "must be a list"),
    ],
)
def test_bad_chat_rows_are_errors_naming_the_row(tmp_path: Path, row: dict, fragment: str) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [CHAT[0], row])
    with pytest.raises(ValueError) as err:
        load(path)
    assert f"{path}, row 2" in str(err.value) and fragment in str(err.value)


@pytest.mark.parametrize(
    ("row", "fragment"),
    [({"prompt": "p", "completion": 3}, "`completion` must be text, got int"),
     ({"prompt": "p", "completion": "  "}, "`completion` is empty"),
     (["p", "c"], "expected an object with named columns")],
)
def test_bad_values_are_errors(tmp_path: Path, row: object, fragment: str) -> None:
    path = write_jsonl(tmp_path / "v.jsonl", [PC[0], row])
    with pytest.raises(ValueError, match="row 2") as err:
        load(path)
    assert fragment in str(err.value)


def test_file_level_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{not json\n')
    with pytest.raises(ValueError, match=r"broken.jsonl, row 2: not valid JSON"):
        load(tmp_path / "broken.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="empty.jsonl: no rows"):
        load(tmp_path / "empty.jsonl")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        read_file(tmp_path / "data.txt")
    with pytest.raises(ValueError, match="no such file"):
        load(tmp_path / "missing.jsonl")
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(ValueError, match="holds no .jsonl"):
        load(tmp_path / "empty-folder")
    with pytest.raises(ValueError, match="`instruct.label-column` = 'topic' is not a column"):
        load(write_jsonl(tmp_path / "pc.jsonl", PC), label_column="topic")


def test_a_folder_is_split_by_file_names(tmp_path: Path) -> None:
    folder = tmp_path / "mydata"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", PC)
    write_jsonl(folder / "test.jsonl", PC[:1])
    write_jsonl(folder / "extra-train.jsonl", ALPACA)
    parts = load_source(str(folder), seed=0, num_examples=2, max_rows=0)
    assert sorted((p.name, p.split, len(p.records)) for p in parts) == [
        ("extra", "train", 2), ("mydata", "test", 1), ("mydata", "train", 2)]


def test_an_hf_dataset_id_goes_through_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(source: str):
        calls.append(source)
        return datasets.DatasetDict({"train": datasets.Dataset.from_list(PC), "test": datasets.Dataset.from_list(PC[:1]),
                                     "validation": datasets.Dataset.from_list(PC)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    parts = load_source("someone/alpaca-like", seed=0, num_examples=2, max_rows=1)
    assert calls == ["someone/alpaca-like"]
    assert [(p.name, p.split, len(p.records)) for p in parts] == [("someone/alpaca-like", "train", 1),
                                                                   ("someone/alpaca-like", "test", 1)]

    def failing(source: str):
        raise FileNotFoundError("Couldn't find it on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(ValueError, match=r"not a local file or folder, and datasets.load_dataset could not load it"):
        load_source("someone/missing", seed=0, num_examples=2, max_rows=0)
