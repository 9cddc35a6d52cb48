"""A scratch section registry per test: what a test registers is gone after it."""

from __future__ import annotations

import pytest

import client.tasks  # noqa: F401  (registered before any scratch copy, so a restore never drops them)
import strategies  # noqa: F401
from contract.config import registry


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations inside the test land in a copy; the process's registry is restored after."""
    monkeypatch.setattr(registry, "_SECTIONS", dict(registry._SECTIONS))
    monkeypatch.setattr(registry, "_ASSEMBLED", None)
