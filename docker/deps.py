"""Print Corolla's dependencies from pyproject.toml, one requirement a line, for the image build.

    python deps.py --only torch                  # the torch requirement (installed from the torch index)
    python deps.py --without flwr torch --extras smollm2   # everything else (flwr is in the base image)

Used by docker/Dockerfile so that the image installs exactly what pyproject.toml declares.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement (``flwr[simulation]>=1`` -> ``flwr``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    found = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"deps.py: no extra {extra!r} in {pyproject} (have: {', '.join(optional)})")
        found += optional[extra]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--only", nargs="*", default=None, help="print only these distributions")
    parser.add_argument("--without", nargs="*", default=[], help="leave these distributions out")
    parser.add_argument("--extras", default="", help="comma-separated optional-dependency groups to add")
    args = parser.parse_args()
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    without = {requirement_name(n) for n in args.without}
    only = None if args.only is None else {requirement_name(n) for n in args.only}
    for requirement in requirements(args.pyproject, extras):
        name = requirement_name(requirement)
        if name in without or (only is not None and name not in only):
            continue
        print(requirement)


if __name__ == "__main__":
    main()
