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


def test_lab_commands_use_the_prefix_the_lab_was_made_with(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json

    from lab import cli

    monkeypatch.delenv("EK8S_LAB_PREFIX", raising=False)
    (tmp_path / "lab.json").write_text(json.dumps({"prefix": "ekr", "dir": str(tmp_path), "share": "", "nodes": []}))

    def lab_for(*args: str) -> tuple[str, int | None]:
        with cli.lab.make_context("lab", ["--dir", str(tmp_path), *args, "down"]) as ctx:
            assert cli.lab.callback is not None
            ctx.invoke(cli.lab.callback, **ctx.params)  # the group's own options, not `down`
            try:
                return cli._lab(ctx).prefix, None
            except SystemExit as exit_:
                return "", int(exit_.code or 0)

    # `lab --dir D down` after `lab --dir D --prefix ekr up`: ekr's namespaces, not ek8s-*.
    assert lab_for() == ("ekr", None)
    assert lab_for("--prefix", "ekr") == ("ekr", None)
    assert lab_for("--prefix", "other") == ("", 2), "another prefix is refused, nothing removed"
    monkeypatch.setenv("EK8S_LAB_PREFIX", "other")
    assert lab_for() == ("", 2)
    (tmp_path / "lab.json").unlink()
    assert lab_for() == ("other", None), "no lab yet: the prefix given"
