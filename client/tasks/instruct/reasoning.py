"""``reasoning-gym:<name>[,<name>...]``: procedurally generated tasks from the PyPI package
``reasoning-gym`` (the ``reasoning`` extra), each scored by its generator's own ``score_answer``.

Each named generator makes ``instruct.num-examples`` examples from a seed derived from the run's
``seed`` and the generator name (``zlib.crc32``, not Python's salted ``hash``), so every process
builds the same rows. A row keeps its whole reasoning-gym entry (question, answer, metadata) as
JSON in the ``entry`` column; the scorer gets it back at evaluation (JSON turns tuples into lists,
which the scorers read the same).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.tasks.instruct.sources import SourcePart

REASONING_PREFIX = "reasoning-gym:"
FORMAT = "reasoning-gym"  # rows are {"question", "answer", "entry"}
INSTALL_HINT = 'pip install -e ".[reasoning]"'


def _import_reasoning_gym() -> Any:
    try:
        import reasoning_gym  # type: ignore[import-untyped]  # the package ships no type information
    except ImportError as exc:
        raise ImportError(
            f"`instruct.source` = reasoning-gym:... needs the PyPI package reasoning-gym: {INSTALL_HINT} "
            "(or pip install reasoning-gym)"
        ) from exc
    return reasoning_gym


def generator_seed(seed: int, name: str) -> int:
    """The seed generator ``name`` draws from in a run seeded ``seed`` (stable across processes)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


@dataclass(frozen=True)
class ReasoningGym:
    """The generator names of one ``reasoning-gym:`` source."""

    names: tuple[str, ...]

    @classmethod
    def parse(cls, source: str) -> ReasoningGym:
        """``"reasoning-gym:a,b"`` -> ``ReasoningGym(("a", "b"))``.

        Raises
        ------
        ValueError
            No name, a repeated name, or a name reasoning-gym does not know (the message lists some).
        """
        names = tuple(n.strip() for n in source[len(REASONING_PREFIX):].split(",") if n.strip())
        if not names:
            raise ValueError(f"`instruct.source` = {source!r} names no generator; e.g. `reasoning-gym:basic_arithmetic`")
        if len(set(names)) != len(names):
            raise ValueError(f"`instruct.source` = {source!r} names a generator twice")
        known = set(_import_reasoning_gym().factory.DATASETS)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"`instruct.source`: reasoning-gym has no generator {', '.join(map(repr, unknown))}; "
                f"it has {len(known)}, e.g. {', '.join(sorted(known)[:12])}, ..."
            )
        return cls(names)

    def generate(self, *, seed: int, num_examples: int) -> dict[str, list[dict[str, str]]]:
        """Per generator, ``num_examples`` rows ``{"question", "answer", "entry"}`` (module docstring)."""
        rg = _import_reasoning_gym()
        rows: dict[str, list[dict[str, str]]] = {}
        for name in self.names:
            generated = rg.create_dataset(name, size=num_examples, seed=generator_seed(seed, name))
            rows[name] = [{"question": str(entry["question"]), "answer": str(entry["answer"]),
                           "entry": json.dumps(entry, sort_keys=True, default=str)}
                          for entry in (generated[i] for i in range(num_examples))]
        return rows

    def parts(self, *, seed: int, num_examples: int) -> list[SourcePart]:
        """One unsplit source part per generator."""
        from client.tasks.instruct.sources import SourcePart

        return [SourcePart(name=name, origin=f"{REASONING_PREFIX}{name}", split=None,
                           records=list(enumerate(rows, 1)), fixed_format=FORMAT)
                for name, rows in self.generate(seed=seed, num_examples=num_examples).items()]


@lru_cache(maxsize=None)
def scorer(name: str) -> Callable[[str, dict[str, Any]], float]:
    """Generator ``name``'s own ``score_answer(answer, entry) -> [0, 1]``."""
    return _import_reasoning_gym().get_score_answer_fn(name)


def score(name: str, answer: str, entry_json: str) -> float:
    """Score ``answer`` against the stored entry with generator ``name``'s scorer."""
    value = scorer(name)(answer, json.loads(entry_json))
    return float(value) if value is not None else 0.0
