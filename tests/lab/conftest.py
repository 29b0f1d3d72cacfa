"""Lab tier: whole lab clusters in network namespaces (root, the real daemons)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import require_root_and_tools


@pytest.fixture(autouse=True, scope="session")
def _root_and_tools() -> None:
    require_root_and_tools()
