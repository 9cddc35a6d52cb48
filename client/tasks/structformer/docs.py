"""Documents as trees of (heading, paragraphs, children) (StructFormer, arXiv 2411.16618 §3.1).

The paper parses arXiv LaTeX with TexSoup into nested ``{title, content, sublevels}`` dicts; here a
:class:`StructuredDoc` is the same tree, built from Markdown headings (``#`` … ``######``), from
LaTeX sectioning commands (``\\title``, ``\\section`` … ``\\subsubsection``, ``\\paragraph``) through
``pylatexenc`` (its LaTeX-to-text converter drops the remaining markup; comments, figures, tables and
equations are dropped first), or from JSON (``{"heading", "paragraphs", "children"}`` or the
upstream ``{"title", "content", "sublevels"}`` form).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StructuredDoc:
    """One node: its heading (the document title at the root), body paragraphs, and sub-sections."""

    heading: str = ""
    paragraphs: list[str] = field(default_factory=list)
    children: list[StructuredDoc] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"heading": self.heading, "paragraphs": list(self.paragraphs),
                "children": [c.to_dict() for c in self.children]}

    def depth(self) -> int:
        """Levels below the root (0 for a flat document)."""
        return 1 + max((c.depth() for c in self.children), default=-1)


def from_dict(data: dict[str, Any]) -> StructuredDoc:
    """Our JSON form, or upstream's ``{"title", "content", "sublevels"}`` (content: str or list)."""
    if not isinstance(data, dict):
        raise ValueError(f"a document node must be a JSON object, got {type(data).__name__}")
    heading = data.get("heading", data.get("title", ""))
    paragraphs: object = data.get("paragraphs", data.get("content", []))
    if isinstance(paragraphs, str):
        paragraphs = [paragraphs] if paragraphs.strip() else []
    children: object = data.get("children", data.get("sublevels", []))
    if not isinstance(paragraphs, list) or not isinstance(children, list):
        raise ValueError("a document node's `paragraphs` (or `content`) must be a string or a list, and its "
                         f"`children` (or `sublevels`) a list; got {type(paragraphs).__name__} and "
                         f"{type(children).__name__}")
    return StructuredDoc(str(heading or ""), [str(p) for p in paragraphs], [from_dict(c) for c in children])


def from_json(text: str) -> StructuredDoc:
    """Parse a JSON document (see :func:`from_dict`)."""
    return from_dict(json.loads(text))


def _attach(stack: list[tuple[int, StructuredDoc]], level: int, node: StructuredDoc) -> None:
    while stack[-1][0] >= level:
        stack.pop()
    stack[-1][1].children.append(node)
    stack.append((level, node))


def _paragraphs(lines: list[str]) -> list[str]:
    text = "\n".join(lines)
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def from_markdown(text: str) -> StructuredDoc:
    """``#`` is the title when it is the first heading and the only level-1 one; deeper ``#`` levels nest."""
    root = StructuredDoc()
    stack: list[tuple[int, StructuredDoc]] = [(0, root)]
    body: list[str] = []
    headings = [_MD_HEADING.match(line) for line in text.splitlines()]
    level1 = [m for m in headings if m and len(m.group(1)) == 1]
    title_first = bool(level1) and len(level1) == 1 and next(m for m in headings if m) is level1[0]
    for line, match in zip(text.splitlines(), headings, strict=True):
        if match is None:
            body.append(line)
            continue
        stack[-1][1].paragraphs += _paragraphs(body)
        body = []
        level = len(match.group(1))
        if title_first and level == 1:
            root.heading = match.group(2)
            continue
        _attach(stack, level, StructuredDoc(match.group(2)))
    stack[-1][1].paragraphs += _paragraphs(body)
    return root


_LATEX_LEVELS = {"part": 0, "chapter": 1, "section": 2, "subsection": 3, "subsubsection": 4, "paragraph": 5}
_LATEX_DROP = re.compile(
    r"(?<!\\)%[^\n]*|\\begin\{(figure|table|equation|align|tabular|figure\*|table\*|equation\*|align\*)\}.*?"
    r"\\end\{\1\}|\$\$.*?\$\$|\\\[.*?\\\]",
    re.S,
)


def from_latex(text: str) -> StructuredDoc:
    """Title (``\\title{…}``), abstract and sectioning commands via ``pylatexenc``; markup dropped."""
    from pylatexenc.latex2text import LatexNodes2Text
    from pylatexenc.latexwalker import LatexCharsNode, LatexEnvironmentNode, LatexMacroNode, LatexWalker

    to_text = LatexNodes2Text(math_mode="remove")
    nodes, _, _ = LatexWalker(_LATEX_DROP.sub(" ", text), tolerant_parsing=True).get_latex_nodes()
    document = next((n for n in nodes if isinstance(n, LatexEnvironmentNode) and n.environmentname == "document"), None)
    body_nodes = document.nodelist if document is not None else nodes
    root = StructuredDoc()
    stack: list[tuple[int, StructuredDoc]] = [(-1, root)]
    pending: list[Any] = []

    def flush() -> None:
        if pending:
            stack[-1][1].paragraphs += _paragraphs(to_text.nodelist_to_text(pending).splitlines())
            pending.clear()

    def arg_text(node: LatexMacroNode) -> str:
        args = [a for a in (node.nodeargd.argnlist if node.nodeargd else []) if a is not None]
        return " ".join(to_text.nodelist_to_text([args[-1]]).split()) if args else ""

    for node in [*nodes, *body_nodes] if document is not None else body_nodes:
        if isinstance(node, LatexMacroNode) and node.macroname == "title":
            root.heading = arg_text(node)
    for node in body_nodes:
        if isinstance(node, LatexMacroNode) and node.macroname in _LATEX_LEVELS:
            flush()
            _attach(stack, _LATEX_LEVELS[node.macroname], StructuredDoc(arg_text(node)))
        elif isinstance(node, LatexMacroNode) and node.macroname in ("title", "maketitle", "author", "date"):
            continue
        elif isinstance(node, LatexEnvironmentNode) and node.environmentname == "abstract":
            flush()
            _attach(stack, 1, StructuredDoc("Abstract", _paragraphs(to_text.nodelist_to_text(node.nodelist).splitlines())))
            stack.pop()
        elif isinstance(node, (LatexCharsNode, LatexMacroNode, LatexEnvironmentNode)) or node is not None:
            pending.append(node)
    flush()
    return root
