"""The overlay's code comes with its bytecode (manager.overlay.compile_bytecode): a node's agent,
whose root is in RAM, does not compile its modules at every boot (issue 23 point 2), and an
edited source is still compiled again (PEP 552 checked-hash bytecode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from manager import overlay

# What a fresh interpreter compiles from source while it imports the agent (importlib calls
# builtins.compile for a module without valid bytecode; PYTHONDONTWRITEBYTECODE: none written).
COMPILED = """
import builtins, json, sys
compiled = []
real = builtins.compile
def spy(source, filename, *args, **kwargs):
    compiled.append(str(filename))
    return real(source, filename, *args, **kwargs)
builtins.compile = spy
import leader.cli, leader.boot, leader.agent
print(json.dumps([f for f in compiled if f.startswith(sys.argv[1])]))
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("overlays")
    overlay.build(out)
    return out / "ek8s" / "rootfs" / overlay.LIB_DIR / "python"


def compiled_on_import(lib: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(lib), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", COMPILED, str(lib)], capture_output=True, text=True, env=env, check=True, cwd=lib
    ).stdout
    return list(json.loads(out))


def test_every_shipped_module_has_bytecode_checked_against_its_source_hash(lib: Path) -> None:
    modules = sorted(lib.rglob("*.py"))
    assert len(modules) > 50
    for module in modules:
        pyc = module.parent / "__pycache__" / f"{module.stem}.{sys.implementation.cache_tag}.pyc"
        header = pyc.read_bytes()[:16]
        # PEP 552: flags 0b11 (hash-based, check the source), then the source's hash.
        assert int.from_bytes(header[4:8], "little") == 0b11, module
    assert not [p for p in lib.rglob("*.pyc") if p.parent.name != "__pycache__"]


def test_the_agent_imports_its_shipped_modules_without_compiling_them(lib: Path) -> None:
    assert compiled_on_import(lib) == []


def test_an_edited_source_is_compiled_again(lib: Path, tmp_path: Path) -> None:
    copy = tmp_path / "python"
    subprocess.run(["cp", "-a", str(lib), str(copy)], check=True)
    boot = copy / "leader" / "boot.py"
    boot.write_text(boot.read_text() + "\n# edited on the node\n")
    assert compiled_on_import(copy) == [str(boot)]


def test_two_builds_write_the_same_bytecode(lib: Path, tmp_path: Path) -> None:
    overlay.build(tmp_path)
    again = tmp_path / "ek8s" / "rootfs" / overlay.LIB_DIR / "python"
    first = {p.relative_to(lib): p.read_bytes() for p in lib.rglob("*.pyc")}
    second = {p.relative_to(again): p.read_bytes() for p in again.rglob("*.pyc")}
    assert first == second
