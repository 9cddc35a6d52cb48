"""GUIDEQ data: a seeded synthetic set with planted keywords (``docs/tasks.md §6``) and the user's own files.

Synthetic texts have six sentences. The first three (the *partial* text a user gives) mix neutral
filler with **ambiguous** words; every ambiguous word belongs to one pair of neighbouring labels
``{i, i+1 mod K}`` and a text of label ``i`` draws them from one of its two pairs only, so the first
half narrows the label to two candidates and no further (partial-text accuracy ≈ 1/2 by design).
The last three sentences (the hidden half "the user knows"; absent from the training pool's short
texts, see :func:`synthetic_split`) each carry two of the label's five
**signature** words. These planted words are the ground truth the occlusion and guided-question
tests check; gains measured on this set show the pipeline is wired, not that the method works.

User files: JSONL (one object per line) or CSV with a header, a text column and a label column
(names configurable). Labels may be strings or integers; they are mapped to ids in sorted order of
the training file's labels, and a test label unseen in training is an error.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

# Six themes x five signature words; the first K themes are used.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "astronomy": ("telescope", "galaxy", "nebula", "comet", "orbit"),
    "cooking": ("oven", "recipe", "flour", "skillet", "simmer"),
    "finance": ("dividend", "portfolio", "mortgage", "ledger", "bond"),
    "medicine": ("diagnosis", "vaccine", "symptom", "clinic", "dosage"),
    "sailing": ("harbor", "rudder", "anchor", "mast", "regatta"),
    "music": ("melody", "violin", "chorus", "tempo", "orchestra"),
}
# Per neighbouring pair (i, i+1 mod K): three ambiguous words (drawn from one pool, assigned in order).
AMBIGUOUS_POOL: tuple[str, ...] = (
    "pressure", "balance", "scale", "current", "record", "charge", "report", "plan", "measure",
    "signal", "level", "season", "pattern", "series", "light", "course", "range", "board",
)
FILLER: tuple[str, ...] = (
    "the", "a", "it", "was", "we", "they", "then", "again", "today", "really", "some", "about",
    "with", "after", "before", "thing", "people", "time", "week", "day", "mostly", "quite",
)


@dataclass(frozen=True)
class SyntheticSpec:
    """The planted structure of one synthetic set."""

    labels: tuple[str, ...]
    signatures: dict[str, tuple[str, ...]]  # label -> its five signature words
    ambiguous: dict[tuple[int, int], tuple[str, ...]]  # (i, i+1 mod K) -> words shared by the pair


def synthetic_spec(num_labels: int) -> SyntheticSpec:
    """The label names, signature words and ambiguous pairs for ``num_labels`` (4 to 6) labels."""
    if not 4 <= num_labels <= len(SIGNATURES):
        raise ValueError(f"`guideq.num-labels` = {num_labels}: the synthetic set has 4 to {len(SIGNATURES)} labels")
    labels = tuple(list(SIGNATURES)[:num_labels])
    ambiguous = {
        (i, (i + 1) % num_labels): AMBIGUOUS_POOL[3 * i : 3 * i + 3] for i in range(num_labels)
    }
    return SyntheticSpec(labels=labels, signatures={l: SIGNATURES[l] for l in labels}, ambiguous=ambiguous)


def _sentence(rng: random.Random, content: list[str]) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 5))] + content
    rng.shuffle(words)
    return " ".join(words).capitalize() + "."


def synthetic_split(seed: int, split: str, size: int, num_labels: int, *, p_short: float = 0.0) -> dict[str, list]:
    """Columns ``text``/``label`` (balanced labels, shuffled) of one split, a pure function of its args.

    With probability ``p_short`` a text is only its first three sentences (a short report): the
    training pool uses some, so that the classifier also learns the ambiguous words and its top-3 on a
    first half holds the true label; test texts are always complete.
    """
    spec = synthetic_spec(num_labels)
    rng = random.Random(f"corolla-guideq:{seed}:{split}")
    labels = [i % num_labels for i in range(size)]
    rng.shuffle(labels)
    texts = []
    for y in labels:
        pair = rng.choice([(y, (y + 1) % num_labels), ((y - 1) % num_labels, y)])
        amb = spec.ambiguous[pair]
        first = [_sentence(rng, [rng.choice(amb)]) for _ in range(3)]
        sig = list(spec.signatures[spec.labels[y]])
        rng.shuffle(sig)
        second = [_sentence(rng, [sig[2 * j % 5], sig[(2 * j + 1) % 5]]) for j in range(3)]
        texts.append(" ".join(first if rng.random() < p_short else first + second))
    return {"text": texts, "label": labels}


def _read_rows(path: Path, text_column: str, label_column: str) -> list[tuple[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (set `guideq.train-file` / `guideq.test-file`)")
    rows: list[tuple[str, str]] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
                missing = [c for c in (text_column, label_column) if not isinstance(obj, dict) or c not in obj]
                if missing:
                    raise ValueError(
                        f"{path}:{lineno}: missing column(s) {missing}; set `guideq.text-column` / "
                        f"`guideq.label-column` to the names your file uses"
                    )
                rows.append((str(obj[text_column]), str(obj[label_column])))
    elif path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in (text_column, label_column) if c not in header]
            if missing:
                raise ValueError(
                    f"{path}:1: header {header} lacks column(s) {missing}; set `guideq.text-column` / "
                    f"`guideq.label-column` to the names your file uses"
                )
            for lineno, rec in enumerate(reader, 2):
                if rec.get(text_column) is None or rec.get(label_column) is None:
                    raise ValueError(f"{path}:{lineno}: row has fewer fields than the header")
                rows.append((rec[text_column], rec[label_column]))
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl or .csv")
    if not rows:
        raise ValueError(f"{path}: no examples")
    return rows


def load_labelled_files(
    train_file: str | Path, test_file: str | Path, *, text_column: str = "text", label_column: str = "label"
) -> tuple[tuple[str, ...], dict[str, list], dict[str, list]]:
    """``(label_names, train_columns, test_columns)`` from the user's JSONL/CSV files."""
    train = _read_rows(Path(train_file), text_column, label_column)
    test = _read_rows(Path(test_file), text_column, label_column)
    names = tuple(sorted({label for _, label in train}))
    if len(names) < 2:
        raise ValueError(f"{train_file}: needs at least 2 distinct labels in column {label_column!r}")
    index = {name: i for i, name in enumerate(names)}
    unseen = sorted({label for _, label in test} - set(names))
    if unseen:
        raise ValueError(f"{test_file}: label(s) {unseen[:5]} never occur in {train_file}")
    as_cols = lambda rows: {"text": [t for t, _ in rows], "label": [index[l] for _, l in rows]}  # noqa: E731
    return names, as_cols(train), as_cols(test)
