"""The ClientApp's import path stays lean (issue 20): no Opacus without DP, no plotting libraries.

Each check runs in a fresh interpreter, where nothing else has imported the libraries yet. ``rich``
is not on the list: Flower itself imports it (``flwr.common`` -> ``httpx`` -> ``rich.console``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_ON_CLIENTS = ("opacus", "matplotlib", "plotly", "seaborn")


def _modules_after(code: str) -> dict[str, bool]:
    probe = f"import sys, json\n{code}\nprint(json.dumps({{m: m in sys.modules for m in {list(NOT_ON_CLIENTS)!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_client_app_loads_neither_opacus_nor_plotting_libraries() -> None:
    loaded = _modules_after("import client.app")
    assert loaded == {name: False for name in NOT_ON_CLIENTS}


def test_opacus_loads_when_a_dp_accountant_is_made() -> None:
    # the lazy import still happens where DP needs it (the probe above would pass vacuously otherwise)
    loaded = _modules_after("import client.app\nfrom privacy.accounting import make_accountant\nmake_accountant('rdp')")
    assert loaded["opacus"] is True


def test_the_thin_clientapp_imports_no_torch_until_it_works_in_process() -> None:
    # a ClientApp process whose node has a warm worker only forwards (docs/scaling.md §3)
    probe = ("import sys, json\nimport client.entry\n"
             "print(json.dumps({m: m in sys.modules for m in ('torch', 'transformers', 'client.app')}))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"torch": False, "transformers": False, "client.app": False}
