"""Strategies speak the message contract through its constants: no wire key spelled by hand."""

from __future__ import annotations

import ast
from pathlib import Path

import contract
from contract import base_delta, frozen, plugin_records, records

STRATEGIES = Path(__file__).resolve().parents[2] / "strategies"


def contract_values() -> dict[str, str]:
    """Every upper-case string constant of the contract modules: value -> its name."""
    out: dict[str, str] = {}
    for module in (records, base_delta, frozen, plugin_records):
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str):
                out[value] = f"{module.__name__}.{name}"
    return out


def string_literals(path: Path) -> list[tuple[int, str]]:
    """``(line, value)`` of every string constant that is not a docstring."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value) for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_the_contract_values_are_known() -> None:
    values = contract_values()
    assert values["frozen-hash-ok"] == "contract.frozen.FROZEN_CONFIRMED"
    assert values["base-version"] == "contract.base_delta.BASE_VERSION"
    assert contract.METRIC_REDUCTIONS[base_delta.BASE_VERSION] == "max"


def test_no_strategy_module_spells_a_contract_key() -> None:
    values = contract_values()
    found = [
        f"{path.relative_to(STRATEGIES.parent)}:{line}: {value!r} is {values[value]}"
        for path in sorted(STRATEGIES.rglob("*.py"))
        for line, value in string_literals(path)
        if value in values
    ]
    assert not found, "import the contract's constant instead:\n" + "\n".join(found)
