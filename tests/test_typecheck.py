"""The type checker (mypy, pinned in the dev extra, configured in pyproject.toml) passes over every package.

Cold (empty `.mypy_cache/`, gitignored) the check costs about 60 s of CPU (45-50 s on an idle 2-core
machine); warm, with the cache from an earlier run, about 3 s of CPU.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MYPY = PYPROJECT["tool"]["mypy"]
# `# type: ignore[code]  # why` (or the why in a comment line just above): the code and a reason are both required
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )


def test_mypy_finds_no_errors() -> None:
    result = _mypy()
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert result.returncode == 0 and not errors, f"{len(errors)} type errors:\n" + "\n".join(errors) + result.stderr
    assert "Success: no issues found" in result.stdout


def test_every_package_is_checked() -> None:
    # a package added to the wheel but not to [tool.mypy] files would silently escape the checker
    packages = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert set(packages) <= set(MYPY["files"]), set(packages) - set(MYPY["files"])
    assert "docker/deps.py" in MYPY["files"]


def test_no_module_is_exempted_from_checking() -> None:
    overrides = MYPY.get("overrides", [])
    assert "ignore_errors" not in MYPY
    assert not [o["module"] for o in overrides if o.get("ignore_errors")]
    # missing-import exemptions are for third-party modules only, never our own packages
    ours = set(PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    exempt = [m for o in overrides if o.get("ignore_missing_imports") for m in o["module"]]
    assert not [m for m in exempt if m.split(".")[0] in ours], exempt


def bare_ignores(lines: list[str]) -> list[int]:
    """Line numbers (1-based) of ``type: ignore`` comments without an error code or a reason."""
    bare = []
    for number, line in enumerate(lines, start=1):
        match = IGNORE.search(line)
        if match is None:
            continue
        reason = match["rest"].strip().lstrip("#").strip() or (number > 1 and lines[number - 2].strip().startswith("#"))
        if not match["codes"] or not reason:
            bare.append(number)
    return bare


def test_bare_ignores_are_found() -> None:
    lines = [
        "a = f()  # type: ignore",
        "b = f()  # type: ignore[arg-type]",
        "c = f()  # type: ignore  # a reason but no code",
        "# the reason, on the line above",
        "d = f()  # type: ignore[arg-type]",
        "e = f()  # type: ignore[misc]  # the reason, inline",
    ]
    assert bare_ignores(lines) == [1, 2, 3]


def test_every_type_ignore_names_its_code_and_reason() -> None:
    bare: list[str] = []
    for target in MYPY["files"]:
        path = ROOT / target
        for source in [path] if path.is_file() else sorted(path.rglob("*.py")):
            lines = source.read_text().splitlines()
            bare += [f"{source.relative_to(ROOT)}:{n}: {lines[n - 1].strip()}" for n in bare_ignores(lines)]
    assert not bare, "type: ignore without an error code or a reason comment:\n" + "\n".join(bare)


def test_an_error_is_caught(tmp_path: Path) -> None:
    # negative control, with the project's settings: an error inside an unannotated function (caught only
    # with check_untyped_defs) and a pydantic model built with a wrong field type (caught by the plugin)
    program = (
        "from pydantic import BaseModel\n"
        "class Section(BaseModel):\n"
        "    rank: int\n"
        "def untyped():\n"
        "    return 1 + 'a'\n"
        "Section(rank='four')\n"
    )
    (tmp_path / "bad_types.py").write_text(program)
    result = _mypy(str(tmp_path / "bad_types.py"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Unsupported operand types for + ("int" and "str")' in result.stdout
    assert 'Argument "rank" to "Section" has incompatible type "str"; expected "int"' in result.stdout
