"""Installed extensions: entry points of the group corolla.extensions are imported once, failures named."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from contract import extensions


def _points(*pairs: tuple[str, str]) -> list[importlib.metadata.EntryPoint]:
    return [importlib.metadata.EntryPoint(name, value, extensions.GROUP) for name, value in pairs]


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(extensions, "_LOADED", {})
    return tmp_path


def test_each_entry_point_module_is_imported_once(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (plugin_dir / "corolla_probe_ext.py").write_text("COUNT = globals().get('COUNT', 0) + 1\n")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: _points(("probe", "corolla_probe_ext")))
    try:
        assert extensions.load_installed_extensions() == {"probe": "corolla_probe_ext"}
        assert extensions.load_installed_extensions() == {"probe": "corolla_probe_ext"}
        assert sys.modules["corolla_probe_ext"].COUNT == 1
    finally:
        sys.modules.pop("corolla_probe_ext", None)


def test_a_broken_extension_stops_the_start_naming_it(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (plugin_dir / "corolla_broken_ext.py").write_text("raise RuntimeError('needs a GPU')\n")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: _points(("broken", "corolla_broken_ext")))
    with pytest.raises(extensions.ExtensionError, match=r"'broken' \(corolla_broken_ext\).*RuntimeError: needs a GPU"):
        extensions.load_installed_extensions()
    sys.modules.pop("corolla_broken_ext", None)


def test_the_apps_and_the_cli_load_them() -> None:
    root = Path(__file__).resolve().parents[2]
    for path in ("server/app.py", "client/app.py", "simulations/cli.py"):
        assert "load_installed_extensions()" in (root / path).read_text(), path
