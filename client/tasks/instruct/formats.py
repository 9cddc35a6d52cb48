"""Row formats: records of any supported layout become :class:`Example` s (prompt turns + response).

=================== ====================================== ======================================
format              columns                                becomes
=================== ====================================== ======================================
``alpaca``          ``instruction``, ``output``,           user: instruction (+ blank line + input);
                    optional ``input``                     response: output
``chat``            ``messages``: a list of ``{"role",      the turns before the last; response: the
                    "content"}``, the last by ``assistant`` last (only it is trained on)
``prompt-completion`` ``instruct.prompt-column``,          user: prompt; response: completion
                    ``instruct.response-column``
``reasoning-gym``   (that source's own rows)                user: question; response: answer
=================== ====================================== ======================================

``instruct.format = auto`` detects the format of each file from its first row, in the order of the
table, logs which it chose, and then holds every row of that file to it: a row that does not fit is
an error naming the file, the row and its columns (and the fix).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from logging import INFO
from typing import Any

from flwr.common.logger import log

from client.tasks.instruct.reasoning import FORMAT as REASONING_FORMAT
from client.tasks.instruct.sources import SourcePart

FORMATS = ("alpaca", "chat", "prompt-completion")
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    """One training/evaluation example: the prompt ``turns`` (``(role, content)``, ending with a
    user turn), the ``response`` to learn, the ``source`` it came from, the partition ``label`` and,
    for sources with their own scorer, the ``entry`` (JSON) that scorer reads."""

    turns: tuple[tuple[str, str], ...]
    response: str
    source: str
    label: str
    entry: str = ""


@dataclass(frozen=True)
class FormatOptions:
    """The ``instruct.*`` keys that shape conversion."""

    format: str = "auto"
    prompt_column: str = "prompt"
    response_column: str = "completion"
    label_column: str = ""
    system_prompt: str = ""


def detect(columns: Sequence[str], options: FormatOptions) -> str | None:
    """The first format (module table order) whose required columns ``columns`` has, else ``None``."""
    cols = set(columns)
    if "instruction" in cols and "output" in cols:
        return "alpaca"
    if "messages" in cols:
        return "chat"
    if options.prompt_column in cols and options.response_column in cols:
        return "prompt-completion"
    return None


def _needs(fmt: str, options: FormatOptions) -> str:
    return {
        "alpaca": "`instruction` and `output` (and optionally `input`)",
        "chat": "`messages` (a list of {role, content}, the last from the assistant)",
        "prompt-completion": f"`{options.prompt_column}` and `{options.response_column}` "
                             "(set `instruct.prompt-column` / `instruct.response-column`)",
    }[fmt]


def _text(value: Any, where: str, column: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: column `{column}` must be text, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{where}: column `{column}` is empty")
    return value


def _chat(messages: Any, where: str) -> tuple[tuple[tuple[str, str], ...], str]:
    if not isinstance(messages, list) or len(messages) < 2:
        raise ValueError(f"{where}: `messages` must be a list of at least a user and an assistant turn")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"{where}: messages[{i}] must be an object with `role` and `content`")
        role = message["role"]
        if role not in ROLES:
            raise ValueError(f"{where}: messages[{i}] has role {role!r}; roles are {', '.join(ROLES)}")
        turns.append((role, _text(message["content"], where, f"messages[{i}].content", allow_empty=role == "system")))
    if turns[-1][0] != "assistant":
        raise ValueError(f"{where}: the last message must be the assistant's (the response to learn), got {turns[-1][0]!r}")
    if not any(role == "user" for role, _ in turns[:-1]):
        raise ValueError(f"{where}: `messages` has no user turn before the assistant's response")
    if not turns[-1][1].strip():
        raise ValueError(f"{where}: the assistant's response is empty")
    return tuple(turns[:-1]), turns[-1][1]


def convert_row(record: Any, fmt: str, where: str, options: FormatOptions) -> tuple[tuple[tuple[str, str], ...], str]:
    """``(prompt turns, response)`` of one record in format ``fmt``."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object with named columns, got {type(record).__name__}")
    needed = {"alpaca": ("instruction", "output"), "chat": ("messages",),
              "prompt-completion": (options.prompt_column, options.response_column),
              REASONING_FORMAT: ("question", "answer")}[fmt]
    missing = [c for c in needed if c not in record]
    if missing:
        raise ValueError(
            f"{where}: `instruct.format` = {fmt!r} needs {_needs(fmt, options) if fmt in FORMATS else needed}; "
            f"the row has columns {sorted(record)} (missing {', '.join(missing)})"
        )
    if fmt == "alpaca":
        instruction = _text(record["instruction"], where, "instruction")
        extra = record.get("input") or ""
        user = f"{instruction}\n\n{_text(extra, where, 'input', allow_empty=True)}" if str(extra).strip() else instruction
        return (("user", user),), _text(record["output"], where, "output")
    if fmt == "chat":
        return _chat(record["messages"], where)
    prompt_col, response_col = needed
    return (("user", _text(record[prompt_col], where, prompt_col)),), _text(record[response_col], where, response_col)


def part_format(part: SourcePart, options: FormatOptions) -> str:
    """The format of ``part``: its fixed one, ``instruct.format``, or detected from its first row."""
    if part.fixed_format is not None:
        return part.fixed_format
    if options.format != "auto":
        return options.format
    lineno, first = part.records[0]
    columns = sorted(first) if isinstance(first, dict) else []
    fmt = detect(columns, options)
    if fmt is None:
        raise ValueError(
            f"{part.origin}, row {lineno}: columns {columns} fit no instruct format: alpaca needs "
            f"{_needs('alpaca', options)}, chat needs {_needs('chat', options)}, prompt-completion needs "
            f"{_needs('prompt-completion', options)}; or set `instruct.format`"
        )
    log(INFO, "instruct: %s is in %s format (detected from its columns %s)", part.origin, fmt, columns)
    return fmt


def to_examples(part: SourcePart, options: FormatOptions) -> list[Example]:
    """Every record of ``part`` as an :class:`Example` (errors name file, row and columns)."""
    fmt = part_format(part, options)
    system = (("system", options.system_prompt),) if options.system_prompt else ()
    examples = []
    for lineno, record in part.records:
        where = f"{part.origin}, row {lineno}"
        turns, response = convert_row(record, fmt, where, options)
        if system and turns[0][0] != "system":
            turns = system + turns
        label = part.name
        if options.label_column:
            if options.label_column not in record:
                raise ValueError(f"{where}: `instruct.label-column` = {options.label_column!r} is not a column "
                                 f"(columns: {sorted(record)})")
            label = str(record[options.label_column])
        examples.append(Example(turns=turns, response=response, source=part.name, label=label,
                                entry=str(record.get("entry", "")) if fmt == REASONING_FORMAT else ""))
    return examples
