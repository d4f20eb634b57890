"""Every test under tests/e2e is marked `e2e` (deselect with `-m "not e2e"`) and has a timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

E2E_TIMEOUT_S = 60

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))
