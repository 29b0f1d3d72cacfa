"""The lab's process nodes start as a node does: with bytecode (lab/runners.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lab.runners import node_environ


def test_a_process_node_writes_and_reads_bytecode_whatever_the_lab_was_started_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("EK8S_SOMETHING", "kept")
    env = node_environ()
    assert env["EK8S_SOMETHING"] == "kept"
    out = subprocess.run(
        [sys.executable, "-c", "import sys; print(sys.dont_write_bytecode)"], env=env, capture_output=True, text=True
    )
    assert out.stdout.strip() == "False", out
