"""Shared test configuration: integration tests are marked by their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts or "chaos" in item.path.parts:
            item.add_marker(pytest.mark.integration)
