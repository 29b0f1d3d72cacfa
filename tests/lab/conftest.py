"""Lab tier: whole lab clusters in network namespaces (root, the real daemons)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netns
from lab.cluster import Lab
from tests.conftest import keep_logs_if_failed
from tests.integration.conftest import require_root_and_tools


@pytest.fixture(autouse=True, scope="session")
def _root_and_tools() -> None:
    require_root_and_tools()


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    """An empty lab under ``/run/<prefix>-<random>``, the prefix from the module's
    ``LAB_PREFIX`` (namespaces ``<prefix>-*``). Taken down after the test, failed or not (its
    logs kept beside the test's tmp files when it failed); nothing of it may remain."""
    prefix = getattr(request.module, "LAB_PREFIX", "ek8sl")
    the_lab = Lab(Path(f"/run/{prefix}-{uuid.uuid4().hex[:8]}"), prefix)
    try:
        yield the_lab
    finally:
        keep_logs_if_failed(request, the_lab.dir, tmp_path)
        the_lab.down()
        assert netns.existing(prefix) == []
        assert not the_lab.dir.exists()
